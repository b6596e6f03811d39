"""The benchmarks keep working: their quick modes run against the real server.

No timing is asserted (the machine is shared and noisy): only that the script runs, writes
the results with the expected keys, and prints a non-empty table.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_benchmark(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run benchmarks/SCRIPT with ARGS from the repository root; it must exit 0."""
    proc = subprocess.run(
        [sys.executable, f"benchmarks/{script}", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_quick_benchmark_runs_and_writes_results(tmp_path):
    proc = run_benchmark("bench_server.py", "--quick", "--out", str(tmp_path), timeout=900)

    results = json.loads((tmp_path / "results.json").read_text())
    assert {"meta", "single", "concurrency", "cold_start", "table", "targets"} <= results.keys()
    assert {"machine", "load_before", "load_after", "max_tokens"} <= results["meta"].keys()
    for system in ("in-process", "ours/azure", "ours/openai"):
        for prompt in ("short", "long"):
            s = results["single"][system][prompt]
            assert {"ttft_p50", "ttft_p95", "decode_tps", "total_p50", "errors"} <= s.keys()
            assert s["errors"] == 0 and s["tokens"] > 0, (system, prompt, s)
    assert set(results["concurrency"]["ours/openai"]) == {"1", "2"}
    assert results["cold_start"]["ours"]["first_token_s"] > 0
    assert results["table"] and (tmp_path / "results.csv").read_text().count("\n") > 1
    assert (tmp_path / "concurrency.png").stat().st_size > 0

    # The table is printed, with a row per system; a missing peer is said, not hidden.
    assert "| short | ours/openai |" in proc.stdout
    if "peer/openai" not in results["single"]:
        assert "skipped:" in proc.stdout and results["skipped"]["peer"]


def test_cold_start_benchmark_runs_and_breaks_our_start_down(tmp_path):
    out = tmp_path / "cold.json"
    proc = run_benchmark("bench_cold_start.py", "--quick", "--json", str(out), timeout=300)

    results = json.loads(out.read_text())
    assert results["meta"]["runs"] == 1 and results["meta"]["n_ctx"] == 4096
    (run,) = results["ours"]["runs"]
    assert 0 < run["ready_s"] < run["first_token_s"]
    # The phases come from the server's own start-up line, on this process's clock: in order,
    # and within the spawn -> ready span this process measured.
    phases = run["phases"]
    assert {"python", "serve", "llama_cpp", "model", "imports", "app", "listening"} <= phases.keys()
    ends = [phases[step][1] for step in ("python", "serve", "app", "listening", "ready")]
    assert 0 < ends[0] and ends == sorted(ends) and ends[-1] == run["ready_s"]
    model_thread = [*phases["llama_cpp"], *phases["model"]]
    assert phases["serve"][1] <= model_thread[0] and model_thread == sorted(model_thread)
    assert phases["llama_cpp"][1] <= phases["imports"][0] and model_thread[-1] <= phases["app"][1]
    steps = [row["step"] for row in results["ours"]["phases"]]
    assert steps[0] == "python" and steps[-1] == "first_token"

    assert "| ours |" in proc.stdout and "| state file written (listening) |" in proc.stdout
    if "peer" in results:  # llama-cpp-python[server] installed: the same figures for it
        (peer,) = results["peer"]["runs"]
        assert 0 < peer["ready_s"] < peer["first_token_s"] and "| peer |" in proc.stdout
    else:
        assert results["skipped"]["peer"] and "skipped: peer" in proc.stdout


@pytest.mark.slow
def test_tool_calling_benchmark_runs_and_scores_both_ways(tmp_path):
    proc = run_benchmark("bench_tools.py", "--quick", "--out", str(tmp_path), timeout=600)
    results = json.loads((tmp_path / "tools.json").read_text())
    assert results["prompts"] == 3 and set(results["totals"]) == {"before", "after"}
    assert results["totals"]["after"]["valid"] == 3  # the grammar: every call validates
    assert "| grammar (tools API) | 3/3 |" in proc.stdout


@pytest.mark.slow
def test_retrieval_benchmark_runs_and_the_served_embedder_leads(tmp_path):
    proc = run_benchmark("bench_retrieval.py", "--out", str(tmp_path), timeout=600)
    results = json.loads((tmp_path / "retrieval.json").read_text())
    served, chat = results["all-MiniLM-L6-v2 (mean), served"], results["SmolLM2-135M (last token)"]
    for name in ("toy set (10)", "lesson passages (20)"):
        assert {"right_at_1", "n", "mrr"} <= served[name].keys()
        # Embeddings are deterministic: a drop here means the conversion broke, not bad luck.
        assert served[name]["right_at_1"] > chat[name]["right_at_1"], (name, served, chat)
    assert "| all-MiniLM-L6-v2 (mean), served |" in proc.stdout

"""Cold start of the local model server: process spawn -> ready, and -> the first streamed token.

  ours   `python -m phihelpers serve`, started by phihelpers.launcher.spawn and awaited by
         launcher.wait_until_ready, as `launch()` (and so `connect()`) starts it
  peer   llama-cpp-python's `python -m llama_cpp.server` (pip install -r
         benchmarks/requirements.txt), the same GGUF, n_ctx and threads, its GET /v1/models
         polled as often as the launcher polls ours

Then one streamed chat completion ("Say hello.", temperature 0) on /v1/chat/completions: its
first chunk with content is the first token. The request goes out on a client made before the
spawn, so nothing of this process's own start-up is counted. The runs alternate (ours, peer,
ours, ...) so the machine's load falls on both alike; the GGUF is read once first, so it is in
the page cache for every run.

Ours also says where its start went: the `start-up:` line of its log (server/bootstrap.py)
gives each step in seconds since its Python started, and that moment on the machine's
monotonic clock, which this process reads too.

    .venv/bin/python benchmarks/bench_cold_start.py               # 5 runs of each
    .venv/bin/python benchmarks/bench_cold_start.py -n 11 --json cold.json
    .venv/bin/python benchmarks/bench_cold_start.py --quick       # 1 run of each (the test)
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from phihelpers.launcher import POLL_INTERVAL, spawn, wait_until_ready
from phihelpers.server.engine import default_model_path, default_threads
from phihelpers.state import log_file, url_of

ROOT = Path(__file__).resolve().parent.parent
MESSAGES = [{"role": "user", "content": "Say hello."}]
TIMEOUT = 120.0
# The steps of ours, in the order they happen, as the table names them.
STEPS = {
    "python": "Python up, phihelpers.__main__ runs",
    "serve": "command line read, serve() begins",
    "llama_cpp": "llama-cpp-python imported (model thread)",
    "model": "model loaded (model thread)",
    "imports": "web stack imported (main thread)",
    "app": "app built",
    "listening": "state file written (listening)",
    "ready": "ready: the launcher got /health",
    "first_token": "first token streamed",
}


def clean_env() -> dict:
    """Both servers start hermetically: no PHI_* from the shell (an API key, a state dir),
    and llama.cpp's threads wait passively, as ours sets for itself."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHI_")}
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_token(client: httpx.Client, base_url: str) -> float:
    """Stream one chat completion; time.monotonic() when its first content arrives."""
    body = {"messages": MESSAGES, "max_tokens": 8, "temperature": 0.0, "stream": True}
    with client.stream("POST", base_url + "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = json.loads(line[6:]).get("choices") or [{}]
            if (choices[0].get("delta") or {}).get("content"):
                return time.monotonic()
    raise RuntimeError(f"{base_url}: the stream ended without any content")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def timeline(log_text: str) -> dict | None:
    """The `start-up:` line of a server log: {step: (began or None, ended)} in seconds since
    that process's Python started, and that moment ("started") on the monotonic clock."""
    match = re.search(r"start-up: (.*) \(seconds since .*monotonic ([0-9.]+)\)", log_text)
    if not match:
        return None
    steps = {
        name: (float(began) if began else None, float(ended))
        for name, began, ended in re.findall(r"(\w+) (?:([0-9.]+)-)?([0-9.]+)", match.group(1))
    }
    return {"started": float(match.group(2)), "steps": steps}


def run_ours(workdir: Path, model: Path, n_ctx: int, threads: int) -> dict:
    state_dir = workdir / f"state-{time.monotonic_ns()}"
    args = ["--host", "127.0.0.1", "--port", "0", "--model", str(model), "--n-ctx", str(n_ctx)]
    args += ["--threads", str(threads)]
    with httpx.Client(trust_env=False, timeout=TIMEOUT) as client:
        t0 = time.monotonic()
        proc = spawn(state_dir, args, env=clean_env(), cwd=ROOT)
        try:
            state = wait_until_ready(proc, state_dir, TIMEOUT)
            ready = time.monotonic()
            token = first_token(client, url_of(state))
        finally:
            stop(proc)
    run = {"ready_s": ready - t0, "first_token_s": token - t0}
    found = timeline(log_file(state_dir).read_text(errors="replace"))
    if found:  # every step, in seconds since the spawn
        offset = found["started"] - t0
        phases = {"python": [None, offset]}
        for name, (began, ended) in found["steps"].items():
            phases[name] = [None if began is None else offset + began, offset + ended]
        phases["ready"] = [None, run["ready_s"]]
        phases["first_token"] = [None, run["first_token_s"]]
        run["phases"] = phases
    return run


def peer_missing() -> str | None:
    """Why llama-cpp-python's server cannot run here, or None if it can."""
    for module in ("llama_cpp", "pydantic_settings", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module) is not None:
            continue
        return (
            f"llama-cpp-python[server] is not installed ({module} is missing): "
            "pip install -r benchmarks/requirements.txt"
        )
    return None


def run_peer(workdir: Path, model: Path, n_ctx: int, threads: int) -> dict:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(model)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx)]
    # Ours reads prompts with every core (at most 8) and generates with `threads`.
    command += ["--n_threads", str(threads)]
    command += ["--n_threads_batch", str(max(threads, min(os.cpu_count() or 1, 8)))]
    with httpx.Client(trust_env=False, timeout=TIMEOUT) as client:
        with open(workdir / "peer.log", "ab") as log:
            t0 = time.monotonic()
            proc = subprocess.Popen(
                command,
                env=clean_env(),
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the peer exited (code {proc.returncode}): see {log.name}")
                if time.monotonic() - t0 > TIMEOUT:
                    raise RuntimeError(f"the peer did not answer within {TIMEOUT:.0f} s")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(base_url + "/v1/models", timeout=1.0).status_code == 200:
                        break
                time.sleep(POLL_INTERVAL)
            ready = time.monotonic()
            token = first_token(client, base_url)
        finally:
            stop(proc)
    return {"ready_s": ready - t0, "first_token_s": token - t0}


def summary(runs: list[dict]) -> dict:
    out = {}
    for key in ("ready_s", "first_token_s"):
        values = [r[key] for r in runs]
        out[key] = {"p50": statistics.median(values), "min": min(values), "runs": values}
    return out


def phase_table(runs: list[dict]) -> list[dict]:
    """Each step of ours: the median over the runs of when it began and ended (s since spawn)."""
    rows = []
    with_phases = [r["phases"] for r in runs if "phases" in r]
    for name, label in STEPS.items():
        ends = [p[name][1] for p in with_phases if name in p]
        if not ends:
            continue
        begins = [p[name][0] for p in with_phases if name in p and p[name][0] is not None]
        row = {"step": name, "label": label, "at_s": statistics.median(ends)}
        if begins:
            row["began_s"] = statistics.median(begins)
            row["took_s"] = statistics.median(
                p[name][1] - p[name][0] for p in with_phases if p.get(name, [None])[0] is not None
            )
        rows.append(row)
    previous = 0.0
    for row in rows:  # what each step adds to the critical path
        if "began_s" not in row:
            row["after_previous_s"] = row["at_s"] - previous
            previous = row["at_s"]
    return rows


def render(results: dict) -> str:
    meta = results["meta"]
    lines = [
        f"cold start, {meta['runs']} run(s) of each: {meta['model']}, n_ctx {meta['n_ctx']}, "
        f"{meta['threads']} thread(s), {meta['nproc']} cores, load {meta['load_before']:.2f}",
        "",
        "| system | spawn -> ready p50 s | min s | spawn -> first token p50 s | min s |",
        "|---|---|---|---|---|",
    ]
    for name in ("ours", "peer"):
        if name in results:
            s = results[name]["summary"]
            lines.append(
                f"| {name} | {s['ready_s']['p50']:.3f} | {s['ready_s']['min']:.3f} "
                f"| {s['first_token_s']['p50']:.3f} | {s['first_token_s']['min']:.3f} |"
            )
    for name, reason in results.get("skipped", {}).items():
        lines.append(f"skipped: {name}: {reason}")
    rows = results["ours"].get("phases") or []
    if rows:
        lines += [
            "",
            "ours, step by step (medians, seconds since the spawn):",
            "",
            "| step | began | done | took | after the step before |",
            "|---|---|---|---|---|",
        ]
        for row in rows:
            began = f"{row['began_s']:.3f}" if "began_s" in row else ""
            took = f"{row['took_s']:.3f}" if "took_s" in row else ""
            after = f"{row['after_previous_s']:.3f}" if "after_previous_s" in row else ""
            lines.append(f"| {row['label']} | {began} | {row['at_s']:.3f} | {took} | {after} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--runs", type=int, default=5, help="runs of each server (default 5)")
    ap.add_argument("--quick", action="store_true", help="1 run of each (a smoke run)")
    ap.add_argument("--n-ctx", type=int, default=4096, help="context window (default 4096)")
    ap.add_argument(
        "--threads",
        type=int,
        default=default_threads(),
        help="generating threads for both (default: ours' default, all cores but one)",
    )
    ap.add_argument("--no-peer", action="store_true", help="only ours")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args(argv)
    runs = 1 if args.quick else args.runs

    model = default_model_path()
    with model.open("rb") as f:  # into the page cache: a cold disk is not what is measured
        while f.read(1 << 24):
            pass
    skipped = {}
    peer_reason = "--no-peer" if args.no_peer else peer_missing()
    if peer_reason:
        skipped["peer"] = peer_reason
    results: dict = {
        "meta": {
            "runs": runs,
            "model": model.name,
            "n_ctx": args.n_ctx,
            "threads": args.threads,
            "nproc": os.cpu_count(),
            "load_before": os.getloadavg()[0],
            "poll_interval_s": POLL_INTERVAL,
        },
        "skipped": skipped,
    }
    ours: list[dict] = []
    peer: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        workdir = Path(tmp)
        for i in range(runs):
            ours.append(run_ours(workdir, model, args.n_ctx, args.threads))
            if not peer_reason:
                peer.append(run_peer(workdir, model, args.n_ctx, args.threads))
            print(
                f"run {i + 1}/{runs}: ours {ours[-1]['first_token_s']:.3f} s"
                + (f", peer {peer[-1]['first_token_s']:.3f} s" if peer else ""),
                flush=True,
            )
    results["ours"] = {"summary": summary(ours), "phases": phase_table(ours), "runs": ours}
    if peer:
        results["peer"] = {"summary": summary(peer), "runs": peer}
    results["meta"]["load_after"] = os.getloadavg()[0]
    print(render(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

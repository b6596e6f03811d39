"""Tool-calling quality of the served model: the same prompts without and with the grammar.

    .venv/bin/python benchmarks/bench_tools.py [--model FILE.gguf] [--quick]

"before": the tools described in the system turn exactly as the server does (phihelpers
server/tools.py), the answer left free (no grammar), the first JSON object in it read as the
call; "after": the same request through the API's `tools` (tool_choice "required"), so a
llama.cpp grammar built from the tools' schemas constrains it. For each: how many answers
parse as a call that validates against its function's parameters, name the right function,
and carry the right arguments (strings compared case-insensitively). Temperature 0. Model
quality, not speed: the figures do not depend on the machine's load.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jsonschema
from openai import OpenAI

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phihelpers.launcher import launch  # noqa: E402
from phihelpers.server.schema import ChatRequest  # noqa: E402
from phihelpers.server.settings import ServeSettings  # noqa: E402
from phihelpers.server.tools import plan  # noqa: E402

DATA = json.loads((Path(__file__).parent / "data" / "tool_prompts.json").read_text())
SYSTEM = "You are a helpful assistant."


def first_json_object(text: str) -> dict | None:
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
            return value if isinstance(value, dict) else None
        except ValueError:
            start = text.find("{", start + 1)
    return None


def same(a, b) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().lower() == b.strip().lower()
    if isinstance(a, int | float) and isinstance(b, int | float):
        return float(a) == float(b)
    return a == b


def score(name: str | None, arguments: dict | None, prompt: dict) -> dict:
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in DATA["tools"]}
    valid = False
    if name in schemas and isinstance(arguments, dict):
        try:
            jsonschema.validate(arguments, schemas[name])
            valid = True
        except jsonschema.ValidationError:
            pass
    right_function = name == prompt["function"]
    right_arguments = right_function and all(
        same((arguments or {}).get(k), v) for k, v in prompt["arguments"].items()
    )
    return {"valid": valid, "function": right_function, "arguments": right_arguments}


def before(client: OpenAI, prompt: dict) -> dict:
    system = plan(ChatRequest.model_validate({
        "messages": [{"role": "user", "content": "x"}], "tools": DATA["tools"],
        "tool_choice": "required",
    })).system_text()  # fmt: skip
    r = client.chat.completions.create(
        model="any",
        messages=[{"role": "system", "content": f"{SYSTEM}\n\n{system}"},
                  {"role": "user", "content": prompt["ask"]}],
        temperature=0,
        max_tokens=120,
    )  # fmt: skip
    data = first_json_object(r.choices[0].message.content or "") or {}
    calls = data.get("tool_calls") if isinstance(data.get("tool_calls"), list) else []
    call = calls[0] if calls and isinstance(calls[0], dict) else {}
    return score(call.get("name"), call.get("arguments"), prompt)


def after(client: OpenAI, prompt: dict) -> dict:
    r = client.chat.completions.create(
        model="any",
        messages=[
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": prompt["ask"]},
        ],
        tools=DATA["tools"],
        tool_choice="required",
        temperature=0,
        max_tokens=120,
    )
    calls = r.choices[0].message.tool_calls or []
    if not calls:
        return score(None, None, prompt)
    return score(calls[0].function.name, json.loads(calls[0].function.arguments), prompt)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="GGUF file (default: the shipped model)")
    parser.add_argument("--quick", action="store_true", help="the first 3 prompts only")
    parser.add_argument("--out", type=Path, help="write results.json here")
    args = parser.parse_args()
    prompts = DATA["prompts"][:3] if args.quick else DATA["prompts"]
    with tempfile.TemporaryDirectory() as state_dir:
        server = launch(ServeSettings.build(port=0, state_dir=Path(state_dir), model=args.model))
        try:
            client = OpenAI(base_url=server.endpoint + "/v1", api_key="none")
            model = client.models.list().data[0].id
            began = time.perf_counter()
            rows = {"before": [before(client, p) for p in prompts],
                    "after": [after(client, p) for p in prompts]}  # fmt: skip
            seconds = time.perf_counter() - began
        finally:
            server.stop()
    totals = {
        mode: {k: sum(r[k] for r in results) for k in ("valid", "function", "arguments")}
        for mode, results in rows.items()
    }
    n = len(prompts)
    print(f"Tool calling, {model}, {n} prompts, temperature 0 ({seconds:.0f} s)\n")
    print("| | valid call | right function | right arguments |")
    print("|---|---|---|---|")
    for mode, label in (("before", "no grammar (prompt only)"), ("after", "grammar (tools API)")):
        t = totals[mode]
        print(f"| {label} | {t['valid']}/{n} | {t['function']}/{n} | {t['arguments']}/{n} |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tools.json").write_text(
            json.dumps({"model": model, "prompts": n, "totals": totals, "rows": rows}, indent=2)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Retrieval quality of the embedders this project can serve, side by side, on shipped sets.

    .venv/bin/python benchmarks/bench_retrieval.py [--out DIR]

For each question, the passages are ranked by cosine similarity of their embeddings; the
figure is how often the right passage is first (right@1) and the mean reciprocal rank. Two
sets: a 10-question toy set (benchmarks/data/retrieval_toyset.json, questions that avoid the
documents' words) and the 20 questions over the 36 lesson passages that lesson 14 retrieves
from (phihelpers/data/lesson_*.jsonl). Embedders: the shipped all-MiniLM-L6-v2 (mean pooling,
what the server uses) and the shipped chat model SmolLM2-135M with last-token and mean pooling.
Quality, not speed: the figures do not depend on the machine's load (times are shown only).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from phihelpers.server.embedding_model import shipped_gguf  # noqa: E402
from phihelpers.server.engine import Embedder, default_model_path  # noqa: E402


def toy_set() -> tuple[list[str], list[str], list[int]]:
    data = json.loads((Path(__file__).parent / "data" / "retrieval_toyset.json").read_text())
    return data["documents"], data["questions"], data["answers"]


def lesson_set() -> tuple[list[str], list[str], list[int]]:
    data = ROOT / "phihelpers" / "data"
    passages = [json.loads(line) for line in (data / "lesson_passages.jsonl").open()]
    questions = [json.loads(line) for line in (data / "lesson_questions.jsonl").open()]
    ids = [p["id"] for p in passages]
    texts = [f"{p['title']}. {p['text']}" for p in passages]
    return texts, [q["question"] for q in questions], [ids.index(q["passage"]) for q in questions]


def evaluate(embedder: Embedder, docs, questions, answers) -> dict:
    began = time.perf_counter()
    doc_vectors, _ = embedder.embed(docs)
    q_vectors, _ = embedder.embed(questions)
    seconds = time.perf_counter() - began
    right, reciprocal = 0, 0.0
    for q, answer in zip(q_vectors, answers, strict=True):
        scores = [sum(a * b for a, b in zip(q, d, strict=True)) for d in doc_vectors]
        ranking = sorted(range(len(docs)), key=lambda i: -scores[i])
        right += ranking[0] == answer
        reciprocal += 1 / (ranking.index(answer) + 1)
    n = len(questions)
    return {
        "right_at_1": right,
        "n": n,
        "mrr": round(reciprocal / n, 3),
        "seconds": round(seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write retrieval.json here")
    args = parser.parse_args()
    embedders = {
        "all-MiniLM-L6-v2 (mean), served": lambda: Embedder(shipped_gguf()),
        "SmolLM2-135M (last token)": lambda: Embedder(default_model_path(), "last"),
        "SmolLM2-135M (mean)": lambda: Embedder(default_model_path(), "mean"),
    }
    sets = {"toy set (10)": toy_set(), "lesson passages (20)": lesson_set()}
    results: dict = {}
    for name, make in embedders.items():
        embedder = make()
        results[name] = {s: evaluate(embedder, *data) for s, data in sets.items()}
        del embedder
    print("Retrieval, right passage first (right@1) and mean reciprocal rank\n")
    print("| embedder | " + " | ".join(sets) + " |")
    print("|---|" + "---|" * len(sets))
    for name, by_set in results.items():
        cells = [f"{r['right_at_1']}/{r['n']} (MRR {r['mrr']})" for r in by_set.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "retrieval.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""phihelpers.corpus: the passages and questions lesson 14 embeds, shipped inside the package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from phihelpers import corpus
from phihelpers.corpus import load_passages, load_questions

ROOT = Path(__file__).resolve().parent.parent


def test_a_few_dozen_passages_with_every_field():
    passages = load_passages()
    assert 24 <= len(passages) <= 60
    for p in passages:
        assert set(p) == {"id", "lesson", "title", "text"}
        assert all(isinstance(v, str) and v.strip() for v in p.values())
    assert len({p["id"] for p in passages}) == len(passages)


def test_passages_are_short_enough_to_embed_quickly():
    # The local embedder reads at most 512 tokens an input; a corpus of one-sentence passages
    # keeps lesson 14 fast on 2 cores. A token is at least one character: 400 is far below.
    for p in load_passages():
        assert len(p["text"]) <= 400, p["id"]


def test_each_passage_names_a_lesson_that_exists():
    notebooks = {path.stem for path in (ROOT / "notebooks").glob("*.ipynb")}
    for p in load_passages():
        assert p["lesson"] in notebooks, p  # the notebook's file name, without .ipynb


def test_every_question_names_one_passage_and_differs_from_it():
    passages = {p["id"]: p for p in load_passages()}
    questions = load_questions()
    assert len(questions) >= 15
    assert len({q["id"] for q in questions}) == len(questions)
    for q in questions:
        assert q["passage"] in passages, q
        assert q["question"].strip().endswith("?"), q
        assert q["question"].lower() not in passages[q["passage"]]["text"].lower()


def test_loaders_return_copies():
    first = load_passages()
    first[0]["text"] = "changed"
    first.pop()
    again = load_passages()
    assert again[0]["text"] != "changed"
    assert len(again) == len(first) + 1


def test_a_question_naming_an_unknown_passage_is_refused(monkeypatch):
    real_read = corpus._read

    def fake_read(name, fields):
        rows = real_read(name, fields)
        if name == corpus.QUESTIONS_FILE:
            rows[0]["passage"] = "p999"
        return rows

    monkeypatch.setattr(corpus, "_read", fake_read)
    corpus._corpus.cache_clear()
    try:
        with pytest.raises(ValueError, match="p999"):
            load_questions()
    finally:
        corpus._corpus.cache_clear()


def test_files_are_json_lines_in_the_package_data():
    data = ROOT / "phihelpers" / "data"
    for name in (corpus.PASSAGES_FILE, corpus.QUESTIONS_FILE):
        lines = (data / name).read_text(encoding="utf-8").splitlines()
        assert all(isinstance(json.loads(line), dict) for line in lines if line.strip())
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'phihelpers = ["data/*"]' in pyproject  # shipped with the package


def test_loads_from_any_working_directory(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", "from phihelpers.corpus import load_passages, load_questions; "
         "print(len(load_passages()), len(load_questions()))"],
        cwd=tmp_path, env=dict(os.environ), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    n_passages, n_questions = map(int, done.stdout.split())
    assert n_passages == len(load_passages()) and n_questions == len(load_questions())

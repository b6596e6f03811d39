"""A small corpus the lessons ship: short passages restating what lessons 00-13 teach.

    from phihelpers.corpus import load_passages, load_questions
    passages = load_passages()    # dicts: id ("p01"), lesson ("03_streaming"), title, text
    questions = load_questions()  # dicts: id ("q01"), question, passage (the id that answers it)

Lesson 14 embeds the passages, retrieves them for questions, and measures how often the right
passage comes first: each question is phrased as a learner would ask it, in other words than its
passage, and names the one passage that answers it. Both files live in the package
(`phihelpers/data/lesson_passages.jsonl` and `lesson_questions.jsonl`, one JSON object a line)
and are read through `importlib.resources`, so a lesson finds them from any working directory.
Every passage is one short sentence (well under the 512 tokens an embedding input may
have on the local server), so the whole corpus embeds in seconds on a CPU.
"""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from importlib import resources

PASSAGES_FILE = "lesson_passages.jsonl"
QUESTIONS_FILE = "lesson_questions.jsonl"
PASSAGE_FIELDS = ("id", "lesson", "title", "text")
QUESTION_FIELDS = ("id", "question", "passage")

__all__ = ["load_passages", "load_questions", "PASSAGES_FILE", "QUESTIONS_FILE"]


def _read(name: str, fields: tuple[str, ...]) -> list[dict]:
    text = resources.files("phihelpers").joinpath("data", name).read_text(encoding="utf-8")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        missing = [f for f in fields if not isinstance(row.get(f), str) or not row[f].strip()]
        if missing:
            raise ValueError(f"{name} line {number}: no text in {', '.join(missing)}")
        rows.append({f: row[f] for f in fields})
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{name}: an id is used twice")
    return rows


@lru_cache(maxsize=1)
def _corpus() -> tuple[list[dict], list[dict]]:
    passages = _read(PASSAGES_FILE, PASSAGE_FIELDS)
    questions = _read(QUESTIONS_FILE, QUESTION_FIELDS)
    known = {p["id"] for p in passages}
    for q in questions:
        if q["passage"] not in known:
            raise ValueError(f"{QUESTIONS_FILE}: {q['id']} names {q['passage']}, no such passage")
    return passages, questions


def load_passages() -> list[dict]:
    """The passages, in file order: each a dict with id, lesson, title and text (a fresh copy,
    yours to change)."""
    return copy.deepcopy(_corpus()[0])


def load_questions() -> list[dict]:
    """The question set for measuring retrieval: each a dict with id, question and passage, the
    id of the one passage that answers it (a fresh copy)."""
    return copy.deepcopy(_corpus()[1])

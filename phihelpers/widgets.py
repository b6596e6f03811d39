"""A small chat app in the notebook: ipywidgets on top of the azure-ai-inference client.

Two layers, so the logic can be tested without a browser:

    session = ChatSession(client, model=settings.model)   # history + one streamed call per send
    session.send("Hello", on_token=print)                 # -> the whole answer; history grows
    ChatWidget(session)                                   # the view: boxes, slider, buttons

`ChatSession.send` is lesson 06's streaming loop (history in, pieces out, history grows only
after a complete answer), wrapped in a class so the widget and the tests can reuse it.

The widget's top-level box has the CSS class `phi-chat`; its parts have `phi-chat-message`,
`phi-chat-send`, `phi-chat-reset`, `phi-chat-answer`, `phi-chat-history` and `phi-chat-status`.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable

import ipywidgets as widgets
from azure.ai.inference.models import AssistantMessage, SystemMessage, UserMessage
from azure.core.exceptions import AzureError, HttpResponseError

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


class ChatSession:
    """A conversation: the system prompt, the turns so far, and how to ask for the next one."""

    def __init__(
        self,
        client,
        model: str | None = None,
        system_prompt: str = DEFAULT_SYSTEM_PROMPT,
        temperature: float = 0.7,
        max_tokens: int = 150,
    ):
        self.client = client  # an azure.ai.inference.ChatCompletionsClient
        self.model = model
        self.system_prompt = system_prompt
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.history: list[UserMessage | AssistantMessage] = []
        self.last_finish_reason: str | None = None
        self.last_usage = None  # None when the server sends no usage in a stream
        self.last_model: str | None = None  # the `model` field of the answer's updates

    def messages(self) -> list:
        """What the model sees: the system prompt (if any), then every turn so far."""
        system = [SystemMessage(content=self.system_prompt)] if self.system_prompt.strip() else []
        return system + list(self.history)

    def send(self, text: str, on_token: Callable[[str], None] | None = None) -> str:
        """Ask the model, streaming: `on_token` gets each piece as it arrives.

        Returns the whole answer. The history grows by the user message and the answer only
        when the call succeeds, so a failed call can simply be sent again.
        """
        text = text.strip()
        if not text:
            raise ValueError("Type a message first: an empty message has nothing to answer.")
        question = UserMessage(content=text)
        response = self.client.complete(
            messages=[*self.messages(), question],
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            stream=True,
        )
        pieces: list[str] = []
        self.last_finish_reason = self.last_usage = self.last_model = None
        with response:
            for update in response:
                self.last_model = getattr(update, "model", None) or self.last_model
                if update.usage:  # the last chunk carries the token counts (where sent)
                    self.last_usage = update.usage
                if not update.choices:
                    continue
                choice = update.choices[0]
                if choice.finish_reason:
                    self.last_finish_reason = getattr(
                        choice.finish_reason, "value", choice.finish_reason
                    )
                piece = choice.delta.content if choice.delta else None
                if piece:
                    pieces.append(piece)
                    if on_token:
                        on_token(piece)
        answer = "".join(pieces)
        self.history += [question, AssistantMessage(content=answer)]
        return answer

    def reset(self) -> None:
        """Forget the conversation (the system prompt and settings stay)."""
        self.history.clear()
        self.last_finish_reason = self.last_usage = self.last_model = None


def _as_html(text: str) -> str:
    return f'<div style="white-space: pre-wrap">{html.escape(text)}</div>'


def explain(error: Exception) -> str:
    """One plain sentence for what went wrong, for the status line."""
    if isinstance(error, ValueError):
        return str(error)
    if isinstance(error, HttpResponseError):
        code = getattr(getattr(error, "error", None), "code", None)
        message = getattr(getattr(error, "error", None), "message", None) or error.reason
        return f"The server answered HTTP {error.status_code} ({code or 'error'}): {message}"
    return f"Could not reach the model server ({type(error).__name__}). Is it running?"


class ChatWidget:
    """The view: edits go to the ChatSession, streamed pieces come back into the answer area."""

    def __init__(self, session: ChatSession):
        self.session = session
        self.system_prompt = widgets.Textarea(
            value=session.system_prompt,
            description="System",
            placeholder="How the assistant should behave",
            layout=widgets.Layout(width="100%"),
        )
        self.temperature = widgets.FloatSlider(
            value=session.temperature, min=0.0, max=2.0, step=0.1, description="Temperature"
        )
        self.message = widgets.Text(
            placeholder="Type a message and press Send",
            description="Message",
            layout=widgets.Layout(width="100%"),
        )
        self.send_button = widgets.Button(description="Send", button_style="primary")
        self.reset_button = widgets.Button(description="Reset")
        self.status = widgets.Label(value="Ready.")
        self.answer = widgets.HTML(value="")
        self.history_view = widgets.HTML(value="")
        for widget, css in (
            (self.message, "phi-chat-message"),
            (self.send_button, "phi-chat-send"),
            (self.reset_button, "phi-chat-reset"),
            (self.status, "phi-chat-status"),
            (self.answer, "phi-chat-answer"),
            (self.history_view, "phi-chat-history"),
        ):
            widget.add_class(css)
        self.box = widgets.VBox(
            [
                self.system_prompt,
                self.temperature,
                self.message,
                widgets.HBox([self.send_button, self.reset_button, self.status]),
                widgets.HTML("<b>Answer</b>"),
                self.answer,
                widgets.HTML("<b>History</b>"),
                self.history_view,
            ]
        )
        self.box.add_class("phi-chat")
        self.send_button.on_click(lambda _button: self.send())
        self.reset_button.on_click(lambda _button: self.reset())

    def send(self) -> None:
        """What the Send button does. Errors end up in the status line, never as a traceback."""
        self.session.system_prompt = self.system_prompt.value
        self.session.temperature = self.temperature.value
        text = self.message.value
        pieces: list[str] = []

        def show(piece: str) -> None:
            pieces.append(piece)
            self.answer.value = _as_html("".join(pieces))

        self.send_button.disabled = True
        self.status.value = "Answering..."
        self.answer.value = ""
        started = time.perf_counter()
        try:
            self.session.send(text, on_token=show)
        except (ValueError, AzureError) as exc:
            self.status.value = explain(exc)
        else:
            self.message.value = ""
            usage = self.session.last_usage
            tokens = f"{usage.completion_tokens} tokens, " if usage else ""
            self.status.value = (
                f"Done ({tokens}{time.perf_counter() - started:.1f} s, "
                f"finish_reason={self.session.last_finish_reason})."
            )
            self.history_view.value = self._history_html()
        finally:
            self.send_button.disabled = False

    def reset(self) -> None:
        self.session.reset()
        self.answer.value = ""
        self.history_view.value = ""
        self.status.value = "Conversation cleared."

    def _history_html(self) -> str:
        rows = []
        for message in self.session.history:
            who = "You" if message.role == "user" else "Assistant"
            rows.append(f"<p><b>{who}:</b> {html.escape(message.content)}</p>")
        return "".join(rows)

    def _repr_mimebundle_(self, **kwargs):  # display(chat) shows the box
        return self.box._repr_mimebundle_(**kwargs)

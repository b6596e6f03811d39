"""Continuous batching: every running answer moves on by one token in the same llama.cpp decode.

One thread (the engine thread) runs `Scheduler`. Each step it

1. admits waiting jobs into free slots. A slot is one sequence of the engine's shared KV cache;
   a job takes the free slot whose cached tokens share the longest prefix with its prompt, so a
   growing conversation does not re-read its history (usage.prompt_tokens_details says how
   many tokens came from the cache), and only if the cache has room for its prompt and its
   whole answer (idle slots' caches are dropped, oldest first, to make room);
2. builds one batch: the last sampled token of every answering slot, then prompt tokens of
   slots still reading their prompt (at most PROMPT_CHUNK while others answer, so their
   streams keep flowing; a prompt read alone goes N_BATCH tokens at a time);
3. decodes it with llama_decode, and samples each slot's next token with its own llama.cpp
   sampler chain (its temperature, top_p, penalties, seed and grammar: engine.sampler);
4. turns tokens into text (UTF-8 across token boundaries), holds back what may be the start of
   a stop string, and posts the text to the request (bridge.Run), until an end-of-generation
   token, a stop string, max_tokens or a cancelled request ends the answer.

The chat template, tokenizer, samplers and grammars are llama.cpp's; this module only decides
who is in the next batch. llama-cpp-python's high-level Llama decodes one sequence at a time,
so the scheduler drives its low-level API (llama_batch, llama_decode, llama_sampler_*,
llama_memory_seq_rm) the way llama.cpp's own server does with its slots. Work that needs the
engine thread but is not a chat answer (embeddings, loading a model) runs between two steps
(`call`).
"""

from __future__ import annotations

import codecs
import collections
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from .engine import Engine, GenerationParams, Prompt, Usage

log = logging.getLogger("phihelpers.server")

# Prompt tokens read per step while other answers stream: each of them waits for this much
# prompt work between two of its tokens (~0.1-0.3 s on 2 cores), the new prompt gets read in
# a few steps. Alone, a prompt is read Engine.N_BATCH tokens per decode.
PROMPT_CHUNK = 64

# Idle slots keep their caches (a conversation's next turn reuses it) up to this share of one
# request's context window, in all; the oldest go first.
IDLE_CACHE_SHARE = 0.25


@dataclass
class Job:
    """One chat request as the scheduler sees it.

    `post(kind, value)` is called on the engine thread: ("ready", None) once the prompt is
    accepted and a slot taken, ("piece", text) as text comes, then ("end", None) with
    `finish_reason` and `usage` set, or ("error", exception)."""

    messages: list[dict]
    params: GenerationParams
    post: Callable[[str, object], None]
    cancelled: Callable[[], bool] = lambda: False
    choice: object = None  # a models.ModelChoice; None: the server's default model
    usage: Usage = field(default_factory=Usage)
    finish_reason: str | None = None
    prompt: Prompt | None = None  # its tokens, stops and budget (Engine.prepare)
    prepared_by: int | None = None  # Engine.serial of the engine that made `prompt`
    flush: Callable[..., None] = lambda now=False: None  # send text held back (bridge.Run)


class StopText:
    """One answer's text as its tokens come: bytes decoded as UTF-8 across token boundaries,
    and what may be the start of a stop string held back until it is known not to be one."""

    def __init__(self, stops: list[str]):
        self.stops = [s for s in stops if s]
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.held = ""

    def feed(self, data: bytes) -> tuple[str, bool]:
        """(the text that can be sent now, whether a stop string was reached)."""
        text = self.held + self.decoder.decode(data)
        found = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if found:
            self.held = ""
            return text[: min(found)], True
        keep = max((self._partial(text, s) for s in self.stops), default=0)
        self.held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep], False

    @staticmethod
    def _partial(text: str, stop: str) -> int:
        """Length of the longest end of `text` that begins `stop`."""
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                return k
        return 0

    def flush(self) -> str:
        text, self.held = self.held + self.decoder.decode(b"", final=True), ""
        return text


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Slot:
    """One sequence of the KV cache: the tokens it holds, and the job answering in it."""

    def __init__(self, seq_id: int):
        self.seq_id = seq_id
        self.cached: list[int] = []  # tokens whose keys and values are in the cache
        self.job: Job | None = None
        self.pending: list[int] = []  # prompt tokens still to read
        self.next_token: int | None = None  # sampled, to be decoded in the next step
        self.sampler = None
        self.text: StopText | None = None
        self.last_used = 0.0
        self.order = 0  # admission order: prompts are read first come, first served
        self.row = -1  # this step's batch row whose logits are this slot's, -1: none

    def reserved(self) -> int:
        """Cache cells this slot may fill: a job's whole prompt and answer, else what it holds."""
        if self.job is None:
            return len(self.cached)
        prompt = self.job.prompt
        return len(prompt.tokens) + prompt.max_tokens


class Scheduler:
    """The engine thread: admits jobs into slots and decodes all slots together, step by step.

    `models` is the ModelRegistry (activate(choice) -> Engine); the engine it loads decides how
    many slots there are (Engine.parallel)."""

    def __init__(self, models):
        self.models = models
        self._wake = threading.Condition()
        self._jobs: collections.deque[Job] = collections.deque()
        self._calls: collections.deque[tuple[Callable, Future]] = collections.deque()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._order = itertools.count()
        self.preamble: list[int] = []  # the template's first tokens, cached at load
        self.engine: Engine | None = None
        self.slots: list[Slot] = []
        self.steps = 0

    # -- from any thread --------------------------------------------------------------------
    def submit(self, job: Job) -> None:
        with self._wake:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._jobs.append(job)
            self._start_thread()
            self._wake.notify()

    def call(self, work: Callable[[], object]) -> Future:
        """Run `work()` on the engine thread between two steps; its result in the Future."""
        future: Future = Future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._calls.append((work, future))
            self._start_thread()
            self._wake.notify()
        return future

    def close(self) -> None:
        """Stop after the current step; answers in progress end, waiting ones get an error."""
        with self._wake:
            self._closed = True
            self._wake.notify()

    def busy(self) -> int:
        return sum(1 for s in self.slots if s.job is not None)

    def _start_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="phi-engine", daemon=True)
            self._thread.start()

    # -- the engine thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._jobs or self._calls or self.busy()):
                    self._wake.wait()
                if self._closed:
                    break
                calls = list(self._calls)
                self._calls.clear()
            if calls:
                self._flush(now=True)  # the steps pause for this work: send what is held
            for work, future in calls:
                self._call(work, future)
            try:
                self._admit()
                if self.busy():
                    self._step()
                    self._flush()
            except Exception as exc:  # a bug here must not leave every request hanging
                log.exception("the scheduler failed; the answers in progress end with an error")
                self._fail_all(exc)
        self._drain()

    def _flush(self, now: bool = False) -> None:
        for slot in self.slots:
            if slot.job is not None:
                slot.job.flush(now)

    def _fail_all(self, exc: Exception) -> None:
        for slot in self.slots:
            job = slot.job
            if job is not None:
                self._release(slot)
                job.post("error", exc)
            slot.cached = []
        if self.engine is not None:
            self.engine.forget_all()

    @staticmethod
    def _call(work: Callable, future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(work())
        except BaseException as exc:  # the caller's to answer for
            future.set_exception(exc)

    def _drain(self) -> None:
        """Shutting down: end what answers, refuse what waits."""
        for slot in self.slots:
            if slot.job is not None:
                self._finish(slot, "stop")
        with self._wake:
            jobs, calls = list(self._jobs), list(self._calls)
            self._jobs.clear()
            self._calls.clear()
        for job in jobs:
            job.post("error", RuntimeError("the server is shutting down"))
        for _work, future in calls:
            future.cancel()

    # -- admission --------------------------------------------------------------------------
    def _admit(self) -> None:
        """Move waiting jobs into free slots, first come first served."""
        while True:
            engine = None  # (a model being replaced must not stay referenced from here)
            self._drop_cancelled()
            with self._wake:
                if not self._jobs:
                    return
                job = self._jobs[0]
            engine = self._engine_for(job)
            if engine is None:
                if job in self._jobs:
                    return  # another model answers: wait until its slots are done
                continue  # its model failed to load: it has its answer
            free = [s for s in self.slots if s.job is None]
            if not free:
                return
            if job.prompt is None or job.prepared_by != engine.serial:
                try:
                    job.prompt = engine.prepare(job.messages, job.params, job.cancelled)
                    job.prepared_by = engine.serial
                except Exception as exc:  # PromptError and the like: the request's fault
                    self._pop(job)
                    job.post("error", exc)
                    continue
            slot = self._place(engine, job.prompt, free)
            if slot is None:
                return  # no room in the cache yet: it waits for answers to finish
            self._pop(job)
            self._start(engine, slot, job)

    def _drop_cancelled(self) -> None:
        """Waiting jobs whose clients went away end now, wherever they are in the line (they
        hold a place in the Gate until they do)."""
        with self._wake:
            gone = [job for job in self._jobs if job.cancelled()]
            for job in gone:
                self._jobs.remove(job)
        for job in gone:
            job.post("end", None)

    def _pop(self, job: Job) -> None:
        with self._wake:
            self._jobs.remove(job)

    def _engine_for(self, job: Job) -> Engine | None:
        """The engine for the job's model, loading it if no slot is busy; None: wait."""
        if self.models.loaded(job.choice) is None:  # another model, or none yet, is loaded
            if self.busy():
                return None
            self.engine, self.slots = None, []  # the registry unloads the old model first
        try:
            engine = self.models.activate(job.choice)
        except Exception as exc:  # a model that fails to load: this request's answer
            self._pop(job)
            job.post("error", exc)
            return None
        if engine is not self.engine:
            self.engine = engine
            self.slots = [Slot(i) for i in range(engine.parallel)]
            self.preamble = engine.take_primed()  # the template's preamble, read at load
            if self.preamble:
                self.slots[0].cached = list(self.preamble)
            else:
                engine.forget_all()
        return engine

    def _place(self, engine: Engine, prompt: Prompt, free: list[Slot]) -> Slot | None:
        """The free slot whose cache loses least to this prompt (its own continuation first,
        then an empty slot, then the one unused the longest), if the cache can hold the prompt
        and its whole answer next to the others (idle caches are dropped for it, oldest first,
        but only if that makes room)."""

        def kept(s: Slot) -> tuple:
            shared = common_prefix(s.cached, prompt.tokens)
            return (shared - (len(s.cached) - shared), shared, -s.last_used)

        slot = max(free, key=kept)
        others = [s for s in self.slots if s is not slot]
        excess = sum(s.reserved() for s in others) + len(prompt.tokens) + prompt.max_tokens
        excess -= engine.kv_tokens
        idle = [s for s in others if s.job is None]
        if excess > sum(len(s.cached) - self._kept(s) for s in idle):
            return None  # even without every idle cache it does not fit: keep them, wait
        self._drop_oldest(engine, idle, excess)
        return slot

    def _kept(self, slot: Slot) -> int:
        """What of an idle slot's cache stays when it is dropped: the template's preamble."""
        return len(self.preamble) if slot.cached[: len(self.preamble)] == self.preamble else 0

    def _drop_oldest(self, engine: Engine, idle: list[Slot], excess: int) -> None:
        """Drop idle slots' caches, the one unused the longest first, until `excess` cells
        are free (nothing if it is not positive)."""
        for s in sorted(idle, key=lambda s: s.last_used):
            if excess <= 0:
                return
            keep = self._kept(s)
            if len(s.cached) > keep:
                excess -= len(s.cached) - keep
                engine.forget(s.seq_id, keep)
                s.cached = s.cached[:keep]

    def _trim_idle(self, engine: Engine) -> None:
        """Keep idle caches to IDLE_CACHE_SHARE of one context, dropping the oldest: a
        conversation nobody continues should not hold cells (nor make the cache's cells in
        use, which every answer's attention is computed over, grow without end)."""
        idle = [s for s in self.slots if s.job is None]
        held = sum(len(s.cached) for s in idle)
        self._drop_oldest(engine, idle, held - int(engine.n_ctx * IDLE_CACHE_SHARE))

    def _start(self, engine: Engine, slot: Slot, job: Job) -> None:
        prompt = job.prompt
        reuse = self._reuse(engine, slot, prompt.tokens)
        slot.pending = prompt.tokens[reuse:]
        slot.job, slot.next_token, slot.order = job, None, next(self._order)
        slot.sampler = engine.sampler(job.params, prompt.grammar)
        slot.text = StopText(prompt.stop)
        job.usage = Usage(prompt_tokens=len(prompt.tokens), cached_tokens=reuse)
        job.post("ready", None)

    def _reuse(self, engine: Engine, slot: Slot, tokens: list[int]) -> int:
        """Leave in the slot's sequence the longest start of `tokens` found in the cache, and
        return its length. It may come from another slot (busy or not): in the unified cache
        llama_memory_seq_cp only marks those cells as this sequence's too, so a room's
        requests share the template's preamble (read once at load: Engine._prime) and a
        system prompt they have in common. At least one token is left to read: its logits
        start the answer."""
        limit = len(tokens) - 1
        own = min(common_prefix(slot.cached, tokens), limit)
        donor, shared = slot, own
        for other in self.slots:
            n = min(common_prefix(other.cached, tokens), limit)
            if other is not slot and n > shared:
                donor, shared = other, n
        if donor is slot:
            engine.forget(slot.seq_id, own)
        else:
            engine.forget(slot.seq_id)
            engine.share(donor.seq_id, slot.seq_id, shared)
        slot.cached = tokens[:shared]
        return shared

    # -- one step ---------------------------------------------------------------------------
    def _step(self) -> None:
        engine = self.engine
        for slot in self.slots:
            if slot.job is not None and slot.job.cancelled():
                self._finish(slot, "stop")
        in_batch, answering = self._fill_batch(engine)
        if not in_batch:
            return
        alone = not answering and len(in_batch) == 1  # a prompt read by itself: abortable
        engine.abort_when(in_batch[0].job.cancelled if alone else None)
        try:
            status = engine.decode()
        finally:
            if alone:
                engine.abort_when(None)
        self.steps += 1
        if status != 0:
            self._failed_decode(engine, in_batch, status)
            return
        for slot in in_batch:
            if slot.row >= 0 and slot.job is not None:
                self._sample(engine, slot)

    def _fill_batch(self, engine: Engine) -> tuple[list[Slot], int]:
        """This step's batch: every answering slot's next token, then prompt tokens. Returns
        the slots in it and how many of them are answering."""
        n = 0
        in_batch: list[Slot] = []

        def add(slot: Slot, token: int, logits: bool) -> None:
            nonlocal n
            engine.set_row(n, token, pos=len(slot.cached), seq_id=slot.seq_id, logits=logits)
            slot.cached.append(token)
            n += 1

        for slot in self.slots:
            if slot.job is not None and slot.next_token is not None:
                slot.row = n
                add(slot, slot.next_token, True)
                slot.next_token = None
                in_batch.append(slot)
        answering = len(in_batch)
        budget = engine.N_BATCH - n if not answering else min(PROMPT_CHUNK, engine.N_BATCH - n)
        readers = sorted(
            (s for s in self.slots if s.job is not None and s.pending), key=lambda s: s.order
        )
        for slot in readers:
            if budget <= 0:
                break
            take, slot.pending = slot.pending[:budget], slot.pending[budget:]
            budget -= len(take)
            for i, token in enumerate(take):
                add(slot, token, logits=not slot.pending and i == len(take) - 1)
            slot.row = n - 1 if not slot.pending else -1
            in_batch.append(slot)
        engine.batch.batch.n_tokens = n
        return in_batch, answering

    def _failed_decode(self, engine: Engine, in_batch: list[Slot], status: int) -> None:
        """An aborted read (its client went away) or a decode llama.cpp refused."""
        if status != 2:
            log.error("llama_decode returned %d (%d sequences in the batch)", status, len(in_batch))
        for slot in in_batch:
            job = slot.job
            slot.cached = []
            engine.forget(slot.seq_id)
            if status == 2 and job.cancelled():
                self._finish(slot, "stop")
                continue
            self._release(slot)
            job.post("error", RuntimeError(f"llama_decode returned {status}"))

    def _sample(self, engine: Engine, slot: Slot) -> None:
        job = slot.job
        token = slot.sampler.sample(slot.row)
        if engine.is_end(token):
            self._finish(slot, "stop")
            return
        job.usage.completion_tokens += 1
        text, stopped = slot.text.feed(engine.piece(token))
        if text:
            job.post("piece", text)
        if stopped:
            self._finish(slot, "stop", flush=False)
        elif job.usage.completion_tokens >= job.prompt.max_tokens:
            self._finish(slot, "length")
        else:
            slot.next_token = token

    def _finish(self, slot: Slot, reason: str, flush: bool = True) -> None:
        job = slot.job
        tail = slot.text.flush() if flush and slot.text else ""
        if tail and not job.cancelled():
            job.post("piece", tail)
        job.finish_reason = reason
        self._release(slot)
        self._trim_idle(self.engine)
        job.post("end", None)

    @staticmethod
    def _release(slot: Slot) -> None:
        if slot.sampler is not None:
            slot.sampler.close()
        slot.job, slot.next_token, slot.pending, slot.sampler, slot.text = (
            None,
            None,
            [],
            None,
            None,
        )
        slot.row = -1
        slot.last_used = time.monotonic()

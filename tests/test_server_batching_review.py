"""Review of phihelpers.server.batching (commit 893e72f): cases the scheduler gets wrong.

Like tests/test_server_batching.py: the real Scheduler on the real engine (the shipped SmolLM2
GGUF, in this process), jobs submitted as bridge.Run submits them. The model's words are never
compared with expected text (except one answer with another, under the same seed).
"""

from __future__ import annotations

import gc
import time
import weakref

import pytest
from batching_jobs import STORY, submit, until, wait

from phihelpers.config import DEFAULT_N_CTX
from phihelpers.server.batching import Scheduler
from phihelpers.server.engine import Engine, default_model_path
from phihelpers.server.models import ModelChoice, ModelRegistry
from phihelpers.server.settings import ServeSettings

OTHER = [{"role": "user", "content": "List three colours."}]


# -- prefix reuse -------------------------------------------------------------------------------
def test_a_new_conversation_takes_an_empty_slot_not_another_conversations_cache():
    """Four slots, one conversation cached in slot 0. An unrelated request shares only the
    template's preamble with it (~20 tokens), yet _place picks that slot (longest common prefix)
    over three empty ones, and drops the conversation's cache: its next turn reads everything
    again. The module docstring promises a growing conversation does not re-read its history."""
    engine = Engine(n_ctx=1024, parallel=4, kv_tokens=4096)
    sched = Scheduler(ModelRegistry.for_engine(engine))
    try:
        first, got = submit(sched, temperature=0.0, max_tokens=24)
        wait(got)
        _, got_other = submit(sched, OTHER, temperature=0.0, max_tokens=4)  # another user
        wait(got_other)
        turn2 = STORY + [
            {"role": "assistant", "content": got.text()},
            {"role": "user", "content": "Now make it shorter."},
        ]
        second, got2 = submit(sched, turn2, temperature=0.0, max_tokens=4)
        wait(got2)
    finally:
        sched.close()
    assert second.usage.cached_tokens >= first.usage.prompt_tokens, (
        second.usage,
        first.usage,
    )


# -- room in the cache --------------------------------------------------------------------------
def test_idle_caches_are_kept_while_a_job_that_cannot_fit_anyway_waits():
    """_place drops idle caches one by one and only then finds that the job still does not fit:
    a job waiting for room destroys idle conversations' caches for nothing."""
    engine = Engine(n_ctx=256, parallel=5, kv_tokens=512)
    sched = Scheduler(ModelRegistry.for_engine(engine))
    p_story = len(engine.prompt_tokens(STORY)[0])
    p_other = len(engine.prompt_tokens(OTHER)[0])
    # two long answers and two short conversations fit together; a third long answer does not
    room = (engine.kv_tokens - 2 * (p_other + 8)) // 2
    assert 3 * room > engine.kv_tokens
    try:
        long1 = submit(sched, temperature=0.0, max_tokens=room - p_story)
        short = [submit(sched, OTHER, temperature=0.0, max_tokens=8) for _ in range(2)]
        long2 = submit(sched, temperature=0.0, max_tokens=room - p_story)
        wait(*(g for _, g in short))
        until(lambda: "piece" in long2[1].kinds(), "the second long answer")
        idle = [s for s in sched.slots if s.job is None and s.cached]
        assert len(idle) == 2, "precondition: two idle conversations in the cache"
        before = [len(s.cached) for s in idle]
        waiting, got_waiting = submit(sched, temperature=0.0, max_tokens=room - p_story)
        until(lambda: waiting.prompt is not None, "the third prompt to be read")
        time.sleep(0.2)  # a few steps with the third job waiting for room
        still_waiting = not got_waiting.kinds() and long1[0].finish_reason is None
        after = [len(s.cached) for s in idle]
        wait(got_waiting, long1[1], long2[1])
    finally:
        sched.close()
    assert still_waiting, "precondition: the third job had to wait for room"
    assert after == before, f"idle caches {before} became {after} and the job still waited"


# -- the queue ----------------------------------------------------------------------------------
def test_a_job_cancelled_while_queued_behind_another_ends_at_once():
    """A client that hangs up while its job waits in the scheduler's queue, not at its head: the
    job is only looked at once it reaches the head, so it keeps its Gate slot (and its place)
    until the job ahead of it is admitted, here for the whole of a long answer."""
    small = Engine(n_ctx=256, parallel=3, kv_tokens=256)  # one whole answer fills the cache
    sched = Scheduler(ModelRegistry.for_engine(small))
    flags = {"gone": False}
    try:
        first, got1 = submit(sched, temperature=0.0, max_tokens=150)
        until(lambda: "piece" in got1.kinds(), "the first answer")
        _, got2 = submit(sched, temperature=0.0, max_tokens=150)  # waits for room
        _, got3 = submit(sched, cancelled=lambda: flags["gone"], temperature=0.0, max_tokens=4)
        time.sleep(0.1)
        flags["gone"] = True
        wait(got1, got2, got3)
    finally:
        sched.close()
    assert got2.when("ready") >= got1.when("end"), "precondition: the second waited for room"
    assert got3.kinds() == ["end"]
    assert got3.when("end") < got1.when("end"), "the hung-up job waited for the first to finish"


# -- seeds ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    return Engine(n_ctx=512, parallel=2, kv_tokens=1024)


@pytest.mark.parametrize("seed", [-1, 2**32 - 1])
def test_every_seed_repeats_its_answer(engine, seed):
    """Sampler: `seed & 0xFFFFFFFF` turns -1 and 4294967295 into LLAMA_DEFAULT_SEED, which
    llama.cpp's dist sampler reads as "pick a random seed": the request names a seed and gets
    a different answer each time."""

    def answer() -> str:
        sched = Scheduler(ModelRegistry.for_engine(engine))
        try:
            _, got = submit(sched, temperature=1.0, top_p=1.0, seed=seed, max_tokens=24)
            wait(got)
            return got.text()
        finally:
            sched.close()
            time.sleep(0.05)  # let the closed scheduler's thread leave the engine

    first = answer()
    assert answer() == first and answer() == first


# -- switching models ---------------------------------------------------------------------------
def test_switching_models_frees_the_previous_model_before_loading_the_next(tmp_path):
    """models.py: "switching unloads the previous one first, so two models never need RAM at
    once". The scheduler still holds the old Engine (Scheduler.engine, and Engine's abort
    callback makes it a reference cycle) while ModelRegistry.activate loads the new one."""
    shipped = default_model_path()
    (tmp_path / "Tiny-Copy-Q4_1.gguf").symlink_to(shipped)
    loaded: list[weakref.ref] = []
    alive_at_load: list[bool] = []

    def factory(path, **kwargs):
        gc.collect()
        alive_at_load.append(any(ref() is not None for ref in loaded))
        engine = Engine(path, **kwargs)
        loaded.append(weakref.ref(engine))
        return engine

    default = ModelChoice("SmolLM2-135M-Instruct", shipped, 256, ("smollm2-135m-instruct",))
    reg = ModelRegistry(default, tmp_path, n_ctx=256, n_threads=1, engine_factory=factory)
    reg.parallel = 2
    sched = Scheduler(reg)
    try:
        _, got = submit(sched, OTHER, temperature=0.0, max_tokens=4)
        wait(got)
        _, got2 = submit(sched, OTHER, choice=reg.resolve("tiny-copy"), max_tokens=4)
        wait(got2)
    finally:
        sched.close()
    assert got2.kinds()[-1] == "end" and reg.engine.name == "Tiny-Copy"
    assert alive_at_load == [False, False], "the previous model was still loaded"


# -- capacity at the server's defaults ----------------------------------------------------------
def test_at_the_default_settings_every_slot_can_answer_at_once():
    """serve's defaults on 2 cores: 16 slots, a KV cache of 512 tokens per slot (engine.
    _default_kv_tokens: "a room's short answers all fit at once") and max_tokens 1024 for a
    request that sets none (settings.default_max_tokens). Admission reserves prompt + max_tokens,
    so ~1060 cells per request: 7 of 16 requests answer, 9 wait with free slots and a Gate slot
    each, however short their answers turn out."""
    engine = Engine(n_ctx=DEFAULT_N_CTX, parallel=16)  # the default cache size rule
    default_max_tokens = ServeSettings().default_max_tokens
    sched = Scheduler(ModelRegistry.for_engine(engine))
    flags = {"stop": False}
    try:
        jobs = [
            submit(
                sched,
                cancelled=lambda: flags["stop"],
                temperature=0.0,
                max_tokens=default_max_tokens,
            )
            for _ in range(16)
        ]
        until(lambda: sched.steps >= 5, "a few steps")
        answering = sum("ready" in got.kinds() for _, got in jobs)
        flags["stop"] = True
        wait(*(got for _, got in jobs))
    finally:
        sched.close()
    assert answering == 16, f"{answering} of 16 slots answered; the rest waited for room"

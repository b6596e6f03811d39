"""phihelpers.server.batching: several answers decoded together, each its own.

The real scheduler on the real engine (the shipped SmolLM2 GGUF, in this process): jobs are
submitted as bridge.Run submits them, and their events collected. The model's words are never
compared with expected text; what is checked is each job's own budget, stops, grammar, usage,
seed, cancellation and place in the cache. tests/test_server_parallel.py does the same through
the real clients and a real server.
"""

from __future__ import annotations

import json

import pytest
from batching_jobs import STORY, submit, until, wait

from phihelpers.server.batching import Scheduler, StopText, common_prefix
from phihelpers.server.engine import Engine, PromptError, schema_to_grammar
from phihelpers.server.models import ModelRegistry


@pytest.fixture(scope="module")
def engine():
    return Engine(n_ctx=1024, parallel=4, kv_tokens=4096)


@pytest.fixture
def scheduler(engine):
    sched = Scheduler(ModelRegistry.for_engine(engine))
    yield sched
    sched.close()


# -- text and prefixes ------------------------------------------------------------------------
def test_stop_text_holds_back_a_possible_stop_and_cuts_at_a_real_one():
    text = StopText(["END"])
    assert text.feed(b"Hello E") == ("Hello ", False)  # "E" may begin "END"
    assert text.feed(b"N") == ("", False)
    assert text.feed(b"D and more") == ("", True)  # cut before the stop, the rest dropped
    text = StopText(["END"])
    assert text.feed(b"EN") == ("", False)
    assert text.feed(b"ough") == ("ENough", False)  # not a stop after all: released


def test_stop_text_joins_a_character_split_across_tokens():
    text = StopText([])
    euro = "€".encode()
    assert text.feed(euro[:1]) == ("", False)
    assert text.feed(euro[1:]) == ("€", False)
    text.feed(euro[:2])
    assert text.flush() == "\ufffd"  # a character cut short by the end: one replacement


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([1, 2], [1, 2, 3]) == 2


# -- several answers at once ------------------------------------------------------------------
def test_jobs_decode_together_each_to_its_own_max_tokens(scheduler):
    budgets = [3, 8, 13, 21, 5, 34]  # six jobs, four slots: two wait for a free one
    jobs = [submit(scheduler, temperature=0.0, max_tokens=n) for n in budgets]
    wait(*(got for _, got in jobs))
    total = 0
    for (job, got), budget in zip(jobs, budgets, strict=True):
        assert got.kinds()[0] == "ready" and got.kinds()[-1] == "end"
        assert set(got.kinds()[1:-1]) <= {"piece"}
        assert job.usage.completion_tokens <= budget
        if job.finish_reason == "length":
            assert job.usage.completion_tokens == budget
        else:
            assert job.finish_reason == "stop"
        total += job.usage.completion_tokens
    # decoded together: fewer llama_decode calls than tokens generated
    assert scheduler.steps < total, (scheduler.steps, total)


def test_a_newcomer_joins_at_the_next_token_instead_of_waiting(scheduler):
    long_job, long_got = submit(scheduler, temperature=0.0, max_tokens=200)
    until(lambda: "piece" in long_got.kinds(), "the long answer")
    _, short_got = submit(scheduler, temperature=0.0, max_tokens=4)
    wait(short_got, long_got)
    assert short_got.when("end") < long_got.when("end")
    assert long_job.finish_reason in ("length", "stop")


def test_usage_counts_each_jobs_own_prompt(scheduler, engine):
    short = [{"role": "user", "content": "Hi"}]
    longer = [{"role": "user", "content": "Tell me three facts about the sea, please. " * 5}]
    a, got_a = submit(scheduler, short, max_tokens=4)
    b, got_b = submit(scheduler, longer, max_tokens=4)
    wait(got_a, got_b)
    assert a.usage.prompt_tokens == len(engine.prompt_tokens(short)[0])
    assert b.usage.prompt_tokens == len(engine.prompt_tokens(longer)[0])
    assert a.usage.prompt_tokens < b.usage.prompt_tokens


def test_stop_strings_are_each_jobs_own(scheduler):
    stopped, got_stopped = submit(scheduler, temperature=0.0, max_tokens=60, stop=["e"])
    free, got_free = submit(scheduler, temperature=0.0, max_tokens=60)
    wait(got_stopped, got_free)
    assert "e" not in got_stopped.text()
    assert "e" in got_free.text()  # 60 tokens of English without an "e": not from this model
    assert stopped.finish_reason == "stop"


def test_a_grammar_binds_its_own_job_only(scheduler):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    ask = [{"role": "user", "content": "Give a city and its population as JSON."}]
    bound, got_bound = submit(scheduler, ask, max_tokens=80, grammar=schema_to_grammar(schema))
    free, got_free = submit(scheduler, ask, max_tokens=20)
    wait(got_bound, got_free)
    if bound.finish_reason == "stop":  # the grammar ended it: a whole JSON value
        answer = json.loads(got_bound.text())
        assert isinstance(answer["city"], str) and isinstance(answer["population"], int)
    else:  # cut by max_tokens: still a prefix of the grammar's language
        assert got_bound.text().lstrip().startswith("{")
    assert free.finish_reason in ("length", "stop")


def test_the_same_seed_gives_the_same_answer_in_the_same_conditions(engine):
    """Sampling at temperature 1 with a seed: a fresh cache each time, alone in the batch."""

    def answer(seed: int) -> str:
        sched = Scheduler(ModelRegistry.for_engine(engine))
        try:
            _, got = submit(sched, temperature=1.0, top_p=1.0, seed=seed, max_tokens=24)
            wait(got)
            return got.text()
        finally:
            sched.close()

    first = answer(1234)
    assert answer(1234) == first
    assert {answer(s) for s in (1, 2, 3)} - {first}  # other seeds: not all the same text


# -- cancellation, room, refusals -------------------------------------------------------------
def test_a_cancelled_job_ends_alone_and_frees_its_slot(scheduler):
    flags = {"cancel": False}
    keep1, got1 = submit(scheduler, temperature=0.0, max_tokens=40)
    gone, got_gone = submit(
        scheduler, cancelled=lambda: flags["cancel"], temperature=0.0, max_tokens=400
    )
    keep2, got2 = submit(scheduler, temperature=0.0, max_tokens=40)
    until(lambda: got_gone.kinds().count("piece") >= 2, "two pieces of the answer to cancel")
    flags["cancel"] = True
    wait(got_gone, got1, got2)
    assert gone.usage.completion_tokens < 400
    assert got_gone.when("end") < max(got1.when("end"), got2.when("end"))
    for job in (keep1, keep2):
        assert job.finish_reason == "stop" or job.usage.completion_tokens == 40
    assert scheduler.busy() == 0


def test_a_prompt_that_cannot_fit_is_refused_without_taking_a_slot(scheduler, engine):
    running, got_running = submit(scheduler, temperature=0.0, max_tokens=60)
    until(lambda: "piece" in got_running.kinds(), "the running answer")
    words = [{"role": "user", "content": "lighthouse " * (engine.n_ctx + 10)}]
    _, got_long = submit(scheduler, words, max_tokens=4)
    wait(got_long)
    ((_, kind, error),) = [e for e in got_long.events]
    assert kind == "error" and isinstance(error, PromptError)
    assert error.code == "context_length_exceeded"
    assert scheduler.busy() <= 1  # only the running job holds a slot
    wait(got_running)
    assert running.usage.completion_tokens == 60 or running.finish_reason == "stop"


def test_a_job_waits_for_room_in_the_cache_rather_than_failing_mid_answer():
    small = Engine(n_ctx=256, parallel=2, kv_tokens=256)  # one whole answer fills the cache
    sched = Scheduler(ModelRegistry.for_engine(small))
    try:
        first, got1 = submit(sched, temperature=0.0, max_tokens=150)
        second, got2 = submit(sched, temperature=0.0, max_tokens=150)
        wait(got1, got2)
    finally:
        sched.close()
    assert got2.when("ready") >= got1.when("end")  # it waited for the first to finish...
    assert second.finish_reason in ("length", "stop")  # ...and then answered in full


def test_a_growing_conversation_reuses_its_cached_prefix(scheduler):
    first, got = submit(scheduler, temperature=0.0, max_tokens=24)
    wait(got)
    assert first.usage.cached_tokens == 0 or first.usage.cached_tokens < first.usage.prompt_tokens
    turn2 = STORY + [
        {"role": "assistant", "content": got.text()},
        {"role": "user", "content": "Now make it shorter."},
    ]
    second, got2 = submit(scheduler, turn2, temperature=0.0, max_tokens=8)
    wait(got2)
    # the whole first prompt came from the cache (its answer too, up to where the template's
    # end-of-turn markup differs from what was generated)
    assert second.usage.cached_tokens >= first.usage.prompt_tokens
    assert second.usage.cached_tokens < second.usage.prompt_tokens


def test_jobs_wait_in_order_when_every_slot_is_taken(scheduler):
    jobs = [submit(scheduler, temperature=0.0, max_tokens=6) for _ in range(9)]
    wait(*(got for _, got in jobs))
    ready = [got.when("ready") for _, got in jobs]
    assert ready[4:] == sorted(ready[4:])  # those past the four slots came in order
    assert all(job.finish_reason in ("length", "stop") for job, _ in jobs)


def test_a_closed_scheduler_refuses_new_work(engine):
    sched = Scheduler(ModelRegistry.for_engine(engine))
    sched.close()
    with pytest.raises(RuntimeError):
        submit(sched)


def test_a_system_prompt_read_once_serves_every_slot(scheduler):
    """A second request with the same system prompt, while the first still answers in another
    slot, finds that prompt in the cache (its cells shared, not read again)."""
    system = {"role": "system", "content": "You are a lighthouse keeper. " * 20}
    first, got1 = submit(scheduler, [system, STORY[0]], temperature=0.0, max_tokens=80)
    until(lambda: "piece" in got1.kinds(), "the first answer")
    other = {"role": "user", "content": "Describe the sea at night."}
    second, got2 = submit(scheduler, [system, other], temperature=0.0, max_tokens=8)
    wait(got1, got2)
    assert second.usage.cached_tokens > 100  # the ~120-token system prompt
    assert second.usage.cached_tokens < second.usage.prompt_tokens
    assert got2.kinds()[-1] == "end" and second.finish_reason in ("length", "stop")


def test_the_template_preamble_is_read_at_load(engine):
    """Every chat that opens with a user message starts with the same template tokens
    (SmolLM2's default system prompt): a fresh engine has them cached already."""
    fresh = Engine(n_ctx=512, parallel=2, kv_tokens=1024)
    sched = Scheduler(ModelRegistry.for_engine(fresh))
    try:
        job, got = submit(sched, max_tokens=2)
        wait(got)
    finally:
        sched.close()
    assert job.usage.cached_tokens > 0

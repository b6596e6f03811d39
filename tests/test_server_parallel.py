"""Several streams at once through the real clients: a room pressing Run together.

A server of this module's own, `serve --parallel 4 --n-ctx 512`: four answers decoded
together (phihelpers/server/batching.py), more waiting in the queue. Every assertion is on the
protocol, the usage and each request's own parameters, never on the model's words (greedy
output can differ with the batch size).
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from azure.ai.inference import ChatCompletionsClient
from azure.ai.inference.models import UserMessage
from azure.core.credentials import AzureKeyCredential
from openai import OpenAI
from server_process import start_server

STORY = "Write a long story about a lighthouse keeper who finds a map."
SLOTS = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("parallel") / "state", "--parallel", str(SLOTS), "--n-ctx", "512"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(server):
    with OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0) as c:
        yield c


def health(server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=10).json()


def settle(server, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = health(server)
        if h["generating"] == 0 and h["queued"] == 0:
            return h
        time.sleep(0.05)
    raise AssertionError(f"the server is still busy: {h}")


def stream(client, content: str = STORY, **params) -> dict:
    """One streamed answer, checked chunk by chunk: what came, in what order."""
    params.setdefault("temperature", 0.0)
    chunks = list(
        client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": content}],
            stream=True,
            stream_options={"include_usage": True},
            **params,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    *body, finish, usage = chunks
    assert usage.choices == [] and usage.usage is not None
    assert finish.choices[0].finish_reason in ("stop", "length")
    assert len({c.id for c in chunks}) == 1  # one answer, one id
    text = "".join(c.choices[0].delta.content or "" for c in body)
    return {"text": text, "finish": finish.choices[0].finish_reason, "usage": usage.usage}


def test_many_streams_at_once_are_each_complete_with_their_own_usage(server, client):
    budgets = [5, 9, 14, 20, 7, 11, 16, 3]  # twice the slots: four wait their turn
    with ThreadPoolExecutor(len(budgets)) as pool:
        results = list(pool.map(lambda n: stream(client, max_tokens=n), budgets))
    alone = stream(client, max_tokens=1)["usage"].prompt_tokens
    for result, budget in zip(results, budgets, strict=True):
        usage = result["usage"]
        assert usage.prompt_tokens == alone  # the same prompt, counted the same
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
        if result["finish"] == "length":
            assert usage.completion_tokens == budget
        else:
            assert usage.completion_tokens < budget
    settle(server)


def test_the_azure_client_streams_beside_the_openai_client(server, client):
    azure = ChatCompletionsClient(
        endpoint=server.url, credential=AzureKeyCredential("unused"), retry_total=0
    )

    def azure_stream() -> tuple[str, int]:
        response = azure.complete(
            messages=[UserMessage(content=STORY)], max_tokens=12, temperature=0.0, stream=True
        )
        text, tokens = "", None
        for update in response:
            if update.choices and update.choices[0].delta.content:
                text += update.choices[0].delta.content
            if update.usage:
                tokens = update.usage.completion_tokens
        return text, tokens

    try:
        with ThreadPoolExecutor(4) as pool:
            azures = [pool.submit(azure_stream) for _ in range(2)]
            openais = [pool.submit(stream, client, max_tokens=12) for _ in range(2)]
            for f in azures:
                text, tokens = f.result()
                assert text and 0 < tokens <= 12
            for f in openais:
                assert 0 < f.result()["usage"].completion_tokens <= 12
    finally:
        azure.close()


def test_stop_and_max_tokens_are_each_requests_own(server, client):
    with ThreadPoolExecutor(3) as pool:
        stopped = pool.submit(stream, client, max_tokens=60, stop=["e"])
        free = pool.submit(stream, client, max_tokens=60)
        short = pool.submit(stream, client, max_tokens=2)
        stopped, free, short = stopped.result(), free.result(), short.result()
    assert "e" not in stopped["text"] and stopped["finish"] == "stop"
    assert "e" in free["text"]  # 60 tokens of English without an "e": not from this model
    assert short["usage"].completion_tokens <= 2


def test_the_same_seed_repeats_its_answer(server, client):
    """Temperature 1 with a seed, three times in a row: the first fills the cache with the
    prompt, so the second and third run in the same conditions and must agree."""
    ask = dict(max_tokens=20, temperature=1.0, top_p=1.0, seed=4242)
    stream(client, **ask)
    assert stream(client, **ask)["text"] == stream(client, **ask)["text"]


def test_a_grammar_binds_only_its_own_request(server, client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}}
    ask = "Give a city and its population."

    def structured():
        r = client.chat.completions.create(
            model="local",
            messages=[{"role": "user", "content": ask}],
            response_format=fmt,
            max_tokens=120,
            temperature=0.0,
        )
        return r.choices[0]

    with ThreadPoolExecutor(4) as pool:
        bound = [pool.submit(structured) for _ in range(2)]
        free = [pool.submit(stream, client, ask, max_tokens=30) for _ in range(2)]
        for f in bound:
            choice = f.result()
            if choice.finish_reason == "stop":
                answer = json.loads(choice.message.content)
                assert set(answer) == {"city", "population"}
                assert isinstance(answer["population"], int)
        for f in free:
            assert f.result()["finish"] in ("stop", "length")


def test_a_client_that_hangs_up_frees_its_slot_and_leaves_the_others_alone(server, client):
    results: dict[str, dict] = {}

    def keep(name: str) -> None:
        results[name] = stream(client, max_tokens=60)

    others = [threading.Thread(target=keep, args=(f"k{i}",)) for i in range(2)]
    for t in others:
        t.start()
    with httpx.Client(timeout=60) as raw:
        body = {
            "model": "local",
            "messages": [{"role": "user", "content": STORY}],
            "max_tokens": 400,
            "stream": True,
        }
        with raw.stream("POST", f"{server.url}/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            for _ in range(6):  # a few chunks in: it has a slot and is answering
                next(lines)
        # the connection is closed here, mid-answer
    for t in others:
        t.join(120)
    for name in ("k0", "k1"):
        usage = results[name]["usage"]
        assert results[name]["finish"] == "stop" or usage.completion_tokens == 60
    settle(server)  # every slot is free again: the hung-up one did not hold its slot
    assert "the client went away" in server.log()


def test_a_request_that_cannot_fit_is_refused_while_others_stream(server, client):
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(stream, client, max_tokens=40)
        time.sleep(0.3)
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "lighthouse " * 600}]},
            timeout=60,
        )
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "context_length_exceeded"
        result = running.result()
    assert result["finish"] == "stop" or result["usage"].completion_tokens == 40


def test_health_counts_answers_in_slots_and_the_queue_beyond_them(server, client):
    seen = {"generating": 0, "queued": 0}
    with ThreadPoolExecutor(SLOTS + 2) as pool:
        futures = [pool.submit(stream, client, max_tokens=40) for _ in range(SLOTS + 2)]
        while not all(f.done() for f in futures):
            h = health(server)
            seen = {k: max(seen[k], h[k]) for k in seen}
            time.sleep(0.02)
        for f in futures:
            f.result()
    assert seen["generating"] == SLOTS  # never more than the slots at once...
    assert seen["queued"] >= 1  # ...the rest waited in the queue
    assert health(server)["slots"] == SLOTS


def test_a_prompt_that_cannot_fit_is_refused_without_waiting_for_a_slot(server, client):
    """Every slot busy: a prompt longer than the context is refused at once (it is read before
    it queues), not after the answers ahead of it."""
    with ThreadPoolExecutor(SLOTS) as pool:
        busy = [pool.submit(stream, client, max_tokens=80) for _ in range(SLOTS)]
        deadline = time.monotonic() + 30
        while health(server)["generating"] < SLOTS:
            assert time.monotonic() < deadline, "the slots never filled"
            time.sleep(0.02)
        r = httpx.post(
            f"{server.url}/v1/chat/completions",
            json={"messages": [{"role": "user", "content": "lighthouse " * 600}]},
            timeout=60,
        )
        refused_while_busy = not all(f.done() for f in busy)
        for f in busy:
            f.result()
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
    assert refused_while_busy, "the refusal waited for the running answers to finish"

"""A room full of learners on one server: a bounded queue, 429 + Retry-After, nobody lost.

A server of the test's own with two slots and a small queue (--parallel 2 --max-queue 2: two
answering together, two waiting) gets
16 requests at once, from 16 threads with the azure-ai-inference client (which retries a 429 that
carries Retry-After) and, separately, with raw httpx (which does not retry). Every request must
end answered (200) or told to retry (429 with Retry-After and retry-after-ms): no other status,
no connection error, nothing lost. Then the optional per-key rate limit (requests per minute,
concurrent requests), which reproduces the old GitHub Models free tier.
"""

from __future__ import annotations

import threading
from collections import Counter

import httpx
import pytest
from server_process import start_server

N = 16
ASK = [{"role": "user", "content": "Name a colour."}]
MAX_TOKENS = 4


@pytest.fixture(scope="module")
def busy_server(tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("overload") / "state", "--parallel", "2", "--max-queue", "2"
    )
    yield server
    assert server.stop() == 0


def all_at_once(work, n: int = N) -> list:
    """Run work(i) in n threads released together; return what each returned or raised."""
    results: list = [None] * n
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except BaseException as exc:  # recorded, and the test says which
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return results


def check_throttle(status: int, headers) -> None:
    """Every 429 says when to come back, in the headers both SDKs read."""
    assert status == 429
    assert int(headers["retry-after"]) >= 1
    assert int(headers["retry-after-ms"]) > 0


def test_16_azure_clients_at_once_are_all_answered_or_told_to_retry(busy_server):
    from azure.ai.inference import ChatCompletionsClient
    from azure.core.credentials import AzureKeyCredential
    from azure.core.exceptions import HttpResponseError

    attempts: list[list[int]] = [[] for _ in range(N)]

    def learner(i: int):
        def seen(pipeline_response) -> None:  # called for every attempt, retries included
            r = pipeline_response.http_response
            attempts[i].append(r.status_code)
            if r.status_code == 429:
                check_throttle(r.status_code, r.headers)

        client = ChatCompletionsClient(
            endpoint=busy_server.url, credential=AzureKeyCredential("k"), raw_response_hook=seen
        )
        with client:
            try:
                response = client.complete(messages=ASK, max_tokens=MAX_TOKENS)
            except HttpResponseError as exc:  # the client's retries ran out: told to retry
                return exc.status_code
        assert response.choices[0].finish_reason in ("stop", "length")
        return 200

    results = all_at_once(learner)
    final = Counter(r if isinstance(r, int) else type(r).__name__ for r in results)
    throttled = sum(a.count(429) for a in attempts)
    retried_ok = sum(1 for a in attempts if 429 in a and a[-1] == 200)
    print(
        f"\nazure x{N}: final {dict(final)}; 429 answers seen by the clients' retry policy: "
        f"{throttled}; requests answered after retrying: {retried_ok}"
    )
    assert set(final) <= {200, 429}, f"lost or failed requests: {results}"
    assert final[200] + final[429] == N
    assert throttled >= 1, "16 at once must overflow two slots and a queue of 2"
    assert retried_ok >= 1, "the client's own retries (after Retry-After) got through"
    assert all(set(a) <= {200, 429} for a in attempts), attempts


def test_16_raw_httpx_requests_at_once_get_200_or_429(busy_server):
    def learner(i: int):
        body = {"messages": ASK, "max_tokens": MAX_TOKENS, "stream": i % 2 == 1}
        r = httpx.post(busy_server.url + "/chat/completions", json=body, timeout=300)
        if r.status_code == 429:
            check_throttle(r.status_code, r.headers)
            assert r.headers["content-type"].startswith("application/json")  # even for streams
            assert r.json()["error"]["code"] == "too_many_requests"
            assert "queue" in r.json()["error"]["message"]
        elif r.status_code == 200:
            kind = "text/event-stream" if body["stream"] else "application/json"
            assert r.headers["content-type"].startswith(kind)
            assert r.content.endswith(b"data: [DONE]\n\n") if body["stream"] else r.json()
        return r.status_code

    results = all_at_once(learner)
    counts = Counter(r if isinstance(r, int) else type(r).__name__ for r in results)
    print(f"\nhttpx x{N} (no retries): {dict(counts)}")
    assert set(counts) <= {200, 429}, f"lost or failed requests: {results}"
    assert counts[200] + counts[429] == N
    assert counts[200] >= 1 and counts[429] >= 1
    # and the server is fine afterwards
    r = httpx.post(
        busy_server.url + "/chat/completions",
        json={"messages": ASK, "max_tokens": 1},
        timeout=120,
    )
    assert r.status_code == 200


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    server = start_server(
        tmp_path_factory.mktemp("ratelimit") / "state",
        "--rate-limit-rpm", "3",
        "--rate-limit-concurrency", "1",
    )  # fmt: skip
    yield server
    assert server.stop() == 0


def _post(server, key: str, **extra) -> httpx.Response:
    body = {"messages": ASK, "max_tokens": 1, **extra}
    return httpx.post(
        server.url + "/chat/completions", json=body, headers={"api-key": key}, timeout=120
    )


def test_per_key_concurrency_limit(limited_server):
    """A second request while the first of the same key is still streaming: 429. (The first
    has a 3000-token prompt, so it is still being read when the second arrives.)"""
    body = {"messages": [{"role": "user", "content": "hello world " * 1500}], "max_tokens": 300}
    with httpx.Client(base_url=limited_server.url, timeout=120) as client:
        headers = {"api-key": "learner-b"}
        with client.stream(
            "POST", "/chat/completions", json={**body, "stream": True}, headers=headers
        ) as first:
            assert first.status_code == 200
            lines = first.iter_lines()  # kept: a dropped iterator closes the connection
            next(lines)  # the role chunk: the first is reading its prompt now
            second = _post(limited_server, "learner-b")
            check_throttle(second.status_code, second.headers)
            error = second.json()["error"]
            assert error["code"] == "too_many_requests"
            assert "at most 1 at a time" in error["message"]
    # a different key was never limited by learner-b's stream (it may wait in the queue)


def test_per_key_requests_per_minute(limited_server):
    for _ in range(3):
        assert _post(limited_server, "learner-a").status_code == 200
    r = _post(limited_server, "learner-a")
    check_throttle(r.status_code, r.headers)
    assert 1 <= int(r.headers["retry-after"]) <= 60
    error = r.json()["error"]
    assert error["code"] == "too_many_requests"
    assert "3 requests per minute" in error["message"]
    # another key has its own count
    assert _post(limited_server, "learner-c").status_code == 200

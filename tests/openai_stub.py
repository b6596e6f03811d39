"""A tiny real OpenAI-compatible HTTP server on 127.0.0.1, for settings and discovery tests.

It serves `GET /v1/models` and `GET /openai/v1/models` (the model list it was given) and
`POST .../chat/completions` (a fixed answer naming the requested model), and records every
request (method, path, query, headers, body) so a test can check what a client really sent.
Anything else gets 404. `key`: require `Authorization: Bearer <key>` (else 401).
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

BASES = ("/v1", "/openai/v1")


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case
    body: dict | None = None


@dataclass
class OpenAIStub:
    models: list[str] = field(default_factory=lambda: ["stub-model"])
    key: str | None = None
    models_body: str | None = None  # a raw body for GET /models instead of the list
    seen: list[Seen] = field(default_factory=list)

    def __enter__(self) -> OpenAIStub:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, payload: dict | str) -> None:
                data = payload if isinstance(payload, str) else json.dumps(payload)
                raw = data.encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _record(self, body: dict | None) -> Seen:
                parts = urlsplit(self.path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                seen = Seen(self.command, parts.path, parts.query, headers, body)
                stub.seen.append(seen)
                return seen

            def _authorized(self) -> bool:
                if stub.key is None:
                    return True
                return self.headers.get("Authorization") == f"Bearer {stub.key}"

            def do_GET(self):
                seen = self._record(None)
                if seen.path not in tuple(b + "/models" for b in BASES):
                    return self._reply(404, {"error": {"code": "not_found", "message": "no"}})
                if not self._authorized():
                    return self._reply(401, {"error": {"code": "unauthorized", "message": "key"}})
                if stub.models_body is not None:
                    return self._reply(200, stub.models_body)
                data = [{"id": m, "object": "model", "owned_by": "stub"} for m in stub.models]
                return self._reply(200, {"object": "list", "data": data})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                seen = self._record(body)
                if seen.path not in tuple(b + "/chat/completions" for b in BASES):
                    return self._reply(404, {"error": {"code": "not_found", "message": "no"}})
                if not self._authorized():
                    return self._reply(401, {"error": {"code": "unauthorized", "message": "key"}})
                return self._reply(
                    200,
                    {
                        "id": "chatcmpl-stub",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body.get("model") or "none",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": "Paris."},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
                    },
                )

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    @property
    def url(self) -> str:
        """The server's root, http://127.0.0.1:PORT (its OpenAI base URL is url + "/v1")."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def requests_to(self, suffix: str) -> list[Seen]:
        return [s for s in self.seen if s.path.endswith(suffix)]

"""A local stand-in for the Anthropic HTTP API, for testing the real ``anthropic`` SDK offline.

Serves, on 127.0.0.1 (port 0 = a free port):

* ``POST /v1/messages`` — a Messages API reply whose text comes from ``responder(body)``;
* ``POST /v1/messages/batches`` — create a Message Batch (results computed at once, revealed after
  ``batch_polls`` retrievals);
* ``GET /v1/messages/batches`` — every batch, newest first (one page);
* ``GET /v1/messages/batches/{id}`` — the batch object (``results_url`` once ended);
* ``GET /v1/messages/batches/{id}/results`` — JSONL, one line per request;
* ``GET /_stub/stats`` and ``POST /_stub/config`` — counters and settings, for a stub in another process.

Fault injection (``fault_rate`` > 0, choice among ``faults``): ``429`` (with ``retry-after``), ``500``,
``529`` (overloaded), ``timeout`` (sleeps ``timeout_sleep`` s before answering), ``malformed`` (200 with
a broken JSON body), ``drop`` (closes the connection), ``refusal`` (``stop_reason: refusal``),
``nonnumeric`` and ``out_of_range`` answers. ``hang_after=N`` lets exactly N message requests through
(counted on arrival, so concurrent clients cannot overshoot) and makes every later one hang until the stub
stops (to kill a client at a known point).

Run standalone: ``python tests/anthropic_stub.py --latency 0.1`` prints the base URL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = ("429", "500", "529", "timeout", "malformed", "drop", "refusal", "nonnumeric", "out_of_range")
_BATCH_RE = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_-]+)(/results)?$")


def body_hash(body: dict[str, Any]) -> str:
    """Hash of a request body (what the stub counts as 'the same request')."""
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def default_responder(body: dict[str, Any]) -> str:
    """Deterministic score 0-100 from the user message text."""
    text = json.dumps(body.get("messages", []), sort_keys=True)
    return str(int(hashlib.sha256(text.encode()).hexdigest(), 16) % 101)


def user_text(body: dict[str, Any]) -> str:
    """Text of the last user message of a request body."""
    content = body["messages"][-1]["content"]
    if isinstance(content, list):
        return "".join(b.get("text", "") for b in content if isinstance(b, dict))
    return str(content)


def system_text(body: dict[str, Any]) -> str:
    """Text of the system prompt of a request body."""
    system = body.get("system", "")
    if isinstance(system, list):
        return "".join(b.get("text", "") for b in system if isinstance(b, dict))
    return str(system)


class AnthropicStub:
    """Threaded HTTP stub of the Anthropic API; use as a context manager.

    Attributes of interest to tests: ``base_url``, ``requests`` (list of dicts with method, path,
    headers, body), ``successes`` (Counter of body hash → number of successful message replies),
    ``faults_served`` (Counter), ``batches`` (id → record), ``batch_creates``.
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        responder: Callable[[dict[str, Any]], str] | None = None,
        fault_rate: float = 0.0,
        faults: tuple[str, ...] = FAULTS,
        seed: int = 0,
        retry_after: float = 0.01,
        timeout_sleep: float = 1.0,
        hang_after: int | None = None,
        batch_polls: int = 1,
        batch_error_rate: float = 0.0,
        record: bool = True,
    ) -> None:
        self.latency = latency
        self.responder = responder or default_responder
        self.fault_rate = fault_rate
        self.faults = tuple(faults)
        self.retry_after = retry_after
        self.timeout_sleep = timeout_sleep
        self.hang_after = hang_after
        self.batch_polls = batch_polls
        self.batch_error_rate = batch_error_rate
        self.record = record
        self._rng = random.Random(seed)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.requests: list[dict[str, Any]] = []
        self.successes: Counter[str] = Counter()
        self.faults_served: Counter[str] = Counter()
        self.n_message_requests = 0
        self.n_admitted = 0  # message requests let through while ``hang_after`` is set
        self.batches: dict[str, dict[str, Any]] = {}
        self.batch_creates = 0
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, port: int = 0) -> AnthropicStub:
        stub = self

        class Handler(_Handler):
            pass

        Handler.stub = stub
        ThreadingHTTPServer.request_queue_size = 256
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> AnthropicStub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def n_successes(self) -> int:
        return sum(self.successes.values())

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {"message_requests": self.n_message_requests, "successes": self.n_successes,
                    "distinct_successes": len(self.successes),
                    "max_repeat": max(self.successes.values(), default=0),
                    "faults": dict(self.faults_served), "batch_creates": self.batch_creates}

    def reset_counters(self) -> None:
        with self.lock:
            self.requests.clear()
            self.successes.clear()
            self.faults_served.clear()
            self.n_message_requests = 0
            self.batch_creates = 0

    # ------------------------------------------------------------------ behaviour
    def pick_fault(self) -> str | None:
        with self.lock:
            if self.fault_rate > 0 and self._rng.random() < self.fault_rate:
                return self._rng.choice(self.faults)
        return None

    def message(self, body: dict[str, Any], text: str, stop_reason: str = "end_turn") -> dict[str, Any]:
        content = [] if stop_reason == "refusal" else [{"type": "text", "text": text}]
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": body.get("model", "stub"), "content": content, "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": len(json.dumps(body)) // 4, "output_tokens": 2,
                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0},
        }

    def batch_object(self, batch_id: str) -> dict[str, Any]:
        rec = self.batches[batch_id]
        ended = rec["polls"] >= self.batch_polls
        n = len(rec["results"])
        counts = {"processing": 0 if ended else n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if ended:
            for r in rec["results"]:
                counts[r["result"]["type"]] += 1
        return {
            "id": batch_id, "type": "message_batch", "processing_status": "ended" if ended else "in_progress",
            "request_counts": counts, "created_at": rec["created_at"], "expires_at": rec["created_at"],
            "ended_at": rec["created_at"] if ended else None, "archived_at": None, "cancel_initiated_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    stub: AnthropicStub

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # ------------------------------------------------------------------ helpers
    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None, raw: bytes | None = None,
              content_type: str = "application/json") -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:16]}")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True

    def _error(self, status: int, etype: str, message: str, retry: bool = True) -> None:
        headers = {"retry-after": f"{self.stub.retry_after:g}"} if retry else {}
        self._send(status, {"type": "error", "error": {"type": etype, "message": message}}, headers)

    def _body(self) -> dict[str, Any] | None:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            return json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return None

    def _authorised(self) -> bool:
        return bool(self.headers.get("x-api-key") or self.headers.get("Authorization"))

    def _record(self, body: Any) -> None:
        if self.stub.record:
            with self.stub.lock:
                self.stub.requests.append({"method": self.command, "path": self.path,
                                           "headers": dict(self.headers.items()), "body": body})

    # ------------------------------------------------------------------ routes
    def do_POST(self) -> None:  # noqa: N802
        body = self._body()
        path = self.path.split("?")[0]
        if path == "/_stub/config":
            for k, v in (body or {}).items():
                if k == "reset":
                    self.stub.reset_counters()
                elif hasattr(self.stub, k):
                    setattr(self.stub, k, v)
            return self._send(200, self.stub.stats())
        self._record(body)
        if not self._authorised():
            return self._error(401, "authentication_error", "missing api key", retry=False)
        if body is None:
            return self._error(400, "invalid_request_error", "body is not JSON", retry=False)
        if path == "/v1/messages":
            return self._messages(body)
        if path == "/v1/messages/batches":
            return self._create_batch(body)
        return self._error(404, "not_found_error", f"no route {path}", retry=False)

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?")[0]
        if path == "/_stub/stats":
            return self._send(200, self.stub.stats())
        self._record(None)
        if not self._authorised():
            return self._error(401, "authentication_error", "missing api key", retry=False)
        if path == "/v1/messages/batches":  # list, newest first (one page)
            with self.stub.lock:
                data = [self.stub.batch_object(b) for b in reversed(list(self.stub.batches))]
            return self._send(200, {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                                    "last_id": data[-1]["id"] if data else None})
        m = _BATCH_RE.match(path)
        if not m or m.group(1) not in self.stub.batches:
            return self._error(404, "not_found_error", f"no batch at {path}", retry=False)
        batch_id = m.group(1)
        with self.stub.lock:
            if m.group(2):
                rec = self.stub.batches[batch_id]
                if rec["polls"] < self.stub.batch_polls:
                    return self._error(400, "invalid_request_error", "batch still processing", retry=False)
                lines = "\n".join(json.dumps(r) for r in rec["results"]) + "\n"
                raw = lines.encode()
            else:
                self.stub.batches[batch_id]["polls"] += 1
                obj = self.stub.batch_object(batch_id)
                raw = None
        if m.group(2):
            return self._send(200, None, raw=raw, content_type="application/binary")
        return self._send(200, obj)

    def _messages(self, body: dict[str, Any]) -> None:
        stub = self.stub
        with stub.lock:
            stub.n_message_requests += 1
            # Count admissions, not successes: with concurrent clients several requests can be in flight
            # before the first of them succeeds, and exactly ``hang_after`` of them must get through.
            hang = stub.hang_after is not None and stub.n_admitted >= stub.hang_after
            if stub.hang_after is not None and not hang:
                stub.n_admitted += 1
        if hang:
            stub.stopping.wait()
            self.close_connection = True
            return
        if stub.latency:
            time.sleep(stub.latency)
        for key in ("model", "max_tokens", "messages"):
            if key not in body:
                return self._error(400, "invalid_request_error", f"{key}: field required", retry=False)
        fault = stub.pick_fault()
        if fault is not None:
            with stub.lock:
                stub.faults_served[fault] += 1
        if fault == "429":
            return self._error(429, "rate_limit_error", "rate limited")
        if fault == "500":
            return self._error(500, "api_error", "internal error")
        if fault == "529":
            return self._error(529, "overloaded_error", "overloaded")
        if fault == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        if fault == "malformed":
            return self._send(200, None, raw=b'{"id": "msg_x", "type": "message", "content": [{"type": "te')
        if fault == "timeout":
            stub.stopping.wait(stub.timeout_sleep)
        if fault == "refusal":
            msg = stub.message(body, "", stop_reason="refusal")
        elif fault == "nonnumeric":
            msg = stub.message(body, "This answer seems mostly fine to me, I would rate it highly.")
        elif fault == "out_of_range":
            msg = stub.message(body, "150")
        else:
            msg = stub.message(body, stub.responder(body))
        if fault != "timeout":
            with stub.lock:
                stub.successes[body_hash(body)] += 1
        self._send(200, msg)

    def _create_batch(self, body: dict[str, Any]) -> None:
        stub = self.stub
        reqs = body.get("requests") or []
        ids = [r.get("custom_id") for r in reqs]
        if len(set(ids)) != len(ids) or not all(isinstance(i, str) and re.match(r"^[a-zA-Z0-9_-]{1,64}$", i) for i in ids):
            return self._error(400, "invalid_request_error", "custom_id values must be unique and match ^[a-zA-Z0-9_-]{1,64}$",
                               retry=False)
        results = []
        rng = random.Random(len(stub.batches))
        for r in reqs:
            params = r["params"]
            if rng.random() < stub.batch_error_rate:
                result = {"type": "errored", "error": {"type": "error",
                                                        "error": {"type": "api_error", "message": "stub batch error"}}}
            else:
                result = {"type": "succeeded", "message": stub.message(params, stub.responder(params))}
            results.append({"custom_id": r["custom_id"], "result": result})
        batch_id = f"msgbatch_{uuid.uuid4().hex[:20]}"
        with stub.lock:
            stub.batch_creates += 1
            stub.batches[batch_id] = {"results": results, "polls": 0,
                                      "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            obj = stub.batch_object(batch_id)
        self._send(200, obj)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0, help="seconds per message request")
    args = ap.parse_args()
    stub = AnthropicStub(latency=args.latency, record=False).start(args.port)
    print(stub.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        stub.stop()


if __name__ == "__main__":
    main()

"""``phasebayes label``: a local web page on which a human rates answers of a run, blind.

:class:`LabelSession` holds the state (run, rubric, item plan, the rater's store) and answers the JSON
API; :func:`serve` puts it behind :class:`http.server.ThreadingHTTPServer` on ``127.0.0.1`` (a free
port) and opens the page in the browser. Nothing leaves the machine: the server binds to the loopback
interface only, refuses requests whose ``Host`` is not that address (DNS rebinding), accepts only
JSON posts (no cross-site form posts), and the page loads nothing from elsewhere.

API (all JSON; the page knows items only by opaque ids and never sees step, checkpoint or any score):

* ``GET /api/state`` → ``{"state": {...}}`` with the rubric (title, question, scale, anchors), the
  rater, ``total``, ``done``, ``can_undo`` and the next undecided ``item`` (``id``, ``prompt``, ``answer``)
  or null when all are done;
* ``POST /api/rate`` ``{"item": id, "value": x}``, ``POST /api/skip`` ``{"item": id}``,
  ``POST /api/undo`` ``{}`` → the new state (every decision is on disk before the reply).
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import webbrowser
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from ..errors import ConfigError, RunDataError
from .items import ItemPlan, load_or_create_plan
from .page import PAGE
from .store import RatingStore, ratings_dir_for

__all__ = ["LabelSession", "serve", "start_server", "resolve_run"]


def resolve_run(run: str | os.PathLike) -> tuple[Path, Path, Path | None]:
    """``(run dataset, ratings folder, analysis file or None)`` of a run folder or a run dataset file."""
    run = Path(run)
    if run.is_dir():
        ds_path = run / "run.nc"
        if not ds_path.exists():
            raise RunDataError(f"{run} has no run.nc; pass a run folder after its judge stage, or a run dataset (.nc).")
        analysis = run / "analysis.nc"
        return ds_path, run / "ratings", analysis if analysis.exists() else None
    if not run.exists():
        raise RunDataError(f"no run folder or run dataset at {run}.")
    return run, ratings_dir_for(run), None


class LabelSession:
    """One rater rating one rubric on one run (the state behind the page)."""

    def __init__(self, run: str | os.PathLike, rubric: str = "alignment", *, rater: str = "rater1", n: int = 120,
                 seed: int = 0, rubric_params: dict[str, str] | None = None):
        from ..dataset import open_run
        from ..judge.rubric import load_rubric

        ds_path, self.ratings_dir, analysis = resolve_run(run)
        self.rubric = load_rubric(rubric, **(rubric_params or {}))
        if self.rubric.kind != "judge":
            raise ConfigError(f"rubric {self.rubric.name!r} is a metric, not something a person rates.")
        ds = open_run(ds_path, require_scores=False)
        self.plan: ItemPlan = load_or_create_plan(ds, self.ratings_dir, self.rubric.name, n=n,
                                                  analysis_path=analysis, seed=seed)
        self.plan_ids = list(self.plan.ids)[:max(n, 1)]
        self._pos = {i: k for k, i in enumerate(self.plan_ids)}
        self.store = RatingStore(self.ratings_dir, rater)
        # Texts of the planned items only; the step/prompt/sample keys stay on the server.
        resp = ds["response"]
        texts = ds["prompt_text"] if "prompt_text" in ds else ds["prompt"]
        ptext = dict(zip([str(p) for p in ds["prompt"].values], [str(x) for x in np.asarray(texts.values)]))
        self._texts: dict[str, tuple[str, str]] = {}
        for i, t, p, s in zip(self.plan.ids, self.plan.steps, self.plan.prompts, self.plan.samples):
            answer = resp.sel(step=t, prompt=p, sample=s).values
            self._texts[i] = (ptext.get(p, p), str(answer.item() if hasattr(answer, "item") else answer))

    # ---------------------------------------------------------------- state
    def _next_item(self) -> str | None:
        done = self.store.decided(self.rubric.name)
        for i in self.plan_ids:
            if i not in done:
                return i
        return None

    def state(self) -> dict:
        """What the page shows now (no step, checkpoint, sample or score in it)."""
        r = self.rubric
        done = self.store.decided(r.name)
        nxt = self._next_item()
        item = None if nxt is None else {"id": nxt, "prompt": self._texts[nxt][0], "answer": self._texts[nxt][1]}
        fmt = lambda x: int(x) if float(x).is_integer() else float(x)  # noqa: E731
        return {
            "rubric": {"name": r.name, "title": r.title, "question": r.question, "min": fmt(r.scale_min),
                       "max": fmt(r.scale_max), "anchors": [{"value": fmt(v), "text": t} for v, t in r.anchors]},
            "rater": self.store.rater,
            "total": len(self.plan_ids),
            "done": sum(1 for i in self.plan_ids if i in done),
            "can_undo": any(rec.get("rubric") == r.name for rec in self.store.records),
            "item": item,
        }

    def _check_item(self, item) -> str:
        if not isinstance(item, str) or item not in self._pos:
            raise KeyError("unknown item id; reload the page.")
        if item in self.store.decided(self.rubric.name):
            raise LookupError("this item is already decided; reload the page.")
        return item

    def rate(self, item, value) -> dict:
        """Store a rating on the rubric's scale; returns the new state."""
        item = self._check_item(item)
        try:
            v = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"rating must be a number, got {value!r}.") from err
        if not (np.isfinite(v) and self.rubric.scale_min <= v <= self.rubric.scale_max):
            raise ValueError(f"rating must lie in {self.rubric.scale_min:g}..{self.rubric.scale_max:g}, got {value!r}.")
        self.store.add(item, self.rubric.name, v, rubric_version=self.rubric.version)
        return self.state()

    def skip(self, item) -> dict:
        """Record a skip (the item counts as decided; undo brings it back)."""
        self.store.add(self._check_item(item), self.rubric.name, None, rubric_version=self.rubric.version)
        return self.state()

    def undo(self) -> dict:
        """Remove the last decision on this rubric; its item becomes the next one shown."""
        self.store.undo(self.rubric.name)
        return self.state()


def _handler(session: LabelSession, allowed_hosts: set[str]):
    class Handler(BaseHTTPRequestHandler):
        server_version = "phasebayes-label"
        sys_version = ""

        def log_message(self, fmt, *args):  # quiet: the terminal shows only what matters
            pass

        def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Referrer-Policy", "no-referrer")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._send(status, json.dumps(obj).encode("utf-8"), "application/json; charset=utf-8")

        def _host_ok(self) -> bool:
            if self.headers.get("Host", "") not in allowed_hosts:
                self._json(HTTPStatus.FORBIDDEN, {"error": "wrong Host header; open the address printed by phasebayes label."})
                return False
            return True

        def do_GET(self):  # noqa: N802
            if not self._host_ok():
                return
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                nonce = secrets.token_urlsafe(16)
                self._send(HTTPStatus.OK, PAGE.replace("__NONCE__", nonce).encode("utf-8"), "text/html; charset=utf-8",
                           {"Content-Security-Policy": f"default-src 'none'; script-src 'nonce-{nonce}'; "
                                                       "style-src 'unsafe-inline'; connect-src 'self'; img-src 'none'"})
            elif path == "/api/state":
                self._json(HTTPStatus.OK, {"state": session.state()})
            else:
                self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})

        def do_POST(self):  # noqa: N802
            if not self._host_ok():
                return
            if not self.headers.get("Content-Type", "").startswith("application/json"):
                self._json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "send JSON (Content-Type: application/json)."})
                return
            try:
                length = min(int(self.headers.get("Content-Length", "0") or 0), 65536)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise ValueError("the request body must be a JSON object.")
                path = self.path.split("?", 1)[0]
                if path == "/api/rate":
                    st = session.rate(body.get("item"), body.get("value"))
                elif path == "/api/skip":
                    st = session.skip(body.get("item"))
                elif path == "/api/undo":
                    st = session.undo()
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": "not found"})
                    return
            except (KeyError, LookupError) as err:
                self._json(HTTPStatus.CONFLICT, {"error": str(err.args[0] if err.args else err), "state": session.state()})
                return
            except ValueError as err:
                self._json(HTTPStatus.BAD_REQUEST, {"error": str(err), "state": session.state()})
                return
            self._json(HTTPStatus.OK, {"state": st})

    return Handler


def start_server(session: LabelSession, port: int = 0) -> tuple[ThreadingHTTPServer, str, threading.Thread]:
    """Serve ``session`` on 127.0.0.1 (``port=0``: a free port) in a daemon thread; returns ``(server, url, thread)``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", port), BaseHTTPRequestHandler)
    real_port = httpd.server_address[1]
    httpd.RequestHandlerClass = _handler(session, {f"127.0.0.1:{real_port}", f"localhost:{real_port}"})
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="phasebayes-label", daemon=True)
    thread.start()
    return httpd, f"http://127.0.0.1:{real_port}/", thread


def serve(run: str | os.PathLike, rubric: str = "alignment", *, rater: str = "rater1", n: int = 120, seed: int = 0,
          port: int = 0, open_browser: bool = True, rubric_params: dict[str, str] | None = None) -> None:
    """Serve the labelling page until Ctrl-C (every rating is already on disk, so stopping loses nothing)."""
    session = LabelSession(run, rubric, rater=rater, n=n, seed=seed, rubric_params=rubric_params)
    httpd, url, thread = start_server(session, port)
    st = session.state()
    print(f"phasebayes label: rubric {session.rubric.name!r}, rater {rater!r}: {st['done']} of {st['total']} done "
          f"(items sampled: {session.plan.weight_source}).\n  ratings: {session.store.path}\n  open {url}  (Ctrl-C stops; "
          "rerun the same command to resume)", flush=True)
    if open_browser:
        webbrowser.open(url)
    try:
        thread.join()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.shutdown()
        httpd.server_close()

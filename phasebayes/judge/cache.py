"""Persistent judgement cache: SQLite in WAL mode, one committed row per finished judgement.

The key is a SHA-256 over (judge fingerprint, rubric version, prompt text, response text, replicate),
so rerunning the same job costs zero calls, while changing the judge model, its settings or a single
word of the rubric misses the cache. Only real answers of the judge are stored
(:data:`~phasebayes.judge.base.CACHEABLE_STATUSES`); transport failures (``api_error``, ``timeout``) are
never cached and are retried on the next run. Each row is committed as soon as it is known, so a
process killed mid-run loses at most the calls in flight; the next run completes the rest.

The same file records submitted Message Batches (batch id and the cache keys of its requests) so an
interrupted batch job resumes polling instead of resubmitting. Nothing secret is stored: no API key,
no request headers.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from .base import Judgement

__all__ = ["JudgeCache", "cache_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    judge_id TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    replicate INTEGER NOT NULL,
    score REAL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    raw TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    judge_id TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    requests TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_intents (
    intent_id TEXT PRIMARY KEY,
    judge_id TEXT NOT NULL,
    rubric_version TEXT NOT NULL,
    requests TEXT NOT NULL,
    state TEXT NOT NULL,
    created REAL NOT NULL
);
"""


def cache_key(fingerprint: str, rubric_version: str, prompt: str, response: str, replicate: int) -> str:
    """SHA-256 hex of the judge fingerprint, rubric version, prompt, response and replicate index."""
    blob = json.dumps([fingerprint, rubric_version, prompt, response, int(replicate)], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _retry_while_locked(step, *, seconds: float = 60.0) -> None:
    """Run ``step`` until SQLite stops answering "database is locked".

    Hand-written because SQLite does not call its busy handler while switching a brand-new file to WAL
    mode: when two processes create the same cache at the same moment, one of them gets SQLITE_BUSY at
    once whatever ``timeout`` the connection has. Retrying with a short growing wait is the documented
    remedy; the step is idempotent (``CREATE TABLE IF NOT EXISTS``, pragmas).
    """
    deadline = time.monotonic() + seconds
    wait = 0.01
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) and "busy" not in str(err).lower():
                raise
            if time.monotonic() > deadline:
                raise
            time.sleep(wait)
            wait = min(wait * 2, 0.5)


class JudgeCache:
    """On-disk cache of judgements (``sqlite3``, WAL journal, one transaction per write).

    Parameters
    ----------
    path
        File to use (created with its folder). ``":memory:"`` gives a throw-away cache.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
        _retry_while_locked(self._set_up_file)

    def _set_up_file(self) -> None:
        if self.path != ":memory:":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(_SCHEMA)

    # ------------------------------------------------------------------ judgements
    def get_many(self, keys: Iterable[str]) -> dict[str, Judgement]:
        """Cached judgements for the given keys (missing keys are absent from the result)."""
        keys = list(dict.fromkeys(keys))
        out: dict[str, Judgement] = {}
        with self._lock:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                q = f"SELECT key, score, status, reason, raw FROM judgements WHERE key IN ({','.join('?' * len(chunk))})"
                for key, score, status, reason, raw in self._conn.execute(q, chunk):
                    out[key] = Judgement(score=math.nan if score is None else float(score), status=status,
                                         reason=reason, raw=raw, calls=0)
        return out

    def get(self, key: str) -> Judgement | None:
        """One cached judgement or None."""
        return self.get_many([key]).get(key)

    def put(self, key: str, judgement: Judgement, *, judge_id: str, rubric_version: str, replicate: int) -> bool:
        """Store a judgement durably if it is cacheable and the key is new; returns whether it was stored.

        The first judgement stored for a key wins: when several processes judge the same run at once,
        a later one does not overwrite it (callers use :meth:`get` to adopt the stored one, so every
        process reports the judgement the cache holds).
        """
        if not judgement.cacheable:
            return False
        score = None if judgement.status != "ok" or not math.isfinite(judgement.score) else float(judgement.score)
        with self._lock:
            cur = self._conn.execute(
                "INSERT OR IGNORE INTO judgements VALUES (?,?,?,?,?,?,?,?,?)",
                (key, judge_id, rubric_version, int(replicate), score, judgement.status,
                 judgement.reason[:2000], judgement.raw[:2000], time.time()),
            )
        return cur.rowcount == 1

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0])

    # ------------------------------------------------------------------ batches
    def add_batch(self, batch_id: str, *, judge_id: str, rubric_version: str, requests: dict[str, str]) -> None:
        """Record a submitted batch: ``requests`` maps custom_id → cache key."""
        with self._lock:
            self._conn.execute("INSERT OR REPLACE INTO batches VALUES (?,?,?,?,?,?)",
                               (batch_id, judge_id, rubric_version, json.dumps(requests), "submitted", time.time()))

    def open_batches(self, judge_id: str, rubric_version: str) -> list[tuple[str, dict[str, str]]]:
        """Batches submitted for this judge and rubric that have not been collected yet."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT batch_id, requests FROM batches WHERE judge_id=? AND rubric_version=? AND state='submitted' "
                "ORDER BY created", (judge_id, rubric_version)).fetchall()
        return [(b, json.loads(r)) for b, r in rows]

    def add_intent(self, *, judge_id: str, rubric_version: str, requests: dict[str, str]) -> str:
        """Record that a batch of ``requests`` is about to be created (before paying); returns the intent id.

        A kill between creating the batch and :meth:`add_batch` leaves the intent open, so the next run
        looks for that batch on the API before creating a new one.
        """
        intent_id = uuid.uuid4().hex
        with self._lock:
            self._conn.execute("INSERT INTO batch_intents VALUES (?,?,?,?,?,?)",
                               (intent_id, judge_id, rubric_version, json.dumps(requests), "open", time.time()))
        return intent_id

    def resolve_intent(self, intent_id: str) -> None:
        """The intent's batch was recorded (or found not to exist)."""
        with self._lock:
            self._conn.execute("UPDATE batch_intents SET state='resolved' WHERE intent_id=?", (intent_id,))

    def open_intents(self, judge_id: str, rubric_version: str) -> list[tuple[str, dict[str, str], float]]:
        """Intents of this judge and rubric whose batch was never recorded: (intent id, requests, unix time)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT intent_id, requests, created FROM batch_intents WHERE judge_id=? AND rubric_version=? "
                "AND state='open' ORDER BY created", (judge_id, rubric_version)).fetchall()
        return [(i, json.loads(r), float(c)) for i, r, c in rows]

    def batch_ids(self) -> set[str]:
        """Every batch id this cache has recorded (any judge, any state)."""
        with self._lock:
            return {r[0] for r in self._conn.execute("SELECT batch_id FROM batches").fetchall()}

    def close_batch(self, batch_id: str, state: str = "collected") -> None:
        """Mark a batch as collected (its results are in the judgements table) or abandoned."""
        with self._lock:
            self._conn.execute("UPDATE batches SET state=? WHERE batch_id=?", (state, batch_id))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JudgeCache({self.path!r})"

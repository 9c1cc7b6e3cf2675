"""Message Batches mode for the Claude judge: create, poll, collect, resume.

Flow for one rubric:

1. Batches this judge already submitted for this rubric and not yet collected (recorded in the
   judgement cache) are polled and collected first, so an interrupted job resumes instead of
   paying again.
2. The remaining items go into new batches of at most ``batch_size`` requests; each batch id is
   written to the cache together with its ``custom_id → cache key`` map right after creation. An
   *intent* (the requests about to be sent) is recorded before each creation: if the job is killed
   between creating a batch and recording its id, the next run lists this account's recent batches
   and adopts the one created at that moment with that many requests (not recorded by any run)
   instead of paying for the same requests again.
3. Batches are polled every ``poll_interval`` seconds until ``processing_status == "ended"``; their
   JSONL results are read with ``client.messages.batches.results`` and every request's result is
   stored at once (``succeeded`` → parsed answer; ``errored``/``canceled``/``expired`` →
   ``api_error`` with the reason, not cached, so the next run resubmits only those). An answer off the
   rubric's format is asked again live (``max_reasks``); the batch call stays in
   ``extra["batch_part"]`` so its usage is priced at the batch rate.
4. If ``max_wait`` runs out first, the items of unfinished batches are returned with status
   ``missing`` and a reason naming the batch; the batch stays recorded and the next run collects it.

``custom_id`` is the item's cache key (64 hex digits: unique, matches the API's ``^[a-zA-Z0-9_-]{1,64}$``).
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from .base import Judgement, JudgeItem
from .cache import cache_key

if TYPE_CHECKING:
    from .cache import JudgeCache
    from .claude import ClaudeJudge
    from .rubric import Rubric

__all__ = ["run_batches"]


async def run_batches(
    judge: ClaudeJudge,
    rubric: Rubric,
    items: Sequence[JudgeItem],
    *,
    keys: Sequence[str] | None = None,
    cache: JudgeCache | None = None,
    on_result: Callable[[int, Judgement], None] | None = None,
    progress: bool = False,
) -> list[Judgement]:
    """Judge ``items`` with the Message Batches API; see the module docstring for the protocol."""
    if keys is None:
        keys = [cache_key(judge.fingerprint, rubric.version, it.prompt, it.response, it.replicate) for it in items]
    if cache is None:
        warnings.warn("batch mode without a cache: batch ids are not persisted, an interrupted job cannot resume.",
                      stacklevel=3)
    by_key: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        by_key.setdefault(k, []).append(i)
    results: list[Judgement | None] = [None] * len(items)

    def deliver(key: str, judgement: Judgement) -> None:
        if cache is not None:
            idx = by_key.get(key)
            rep = items[idx[0]].replicate if idx else 0
            cache.put(key, judgement, judge_id=judge.judge_id, rubric_version=rubric.version, replicate=rep)
        for i in by_key.pop(key, []):
            results[i] = judgement
            if on_result is not None:
                on_result(i, judgement)

    client = judge.make_client()
    try:
        # 1. resume batches submitted earlier, including ones created but never recorded (a kill in between)
        open_batches = cache.open_batches(judge.judge_id, rubric.version) if cache is not None else []
        if cache is not None:
            for intent_id, mapping, created in cache.open_intents(judge.judge_id, rubric.version):
                found = await _find_created(client, created, len(mapping), cache.batch_ids())
                if found is not None:
                    cache.add_batch(found, judge_id=judge.judge_id, rubric_version=rubric.version, requests=mapping)
                    open_batches.append((found, mapping))
                cache.resolve_intent(intent_id)
        # 2. submit the rest
        in_open = {k for _, mapping in open_batches for k in mapping.values()}
        todo = [k for k in by_key if k not in in_open]
        first_index = {k: idx[0] for k, idx in by_key.items()}
        for start in range(0, len(todo), judge.batch_size):
            chunk = todo[start : start + judge.batch_size]
            requests = [{"custom_id": k, "params": judge.request_params(rubric, items[first_index[k]])} for k in chunk]
            mapping = {k: k for k in chunk}
            intent = cache.add_intent(judge_id=judge.judge_id, rubric_version=rubric.version,
                                      requests=mapping) if cache is not None else None
            batch = await client.messages.batches.create(requests=requests)
            if cache is not None:
                cache.add_batch(batch.id, judge_id=judge.judge_id, rubric_version=rubric.version, requests=mapping)
                cache.resolve_intent(intent)
            open_batches.append((batch.id, mapping))
        # 3. poll and collect
        deadline = None if judge.max_wait is None else time.monotonic() + float(judge.max_wait)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(open_batches), desc=f"batches {rubric.name}", unit="batch")
        pending = list(open_batches)
        while pending:
            still = []
            for batch_id, mapping in pending:
                batch = await client.messages.batches.retrieve(batch_id)
                if batch.processing_status != "ended":
                    still.append((batch_id, mapping))
                    continue
                seen = set()
                decoder = await client.messages.batches.results(batch_id)
                async for line in decoder:
                    key = mapping.get(line.custom_id)
                    if key is None:
                        continue
                    seen.add(key)
                    judgement = _result_judgement(judge, rubric, line.result, batch_id)
                    if judgement.status == "unparseable" and judge.max_reasks > 0 and key in first_index:
                        judgement = await _reask_live(judge, client, rubric, items[first_index[key]], judgement)
                    deliver(key, judgement)
                for key in set(mapping.values()) - seen:
                    deliver(key, Judgement(status="api_error", reason=f"no result for this request in batch {batch_id}"))
                if cache is not None:
                    cache.close_batch(batch_id)
                if bar is not None:
                    bar.update(1)
            pending = still
            if pending:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                wait = judge.poll_interval
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                await asyncio.sleep(wait)
        if bar is not None:
            bar.close()
        for batch_id, mapping in pending:
            for key in set(mapping.values()):
                if key in by_key:
                    judgement = Judgement(status="missing",
                                          reason=f"batch {batch_id} still processing; run again to collect it")
                    for i in by_key.pop(key):
                        results[i] = judgement
                        if on_result is not None:
                            on_result(i, judgement)
    finally:
        await client.close()
    return [r if r is not None else Judgement(status="missing", reason="not judged") for r in results]


def _result_judgement(judge: ClaudeJudge, rubric: Rubric, result: Any, batch_id: str) -> Judgement:
    rtype = getattr(result, "type", None)
    if rtype == "succeeded":
        judgement = judge.interpret(getattr(result, "message", None), rubric)
        if judgement is None:
            return Judgement(status="api_error", reason=f"malformed message in batch {batch_id}")
        judgement.extra["batch"] = True
        return judgement
    if rtype == "errored":
        err = getattr(getattr(result, "error", None), "error", None)
        detail = getattr(err, "message", None) or getattr(err, "type", None) or "unknown error"
        return Judgement(status="api_error", reason=f"batch request errored: {detail}")
    return Judgement(status="api_error", reason=f"batch request {rtype or 'unknown'} (batch {batch_id})")


async def _reask_live(judge: ClaudeJudge, client: Any, rubric: Rubric, item: JudgeItem, first: Judgement) -> Judgement:
    """Ask an unparseable batch answer again with live calls; the batch call is kept in ``extra["batch_part"]``."""
    live = await judge.judge_one(client, rubric, item, asks=judge.max_reasks)  # 1 + max_reasks asks in all
    live.extra["batch_part"] = {"calls": first.calls, "usage": first.extra.get("usage", {})}
    live.extra["reasks"] = live.extra.get("reasks", 0) + 1
    live.calls += first.calls
    if live.status == "unparseable":
        live.reason = f"{live.reason} (batch answer re-asked live)"
    return live


INTENT_CLOCK_SKEW = 120.0
"""Seconds of difference allowed between this machine's clock and the API's ``created_at``."""


async def _find_created(client: Any, created: float, n_requests: int, known: set[str]) -> str | None:
    """The id of a batch created at about unix time ``created`` with ``n_requests`` requests, not in ``known``.

    Batches are listed newest first; the search stops at batches older than the intent. A batch that is
    adopted by mistake costs nothing: results whose ``custom_id`` is not one of our keys are ignored, and
    our requests missing from it come back as ``api_error`` and are submitted again by the next run.
    """
    async for batch in client.messages.batches.list(limit=100):
        when = batch.created_at.timestamp() if hasattr(batch.created_at, "timestamp") else float(batch.created_at)
        if when < created - INTENT_CLOCK_SKEW:
            return None
        counts = batch.request_counts
        total = sum(int(getattr(counts, k, 0) or 0) for k in ("processing", "succeeded", "errored", "canceled", "expired"))
        if batch.id not in known and total == n_requests:
            return batch.id
    return None

"""Claude as a judge, through the official ``anthropic`` SDK (``AsyncAnthropic``).

* Bounded concurrency: a fixed pool of ``max_concurrency`` workers (never an unbounded gather).
* Retries in two layers: the SDK's own (``sdk_max_retries``, honouring ``retry-after``), then ours
  (``max_attempts`` per item) for rate limits (429), overload (529), server errors (5xx), timeouts,
  dropped connections and malformed bodies. A 429's ``retry-after`` pauses *all* workers, not just
  the one that hit it. What still fails ends as ``api_error`` or ``timeout`` with the reason kept
  (never cached, so a rerun tries again).
* The answer is a strictly parsed integer (:func:`~phasebayes.judge.base.parse_answer`); refusals by
  the judge (``stop_reason == "refusal"``) become status ``refusal``.
* ``replicates=k`` asks k times per response (independent draws), giving a score distribution.
* The rubric instructions are the system prompt, marked ``cache_control: ephemeral`` so the API can
  serve the repeated prefix from its prompt cache. The API ignores the marker for prefixes shorter
  than the model's minimum cacheable length (:data:`MIN_CACHEABLE_TOKENS`); a judge run warns once per
  rubric when its prefix is estimated to be shorter (:func:`cache_note`) and says how to lengthen it
  (calibrated ``[[examples]]`` in the rubric). Cache reads show in the judge usage
  (``cache_read_input_tokens``, :mod:`phasebayes.judge.usage`).
* ``mode="batch"`` uses the Message Batches API (:mod:`phasebayes.judge.batches`): half price, batch
  ids persisted in the judgement cache so an interrupted job resumes instead of resubmitting.
* The API key is read from ``ANTHROPIC_API_KEY`` when a client is made, and is kept nowhere else.
"""

from __future__ import annotations

import asyncio
import os
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError, JudgeCostWarning
from .base import Judge, Judgement, JudgeItem, parse_answer
from .rubric import Rubric, delimit
from .usage import add_usage, message_usage

__all__ = ["ClaudeJudge", "DEFAULT_CLAUDE_MODEL", "PROMPT_FORMAT", "MIN_CACHEABLE_TOKENS", "cache_note"]

DEFAULT_CLAUDE_MODEL = "claude-haiku-4-5"
"""Default judge model: a current low-cost Claude model id (override with ``model=``)."""

MIN_CACHEABLE_TOKENS: dict[str, int] = {
    # model id prefix: minimum prompt-prefix length (tokens) the API caches, as published by Anthropic
    "claude-haiku-4-5": 4096, "claude-opus-4-5": 4096, "claude-3-5-haiku": 2048, "claude-3-haiku": 2048,
    "claude-sonnet-4": 1024, "claude-3-7-sonnet": 1024, "claude-opus-4": 1024,
}
CHARS_PER_TOKEN = 3.5
"""Estimate of characters per Claude token for English prose: the tokenizer is not public and the exact
count needs the API (``messages.count_tokens``), which a judge run does not spend a call on."""


def cache_note(rubric: Rubric, model: str) -> str | None:
    """Why prompt caching cannot take effect for ``rubric`` on ``model`` (prefix too short), or None."""
    match = [p for p in MIN_CACHEABLE_TOKENS if model.startswith(p)]
    if not match:
        return None
    need = MIN_CACHEABLE_TOKENS[max(match, key=len)]
    have = round(len(rubric.instructions()) / CHARS_PER_TOKEN)
    if have >= need:
        return None
    return (f"prompt caching cannot take effect for rubric {rubric.name!r} on {model}: its instructions are about "
            f"{have} tokens, below the {need} the API caches; every call pays the full prefix. Add calibrated "
            f"[[examples]] (question, answer, rating) to the rubric to lengthen it (about {need - have} tokens more), "
            "which also steadies the judge.")


PROMPT_FORMAT = "phasebayes-judge-v1"
"""Version of the prompt layout (system = rubric instructions, user = delimited question/answer)."""

_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504, 529}


class ClaudeJudge(Judge):
    """Judge with a Claude model.

    Parameters
    ----------
    model
        Claude model id (default :data:`DEFAULT_CLAUDE_MODEL`).
    replicates
        Judgements per response, k ≥ 1 (independent draws: a score distribution per response).
    max_concurrency
        Requests in flight at once (default 32).
    max_tokens
        Bound on the reply length in tokens (default 16; part of the judge identity). Sampling uses the
        API's defaults (this SDK version has no ``temperature`` argument); replicates are independent
        draws from that default sampling distribution.
    timeout
        Seconds per HTTP request before it counts as timed out.
    sdk_max_retries
        Retries inside the SDK per call (it honours ``retry-after``).
    max_attempts
        Our attempts per item on top of that (each attempt = one SDK call with its retries).
    backoff, max_backoff
        Seconds: our exponential backoff base and cap when the server gives no ``retry-after``.
    base_url
        API address (tests: a local stub); default: the SDK's (``ANTHROPIC_BASE_URL`` or Anthropic's).
        Not part of the identity.
    mode
        ``"messages"`` (one request per judgement) or ``"batch"`` (Message Batches API).
    poll_interval, max_wait, batch_size
        Batch mode: seconds between status polls, seconds to wait for a batch before returning its
        items as ``missing`` (None = wait until done), requests per batch (≤ 100,000).
    max_reasks
        An answer that does not follow the rubric's format (``unparseable``) is asked again (live, also
        in batch mode) up to this many times; then it is recorded as ``unparseable`` with the count.
        Every judgement carries its token usage in ``extra["usage"]`` (see :mod:`.usage`).
    """

    kind = "claude"
    is_async = True
    deterministic = False

    def __init__(
        self,
        model: str = DEFAULT_CLAUDE_MODEL,
        *,
        replicates: int = 1,
        max_concurrency: int = 32,
        max_tokens: int = 16,
        timeout: float = 60.0,
        sdk_max_retries: int = 2,
        max_attempts: int = 6,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        base_url: str | None = None,
        mode: str = "messages",
        poll_interval: float = 30.0,
        max_wait: float | None = None,
        batch_size: int = 10_000,
        max_reasks: int = 2,
    ) -> None:
        if replicates < 1:
            raise ConfigError(f"replicates must be >= 1, got {replicates}.")
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}.")
        if mode not in ("messages", "batch"):
            raise ConfigError(f"mode must be 'messages' or 'batch', got {mode!r}.")
        if not 1 <= batch_size <= 100_000:
            raise ConfigError(f"batch_size must be between 1 and 100000 (the API's limit), got {batch_size}.")
        self.model = str(model)
        self.replicates = int(replicates)
        self.max_concurrency = int(max_concurrency)
        self.max_tokens = int(max_tokens)
        self.timeout = float(timeout)
        self.sdk_max_retries = int(sdk_max_retries)
        self.max_attempts = int(max_attempts)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.base_url = base_url
        self.mode = mode
        self.poll_interval = float(poll_interval)
        self.max_wait = max_wait
        self.batch_size = int(batch_size)
        if max_reasks < 0:
            raise ConfigError(f"max_reasks must be >= 0, got {max_reasks}.")
        self.max_reasks = int(max_reasks)
        self._pause_until = 0.0

    # ------------------------------------------------------------------ identity
    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.model, "sampling": "api-default",
                "max_tokens": self.max_tokens, "prompt_format": PROMPT_FORMAT}

    @property
    def model_name(self) -> str:
        return self.model

    # ------------------------------------------------------------------ requests
    def make_client(self):
        """A fresh ``anthropic.AsyncAnthropic`` client; the key comes from ``ANTHROPIC_API_KEY`` only."""
        import anthropic

        key = os.environ.get("ANTHROPIC_API_KEY")
        if not key:
            raise ConfigError(
                "ANTHROPIC_API_KEY is not set; export it in the environment to use the Claude judge "
                "(phasebayes never reads keys from files or arguments)."
            )
        kwargs: dict[str, Any] = {"api_key": key, "max_retries": self.sdk_max_retries, "timeout": self.timeout}
        if self.base_url is not None:
            kwargs["base_url"] = self.base_url
        return anthropic.AsyncAnthropic(**kwargs)

    def request_params(self, rubric: Rubric, item: JudgeItem) -> dict[str, Any]:
        """Messages API parameters for one judgement (no secrets; identical for every replicate)."""
        return {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "system": [{"type": "text", "text": rubric.instructions(), "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": delimit(item.prompt, item.response)}],
        }

    def interpret(self, message: Any, rubric: Rubric) -> Judgement | None:
        """Turn an API ``Message`` into a judgement; None when the body is malformed (retry it)."""
        try:
            stop = getattr(message, "stop_reason", None)
            content = getattr(message, "content", None)
            if stop == "refusal":
                return Judgement(status="refusal", reason="the judge model refused (stop_reason=refusal)", calls=1,
                                 extra={"usage": message_usage(message)})
            if not isinstance(content, list):
                return None
            texts = []
            for block in content:
                btype = block.get("type") if isinstance(block, dict) else getattr(block, "type", None)
                text = block.get("text") if isinstance(block, dict) else getattr(block, "text", None)
                if btype == "text" and isinstance(text, str):
                    texts.append(text)
            if not texts and stop is None:
                return None
        except Exception:  # noqa: BLE001 - any oddity in a body is treated as malformed
            return None
        judgement = parse_answer("".join(texts), rubric)
        judgement.calls = 1
        judgement.extra["usage"] = message_usage(message)
        return judgement

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None and retry_after >= 0:
            return min(retry_after, self.max_backoff)
        return min(self.max_backoff, self.backoff * 2.0**attempt) * (0.75 + 0.5 * random.random())

    async def _wait_gate(self) -> None:
        loop = asyncio.get_running_loop()
        while (delay := self._pause_until - loop.time()) > 0:
            await asyncio.sleep(delay)

    async def judge_one(self, client: Any, rubric: Rubric, item: JudgeItem, asks: int | None = None) -> Judgement:
        """One judgement; an answer off the rubric's format is asked again up to ``max_reasks`` times.

        ``asks``: asks in all (default ``1 + max_reasks``). ``calls`` and ``extra["usage"]`` add up every
        call made; ``extra["reasks"]`` counts the re-asks.
        """
        calls, usage = 0, {}
        for reask in range(max(1, self.max_reasks + 1 if asks is None else asks)):
            judgement = await self._ask(client, rubric, item)
            calls += judgement.calls
            usage = add_usage(usage, judgement.extra.get("usage"))
            if judgement.status != "unparseable":
                break
        judgement.calls = calls
        if usage:
            judgement.extra["usage"] = usage
        if reask:
            judgement.extra["reasks"] = reask
            if judgement.status == "unparseable":
                judgement.reason = f"{judgement.reason} (after {reask} re-ask(s))"
        return judgement

    async def _ask(self, client: Any, rubric: Rubric, item: JudgeItem) -> Judgement:
        """One judgement with our retry loop around the SDK's; never raises for API trouble."""
        import anthropic

        params = self.request_params(rubric, item)
        loop = asyncio.get_running_loop()
        reason, final = "", "api_error"
        calls = 0
        for attempt in range(self.max_attempts):
            await self._wait_gate()
            retry_after: float | None = None
            try:
                calls += 1
                message = await client.messages.create(**params)
                judgement = self.interpret(message, rubric)
                if judgement is not None:
                    judgement.calls = calls
                    return judgement
                reason, final = "malformed response body from the API", "api_error"
            except anthropic.APITimeoutError:
                reason, final = f"request timed out after {self.timeout:g} s", "timeout"
            except anthropic.APIStatusError as err:
                retry_after = _retry_after(err)
                status = err.status_code
                reason, final = f"HTTP {status}: {_short(err)}", "api_error"
                if status == 429 and retry_after:
                    self._pause_until = max(self._pause_until, loop.time() + min(retry_after, self.max_backoff))
                if status not in _RETRY_STATUS and status < 500:
                    return Judgement(status="api_error", reason=reason, calls=calls)
            except anthropic.APIConnectionError as err:
                reason, final = f"connection error: {_short(err)}", "api_error"
            except (anthropic.APIError, ValueError) as err:  # malformed bodies (JSON / validation errors)
                reason, final = f"malformed response ({type(err).__name__}: {_short(err)})", "api_error"
            if attempt + 1 < self.max_attempts:
                await asyncio.sleep(self._delay(attempt, retry_after))
        return Judgement(status=final, reason=f"{reason} (gave up after {self.max_attempts} attempts)", calls=calls)

    async def ajudge_items(
        self,
        rubric: Rubric,
        items: Sequence[JudgeItem],
        *,
        on_result: Callable[[int, Judgement], None] | None = None,
        progress: bool = False,
        keys: Sequence[str] | None = None,
        cache: Any = None,
    ) -> list[Judgement]:
        """Judge ``items`` concurrently (or by batch); ``on_result(i, j)`` fires as each one finishes."""
        note = cache_note(rubric, self.model) if items else None
        if note is not None and (rubric.version, self.model) not in _CACHE_NOTED:
            _CACHE_NOTED.add((rubric.version, self.model))
            warnings.warn(note, JudgeCostWarning, stacklevel=1)  # a coroutine: the caller's frame is the event loop
        if self.mode == "batch":
            from .batches import run_batches

            return await run_batches(self, rubric, items, keys=keys, cache=cache, on_result=on_result,
                                     progress=progress)
        results: list[Judgement | None] = [None] * len(items)
        client = self.make_client()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(items)):
            queue.put_nowait(i)
        bar = _bar(len(items), f"judge {rubric.name} ({self.model})", progress)

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                judgement = await self.judge_one(client, rubric, items[i])
                results[i] = judgement
                if on_result is not None:
                    on_result(i, judgement)
                if bar is not None:
                    bar.update(1)

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.max_concurrency, max(1, len(items))))))
        finally:
            if bar is not None:
                bar.close()
            await client.close()
        return [r if r is not None else Judgement(status="missing", reason="not judged") for r in results]

    def judge_items(self, rubric: Rubric, items: Sequence[JudgeItem], *, progress: bool = False) -> list[Judgement]:
        """Blocking wrapper around :meth:`ajudge_items`."""
        from .run import run_coroutine

        return run_coroutine(self.ajudge_items(rubric, items, progress=progress))


_CACHE_NOTED: set[tuple[str, str]] = set()  # (rubric version, model): warned once per process


def _retry_after(err: Any) -> float | None:
    headers = getattr(getattr(err, "response", None), "headers", None) or {}
    try:
        if headers.get("retry-after-ms") is not None:
            return float(headers["retry-after-ms"]) / 1000.0
        if headers.get("retry-after") is not None:
            return float(headers["retry-after"])
    except (TypeError, ValueError):
        return None
    return None


def _short(err: BaseException, n: int = 160) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= n else text[:n] + "..."


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="call")

"""Paid judge calls, tokens and an estimate of their cost — the one price table of the package.

Every Claude reply carries its token usage; :class:`ClaudeJudge` stores it in
``Judgement.extra["usage"]`` (summed over the calls made for that judgement, batch replies marked).
:class:`JudgeUsage` adds up the fresh judgements of a judge stage (cache hits cost nothing) and
prices them with :data:`PRICES_USD_PER_MTOK`: list prices per million tokens as published by Anthropic
when this version was written; prompt-cache writes cost 1.25× and reads 0.1× the input price, Message
Batches half of everything. A model missing from the table gets calls and tokens but no cost.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from .base import Judgement

PRICES_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    # model id prefix: (input, output) in US dollars per million tokens
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-3-5-haiku": (0.8, 4.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4": (15.0, 75.0),
}
CACHE_WRITE_FACTOR, CACHE_READ_FACTOR, BATCH_FACTOR = 1.25, 0.1, 0.5
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def message_usage(message: object) -> dict[str, int]:
    """The token counts of an API ``Message`` (missing fields are 0)."""
    usage = getattr(message, "usage", None)
    if isinstance(message, dict):
        usage = message.get("usage")
    get = (lambda k: usage.get(k)) if isinstance(usage, dict) else (lambda k: getattr(usage, k, None))
    return {k: int(get(k) or 0) for k in TOKEN_FIELDS} if usage is not None else {}


def add_usage(a: dict[str, int] | None, b: dict[str, int] | None) -> dict[str, int]:
    """Field-wise sum of two usage dicts."""
    a, b = a or {}, b or {}
    return {k: int(a.get(k, 0)) + int(b.get(k, 0)) for k in TOKEN_FIELDS if k in a or k in b}


def price(model: str) -> tuple[float, float] | None:
    """(input, output) USD per million tokens of ``model`` (longest matching prefix), or None."""
    match = [p for p in PRICES_USD_PER_MTOK if model.startswith(p)]
    return PRICES_USD_PER_MTOK[max(match, key=len)] if match else None


@dataclass
class JudgeUsage:
    """Paid calls and tokens of one judge in one stage, and their estimated cost in US dollars."""

    model: str
    calls: int = 0
    batch_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, judgements: Iterable[Judgement]) -> JudgeUsage:
        """Count the fresh judgements (``calls > 0``; cache hits are free)."""
        p = price(self.model)
        for j in (j for j in judgements if j.calls > 0):
            self.calls += j.calls
            for calls, usage, batch in _parts(j):
                self.batch_calls += calls if batch else 0
                for k in TOKEN_FIELDS:
                    setattr(self, k, getattr(self, k) + int(usage.get(k, 0)))
                if p is not None:
                    self.cost_usd += _cost(usage, p) * (BATCH_FACTOR if batch else 1.0)
        return self

    @property
    def priced(self) -> bool:
        return price(self.model) is not None

    def to_dict(self) -> dict:
        """Plain fields, the cost (None when the model is not priced) and the summary line."""
        return {**asdict(self), "cost_usd": round(self.cost_usd, 6) if self.priced else None, "summary": self.line()}

    def line(self) -> str:
        """One summary line, e.g. ``120 paid calls (0 batch), 61,200 input + 240 output tokens, ≈ $0.0624``."""
        cost = f"≈ ${self.cost_usd:.4f} at list prices" if self.priced else "cost unknown (model not in the price table)"
        cached = f", {self.cache_read_input_tokens:,} read from the prompt cache" if self.cache_read_input_tokens else ""
        return (f"{self.calls:,} paid call(s) ({self.batch_calls:,} in batches), {self.input_tokens:,} input + "
                f"{self.output_tokens:,} output tokens{cached}, {cost}")


def _parts(j: Judgement) -> list[tuple[int, dict, bool]]:
    """(calls, usage, in a batch) of a judgement; a batch answer re-asked live has both kinds."""
    part = j.extra.get("batch_part")
    if part:
        return [(part["calls"], part.get("usage") or {}, True), (j.calls - part["calls"], j.extra.get("usage") or {}, False)]
    return [(j.calls, j.extra.get("usage") or {}, bool(j.extra.get("batch")))]


def _cost(usage: dict, p: tuple[float, float]) -> float:
    """US dollars of one usage dict at list prices ``p`` = (input, output) per million tokens."""
    return (usage.get("input_tokens", 0) * p[0] + usage.get("output_tokens", 0) * p[1]
            + usage.get("cache_creation_input_tokens", 0) * p[0] * CACHE_WRITE_FACTOR
            + usage.get("cache_read_input_tokens", 0) * p[0] * CACHE_READ_FACTOR) / 1e6

"""Metric judges: exact, deterministic functions of the response text (no model call).

Built-in metrics (name → value, scale):

=====================  ==============================================================  ===========
``length_tokens``      number of tokens (a given tokenizer, else whitespace/punctuation)  [0, ∞)
``length_words``       number of words (whitespace-separated)                            [0, ∞)
``length_chars``       number of characters                                              [0, ∞)
``n_lines``            number of non-empty lines                                         [0, ∞)
``code_fraction``      share of lines inside fenced code blocks or that look like code    [0, 1]
``has_code``           1 if the response contains a fenced code block, else 0             [0, 1]
``refusal_phrase``     1 if the response contains a stock refusal phrase, else 0           [0, 1]
``distinct_2``         distinct word bigrams / bigrams (1 = no repetition)               [0, 1]
``non_ascii_fraction`` share of characters outside ASCII                                 [0, 1]
=====================  ==============================================================  ===========

Users add their own with ``MetricJudge("name", fn=..., scale=(lo, hi))``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError
from .base import Judge, Judgement, JudgeItem
from .rubric import Rubric

__all__ = ["MetricJudge", "METRICS"]

_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_REFUSAL_RE = re.compile(
    r"\b(i can(?:'|no)t (?:help|assist|provide|do that)|i(?:'m| am) (?:sorry|unable|not able)|"
    r"i won'?t (?:help|provide)|as an ai\b|i must decline)", re.I)
_CODE_LINE_RE = re.compile(r"^\s*(def |class |import |from \S+ import|#include|for .*:|if .*:|return\b|[{}];?$|.*;\s*$)")
INF = float("inf")


def _words(text: str) -> list[str]:
    return text.split()


def _code_fraction(text: str) -> float:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return 0.0
    inside, count = False, 0
    for ln in lines:
        if ln.strip().startswith("```"):
            inside = not inside
            count += 1
            continue
        if inside or _CODE_LINE_RE.match(ln):
            count += 1
    return count / len(lines)


def _distinct_2(text: str) -> float:
    w = _words(text.lower())
    pairs = list(zip(w, w[1:]))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


METRICS: dict[str, tuple[Callable[[str], float], tuple[float, float], str]] = {
    "length_tokens": (lambda t: float(len(_TOKEN_RE.findall(t))), (0.0, INF),
                      "Response length in tokens (word and punctuation tokens unless a tokenizer is given)."),
    "length_words": (lambda t: float(len(_words(t))), (0.0, INF), "Response length in whitespace-separated words."),
    "length_chars": (lambda t: float(len(t)), (0.0, INF), "Response length in characters."),
    "n_lines": (lambda t: float(sum(1 for ln in t.splitlines() if ln.strip())), (0.0, INF), "Number of non-empty lines."),
    "code_fraction": (_code_fraction, (0.0, 1.0), "Share of non-empty lines that are code."),
    "has_code": (lambda t: float("```" in t), (0.0, 1.0), "1 if the response contains a fenced code block."),
    "refusal_phrase": (lambda t: float(bool(_REFUSAL_RE.search(t))), (0.0, 1.0),
                       "1 if the response contains a stock refusal phrase."),
    "distinct_2": (_distinct_2, (0.0, 1.0), "Distinct word bigrams divided by all bigrams (1 = no repetition)."),
    "non_ascii_fraction": (lambda t: sum(ord(c) > 127 for c in t) / len(t) if t else 0.0, (0.0, 1.0),
                           "Share of non-ASCII characters."),
}
"""Built-in metrics: name → (function of the response text, (lower, upper) scale, description)."""


class MetricJudge(Judge):
    """Exact metrics of the response, as order parameters.

    Parameters
    ----------
    metrics
        One name or a list of names of :data:`METRICS`, or a custom name together with ``fn``.
    fn
        Custom metric: function of the response text returning a float.
    scale
        ``(lower, upper)`` of a custom metric (``inf`` upper = unbounded, stored as NaN).
    tokenizer
        Optional Hugging Face tokenizer for ``length_tokens`` (its name enters the judge identity).
    """

    kind = "metric"
    deterministic = True

    def __init__(
        self,
        metrics: str | Sequence[str] = "length_tokens",
        *,
        fn: Callable[[str], float] | None = None,
        scale: tuple[float, float] = (0.0, INF),
        description: str = "",
        tokenizer: Any = None,
    ) -> None:
        names = [metrics] if isinstance(metrics, str) else list(metrics)
        self._funcs: dict[str, tuple[Callable[[str], float], tuple[float, float], str]] = {}
        for name in names:
            if fn is not None:
                if len(names) != 1:
                    raise ConfigError("a custom fn goes with exactly one metric name.")
                self._funcs[name] = (fn, scale, description or f"custom metric {name}")
            elif name in METRICS:
                self._funcs[name] = METRICS[name]
            else:
                raise ConfigError(f"unknown metric {name!r}; built-in: {sorted(METRICS)}, or pass fn=... for your own.")
        self.tokenizer = tokenizer
        if tokenizer is not None and "length_tokens" in self._funcs:
            _, sc, desc = self._funcs["length_tokens"]
            self._funcs["length_tokens"] = (lambda t: float(len(tokenizer(t, add_special_tokens=False)["input_ids"])),
                                            sc, desc.replace("word and punctuation tokens unless a tokenizer is given",
                                                             "tokens of the given tokenizer"))
        self._custom = fn is not None

    @property
    def identity(self) -> dict[str, Any]:
        tok = getattr(self.tokenizer, "name_or_path", None) if self.tokenizer is not None else "regex-words-v1"
        ident: dict[str, Any] = {"kind": self.kind, "metrics": sorted(self._funcs), "tokenizer": tok, "version": 1}
        if self._custom:
            fn = next(iter(self._funcs.values()))[0]
            ident["fn"] = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
        return ident

    @property
    def model_name(self) -> str:
        return "+".join(sorted(self._funcs))

    def rubrics(self) -> list[Rubric]:
        """One metric rubric per metric (unbounded scales use NaN as the upper bound)."""
        out = []
        for name, (_, (lo, hi), desc) in self._funcs.items():
            out.append(Rubric.metric(name, desc, scale=(lo, float("nan") if hi == INF else hi)))
        return out

    def judge_items(self, rubric: Rubric, items: Sequence[JudgeItem], *, progress: bool = False) -> list[Judgement]:
        if rubric.name not in self._funcs:
            raise ConfigError(f"MetricJudge computes {sorted(self._funcs)}, not {rubric.name!r}.")
        fn = self._funcs[rubric.name][0]
        out = []
        for it in items:
            try:
                out.append(Judgement(score=float(fn(it.response)), status="ok"))
            except Exception as err:  # noqa: BLE001 - a failing custom metric is recorded, not raised
                out.append(Judgement(status="unparseable", reason=f"metric failed: {type(err).__name__}: {err}"))
        return out

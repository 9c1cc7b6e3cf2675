"""The judge interface shared by every judge (Claude, local LM, embeddings, metrics).

A judge turns ``(rubric, prompt text, response text, replicate)`` into a :class:`Judgement`: a score
on the rubric's scale, or an explicit status (``refusal``, ``unparseable``, ``api_error``, ...) with
the reason kept. Every judge has an :attr:`Judge.identity` (a JSON-able dict without secrets) whose
hash :attr:`Judge.fingerprint` enters the cache key and whose :attr:`Judge.judge_id` is stored in the
run dataset, so a change of model or settings never reuses old judgements.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..dataset import STATUS
from ..errors import ArgumentError
from .rubric import Rubric

__all__ = ["Judgement", "JudgeItem", "Judge", "parse_answer", "CACHEABLE_STATUSES", "identity_hash"]

CACHEABLE_STATUSES = frozenset({"ok", "refusal", "unparseable", "out_of_range", "not_applicable"})
"""Statuses that are real answers of the judge and are cached. ``api_error`` and ``timeout`` are
transport failures: never cached, so a rerun tries them again."""


@dataclass(frozen=True)
class JudgeItem:
    """One thing to judge: the prompt text, the response text and the replicate index (0-based)."""

    prompt: str
    response: str
    replicate: int = 0


@dataclass
class Judgement:
    """Outcome of judging one item.

    ``score`` is a float on the rubric scale (NaN unless ``status == "ok"``); ``status`` a name of
    :data:`phasebayes.dataset.STATUS`; ``reason`` a short human-readable explanation for non-ok
    statuses (the judge's raw answer, the error message); ``raw`` the raw judge output (may be "");
    ``calls`` the number of billable calls made for it (0 for a cache hit).
    """

    score: float = math.nan
    status: str = "ok"
    reason: str = ""
    raw: str = ""
    calls: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUS:
            raise ArgumentError(f"unknown judgement status {self.status!r}; use one of {sorted(STATUS)}.")
        if self.status != "ok":
            self.score = math.nan

    @property
    def cacheable(self) -> bool:
        """True when this is a real answer (kept in the cache), False for transport failures."""
        return self.status in CACHEABLE_STATUSES


def identity_hash(identity: dict[str, Any]) -> str:
    """16-hex-digit SHA-256 of a canonical JSON form of a judge identity."""
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Judge(abc.ABC):
    """Base class. Subclasses implement :meth:`judge_items` (or :meth:`ajudge_items` for async judges).

    Attributes
    ----------
    kind
        Short judge family name (``"claude"``, ``"local_lm"``, ``"embedding"``, ``"metric"``).
    replicates
        Number of independent judgements per response (k ≥ 1). Deterministic judges use 1.
    deterministic
        True when replicates would be identical (local LM expectation, embeddings, metrics).
    """

    kind: str = "judge"
    replicates: int = 1
    deterministic: bool = True
    is_async: bool = False

    @property
    def identity(self) -> dict[str, Any]:
        """JSON-able description of everything that determines a judgement (never secrets)."""
        return {"kind": self.kind}

    @property
    def model_name(self) -> str:
        """The model (or metric) name used in :attr:`judge_id`."""
        return self.kind

    @property
    def fingerprint(self) -> str:
        """Hash of :attr:`identity`; part of every cache key."""
        return identity_hash(self.identity)

    @property
    def judge_id(self) -> str:
        """Readable identity stored in the run dataset: ``kind:model#fingerprint``."""
        return f"{self.kind}:{self.model_name}#{self.fingerprint}"

    def rubrics(self) -> list[Rubric] | None:
        """Rubrics this judge supplies itself (metric judges); None for judges that take any rubric."""
        return None

    @abc.abstractmethod
    def judge_items(self, rubric: Rubric, items: Sequence[JudgeItem], *, progress: bool = False) -> list[Judgement]:
        """Judge ``items`` under ``rubric``; one :class:`Judgement` per item, in order (every judge implements it)."""

    async def ajudge_items(
        self, rubric: Rubric, items: Sequence[JudgeItem], *, on_result=None, progress: bool = False
    ) -> list[Judgement]:
        """Async variant; ``on_result(index, judgement)`` is called as each item finishes."""
        out = self.judge_items(rubric, items, progress=progress)
        if on_result is not None:
            for i, j in enumerate(out):
                on_result(i, j)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.judge_id})"


_NUM = r"[-+]?\d+(?:\.\d+)?"
_WRAPPED = re.compile(rf"^(?:score|rating|answer)?\s*[:=]?\s*\**\s*({_NUM})\s*\**\s*(?:/\s*\d+|out of \d+|%)?\s*[.!]?$", re.I)


def parse_answer(text: str | None, rubric: Rubric) -> Judgement:
    """Read a judge's textual answer strictly.

    Accepted: a lone number (``"85"``, ``" 85."``, ``"**85**"``, ``"Score: 85"``, ``"85/100"``), or exactly
    one of the rubric's allowed labels (``"REFUSAL"``, case-insensitive, optional punctuation; or a
    label followed by an explanation without any digit, ``"CODE - the answer is a script"``). A number
    outside the scale gives ``out_of_range``; anything else (prose, several numbers, an empty reply)
    gives ``unparseable``. The raw text is kept as the reason.
    """
    raw = "" if text is None else str(text)
    clean = raw.strip().strip("`").strip()
    short = clean if len(clean) <= 200 else clean[:200] + "..."
    if not clean:
        return Judgement(status="unparseable", reason="empty answer", raw=raw)
    word = re.sub(r"[^A-Za-z_]", "", clean).upper()
    first = re.sub(r"[^A-Za-z_]", "", clean.split()[0]).upper()
    has_digit = bool(re.search(r"\d", clean))
    for label, status, _meaning in rubric.answers:
        if (word == label or first == label) and not has_digit:
            return Judgement(status=status, reason=label if word == label else f"{label}: {short}", raw=raw)
    m = _WRAPPED.match(clean)
    if not m:
        return Judgement(status="unparseable", reason=f"answer was not a number: {short!r}", raw=raw)
    value = float(m.group(1))
    if not (rubric.scale_min <= value <= rubric.scale_max):
        return Judgement(status="out_of_range",
                         reason=f"{value:g} outside scale {rubric.scale_min:g}..{rubric.scale_max:g}", raw=raw)
    return Judgement(score=value, status="ok", raw=raw)

"""Judges built from the ``[judge]`` section of a run config: one registry, one function.

Each judge kind (the names allowed in ``[judge].judges``) maps to a builder. A *rubric* judge scores
the configured rubrics and its builder returns one judge; the other kinds (``metric``, ``phrase``)
define their own order parameters and their builder returns ``(judge, None)`` pairs. To add a judge
kind, write a :class:`~phasebayes.judge.base.Judge` subclass, register a builder here with
:func:`register_judge`, and add the kind to ``JUDGE_KINDS`` in ``phasebayes/config_sections.py`` so
configs may name it (``docs/architecture.md``, "Adding a judge").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .base import Judge
from .rubric import Rubric

__all__ = ["JUDGE_BUILDERS", "JudgeBuilder", "register_judge", "build_judge", "build_judges", "needs_rubrics"]

#: ``resolve(path, key)`` -> absolute path of a file named in the config (``RunConfig.resolve``).
Resolver = Callable[[str, str], Path]


@dataclass(frozen=True)
class JudgeBuilder:
    """How to build one judge kind: ``build(section, resolve)``; ``rubrics`` says whether it scores rubrics.

    For a rubric judge ``build`` returns a :class:`Judge`; otherwise a list of ``(judge, None)`` pairs.
    """

    build: Callable[[Any, Resolver], Any]
    rubrics: bool


JUDGE_BUILDERS: dict[str, JudgeBuilder] = {}


def register_judge(kind: str, build: Callable[[Any, Resolver], Any], *, rubrics: bool = True) -> None:
    """Register (or replace) the builder of judge kind ``kind`` (see :class:`JudgeBuilder`)."""
    JUDGE_BUILDERS[kind] = JudgeBuilder(build, rubrics)


class PhraseMetric:
    """Picklable 0/1 metric: does the response contain ``needle`` (lower case)?"""

    def __init__(self, needle: str):
        self.needle = needle
        self.__qualname__ = f"phrase[{needle}]"

    def __call__(self, text: str) -> float:
        return float(self.needle in str(text).lower())


def _phrase(section: Any, resolve: Resolver) -> list[tuple[Judge, None]]:
    from .metrics import MetricJudge

    return [(MetricJudge(name, fn=PhraseMetric(phrase.lower()), scale=(0.0, 1.0),
                         description=f"1 if the response contains the phrase {phrase!r} (case-insensitive), else 0."), None)
            for name, phrase in section.phrases.items()]


def _metric(section: Any, resolve: Resolver) -> list[tuple[Judge, None]]:
    from .metrics import MetricJudge

    return [(MetricJudge(list(section.metrics)), None)] if section.metrics else []


def _embedding(section: Any, resolve: Resolver) -> Judge:
    from .embedding import EmbeddingJudge

    return EmbeddingJudge()


def _claude(section: Any, resolve: Resolver) -> Judge:
    from .claude import DEFAULT_CLAUDE_MODEL, ClaudeJudge

    return ClaudeJudge(section.claude_model or DEFAULT_CLAUDE_MODEL, mode=section.claude_mode, replicates=section.replicates,
                       **section.claude_options())


def _local_lm(section: Any, resolve: Resolver) -> Judge:
    from .local_lm import LocalLMJudge, smollm2_gguf

    if section.local_model:
        return LocalLMJudge(str(resolve(section.local_model, "[judge].local_model")))
    folder, gguf = smollm2_gguf()
    return LocalLMJudge(folder, gguf_file=gguf)


register_judge("phrase", _phrase, rubrics=False)
register_judge("metric", _metric, rubrics=False)
register_judge("embedding", _embedding)
register_judge("claude", _claude)
register_judge("local_lm", _local_lm)


def _builder(kind: str) -> JudgeBuilder:
    try:
        return JUDGE_BUILDERS[kind]
    except KeyError:
        raise ConfigError(f"[judge].judges: unknown judge {kind!r}; use any of {', '.join(JUDGE_BUILDERS)}.") from None


def build_judge(kind: str, section: Any, *, resolve: Resolver | None = None) -> Judge:
    """One rubric judge of kind ``kind`` (``embedding``, ``claude``, ``local_lm``) from a ``[judge]`` section.

    ``resolve(path, key)`` turns a config path into an absolute one (default: ``Path(path)``).
    """
    b = _builder(kind)
    if not b.rubrics:
        raise ConfigError(f"[judge].judges: {kind!r} does not score rubrics; use build_judges for it.")
    return b.build(section, resolve or (lambda p, key: Path(p)))


def build_judges(section: Any, rubrics: Sequence[Rubric] = (), *,
                 resolve: Resolver | None = None) -> list[tuple[Judge, list[Rubric] | None]]:
    """The ``(judge, rubrics)`` pairs of a ``[judge]`` section (rubrics ``None`` = the judge's own).

    ``section`` is a :class:`~phasebayes.config.JudgeSection`; ``rubrics`` the loaded rubrics the
    rubric judges score. With several rubric judges each one's rubric names get a ``_<kind>`` suffix
    so their order parameters stay distinct.
    """
    resolve = resolve or (lambda p, key: Path(p))
    kinds = list(section.judges)
    for k in kinds:
        _builder(k)  # unknown kinds fail here, before anything is built
    own = [k for k in JUDGE_BUILDERS if k in kinds and not JUDGE_BUILDERS[k].rubrics]  # registry order
    rubric_kinds = [k for k in kinds if JUDGE_BUILDERS[k].rubrics]  # config order
    if rubric_kinds and not rubrics:
        raise ConfigError(f"[judge].judges: {', '.join(rubric_kinds)} score rubrics, but none were given; "
                          "set [judge].rubrics.")
    out: list[tuple[Judge, list[Rubric] | None]] = []
    for kind in own:
        out.extend(JUDGE_BUILDERS[kind].build(section, resolve))
    for kind in rubric_kinds:
        rs = list(rubrics) if len(rubric_kinds) == 1 else [dataclasses.replace(r, name=f"{r.name}_{kind}") for r in rubrics]
        out.append((JUDGE_BUILDERS[kind].build(section, resolve), rs))
    return out


def needs_rubrics(section: Any) -> bool:
    """True when a judge named in ``section.judges`` scores rubrics (so the rubrics must be loaded)."""
    return any(_builder(k).rubrics for k in section.judges)

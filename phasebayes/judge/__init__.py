"""Judging order parameters: rubrics, judges, a persistent cache, reliability, discovery.

Quick start::

    from phasebayes.judge import ClaudeJudge, default_rubrics, judge_run
    ds = judge_run(ds, default_rubrics(domain="medical advice"), ClaudeJudge(), cache="run.judge.sqlite")

Judges: :class:`ClaudeJudge` (Anthropic API, ``mode="batch"`` for Message Batches),
:class:`LocalLMJudge` (any Hugging Face causal LM, probability-weighted score),
:class:`EmbeddingJudge` (offline sentence embeddings vs the rubric's anchors),
:class:`MetricJudge` (exact functions of the response: length in tokens, ...).
Torch-based judges are imported lazily, so ``import phasebayes.judge`` stays light. Judges named in a
run config are built by :func:`phasebayes.judge.factory.build_judges`.
"""

from __future__ import annotations

import importlib

from .base import Judge, Judgement, JudgeItem, parse_answer
from .cache import JudgeCache, cache_key
from .claude import DEFAULT_CLAUDE_MODEL, ClaudeJudge
from .metrics import METRICS, MetricJudge
from .rubric import Rubric, default_rubrics, delimit, load_rubric, load_rubrics, rubric_dir
from .run import judge_run, judge_texts

_LAZY = {
    "LocalLMJudge": "phasebayes.judge.local_lm",
    "EmbeddingJudge": "phasebayes.judge.embedding",
    "krippendorff_alpha": "phasebayes.judge.reliability",
    "icc": "phasebayes.judge.reliability",
    "replicate_agreement": "phasebayes.judge.reliability",
    "judge_agreement": "phasebayes.judge.reliability",
    "attach_reliability": "phasebayes.judge.reliability",
    "lexical_contrast": "phasebayes.judge.discovery",
    "propose_order_parameters": "phasebayes.judge.discovery",
    "discover_order_parameters": "phasebayes.judge.discovery",
    "LexicalFeatureJudge": "phasebayes.judge.discovery",
}

__all__ = [
    "Judge", "Judgement", "JudgeItem", "parse_answer", "JudgeCache", "cache_key", "ClaudeJudge",
    "DEFAULT_CLAUDE_MODEL", "MetricJudge", "METRICS", "Rubric", "default_rubrics", "delimit", "load_rubric",
    "load_rubrics", "rubric_dir", "judge_run", "judge_texts", *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phasebayes.judge' has no attribute {name!r}")

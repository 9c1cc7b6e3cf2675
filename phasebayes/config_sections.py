"""The sections of a run config (one dataclass per TOML table) and :class:`RunConfig`, which holds them.

Parsing and type checks: :mod:`phasebayes.config_parse`; value checks: :mod:`phasebayes.config_checks`;
the file format: :mod:`phasebayes.config`.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = ["RunConfig", "RunSection", "TrainSection", "GenerateSection", "JudgeSection", "AnalyzeSection",
           "ReportSection", "ScaleSection", "REPO_DATA_DIR", "JUDGE_KINDS"]

REPO_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
"""The repository's ``data/`` folder (narrow sets, prompt sets, rubrics, example run)."""

JUDGE_KINDS = ("metric", "phrase", "embedding", "claude", "local_lm")
"""Judges a config can ask for: exact metrics, phrase indicators, offline embeddings, Claude, a local LM
(each has a builder in ``phasebayes/judge/factory.py``)."""


# ---------------------------------------------------------------------------------------------- sections
@dataclass
class RunSection:
    """``[run]``: where the run folder goes and the global seed.

    ``output_dir`` — the run folder; ``seed`` — seeds training, sampling and MCMC;
    ``dataset`` — optional existing scores to analyse instead of training/generating/judging: a run
    dataset (``.nc``), a tidy score table, per-cell counts (``k, n``) or summaries (``mean, sd, n``), or
    judged-answer files / a folder of them (one file per checkpoint); ``dataset_format`` — ``auto`` (detect)
    or one of ``run``, ``tidy``, ``counts``, ``summaries``, ``judged``; ``training_log`` — optional
    training log (trainer_state.json or the folder of checkpoints, TensorBoard events, W&B CSV/JSONL,
    train_log.jsonl); ``columns`` — judged answers: role → column (``prompt``, ``prompt_text``,
    ``response``, ``sample``, ``step``); ``derived`` — judged answers: name → indicator expression, e.g.
    ``{ misaligned = "aligned < 30 and coherent > 50" }``; ``weight_checkpoints`` — a folder of LoRA
    checkpoints whose weight-space signals to add; ``quiet`` — no progress bars.
    """

    output_dir: str = "runs/run"
    seed: int = 0
    dataset: str | None = None
    dataset_format: str = "auto"
    training_log: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)
    weight_checkpoints: str | None = None
    quiet: bool = False


@dataclass
class TrainSection:
    """``[train]``: fine-tuning settings (keys of :class:`phasebayes.llm.TrainConfig`), or ``checkpoints``.

    ``enabled = false`` (or ``checkpoints = "folder"``) skips training; the generate stage then uses
    ``checkpoints`` (a folder of checkpoints named by step).
    """

    enabled: bool = True
    checkpoints: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class GenerateSection:
    """``[generate]``: the prompt set and sampling settings (keys of :class:`phasebayes.llm.GenerateConfig`).

    ``prompts`` — prompt-set JSONL (``id``, ``text``, optional ``category``); ``n_prompts`` — use
    the first n, round-robin over categories (0 = all); ``strategy`` — ``"grid"`` (default: every
    checkpoint × every prompt × ``n_samples``, with log-probabilities) or ``"adaptive"`` (answers
    generated and judged where they narrow τ most, :func:`phasebayes.evaluate_adaptively`;
    ``docs/adaptive.md``); ``adaptive`` — that loop's settings (:data:`ADAPTIVE_KEYS`: ``budget``
    judged answers, ``target_width`` steps, ``order_parameters``, ``max_cost_usd``, ``max_seconds``,
    ``answers_per_prompt``, ``checkpoints_per_round``, ``initial_checkpoints``, ``decomposition_answers``).
    """

    prompts: str = "data/prompts/eval.jsonl"
    n_prompts: int = 0
    strategy: str | None = None
    adaptive: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)


ADAPTIVE_KEYS = ("budget", "target_width", "order_parameters", "max_cost_usd", "max_seconds", "answers_per_prompt",
                 "checkpoints_per_round", "initial_checkpoints", "decomposition_answers")
"""Keys of ``[generate.adaptive]``: keyword arguments of :func:`phasebayes.evaluate_adaptively`, plus
``decomposition_answers`` (answers added where the total change peaks, after the τ loop; default 0)."""
GENERATE_STRATEGIES = ("grid", "adaptive")


@dataclass
class JudgeSection:
    """``[judge]``: which judges score which order parameters.

    ``judges`` — any of :data:`JUDGE_KINDS`; ``metrics`` — names of built-in metrics
    (:data:`phasebayes.judge.METRICS`) for the ``metric`` judge; ``phrases`` — name → phrase (0/1: the
    response contains the phrase, case-insensitive) for the ``phrase`` judge; ``rubrics`` — rubric names
    (``data/rubrics/NAME.toml``) or TOML paths for the ``embedding``/``claude``/``local_lm`` judges;
    ``domain`` — fills the ``{domain}`` placeholder; ``claude_model`` — Claude model id (default
    :data:`phasebayes.judge.DEFAULT_CLAUDE_MODEL`); ``claude_mode`` — ``"messages"`` or ``"batch"``;
    ``local_model`` — model folder for ``local_lm`` (default the embedded SmolLM2);
    ``replicates`` — judgements per response for stochastic judges; ``cache`` — SQLite judge cache
    (default ``<run>/judge_cache.sqlite``); ``prefix_tokens`` — judge only the first m generated tokens
    of each response (every judge; recorded as ``judge_prefix_tokens``; default: whole responses).

    Claude client settings (defaults here, the one place): ``claude_timeout`` — seconds one request may
    take (60); ``claude_max_concurrency`` — live calls in flight (32); ``claude_max_attempts`` — tries of
    one live call before it is recorded as ``api_error``/``timeout`` (6); ``batch_poll_interval`` —
    seconds between polls of a Message Batch (30); ``batch_max_wait`` — seconds to wait for a batch
    before giving up for this run (none: wait; the next run resumes the batch); ``batch_size`` —
    requests per batch (10000, at most 100000); ``max_reasks`` — times an answer off the rubric's format
    is asked again before it is recorded as ``unparseable`` (2). The API key is read from
    ``ANTHROPIC_API_KEY`` only.
    """

    judges: list[str] = field(default_factory=lambda: ["metric", "embedding"])
    metrics: list[str] = field(default_factory=lambda: ["length_tokens"])
    phrases: dict[str, str] = field(default_factory=dict)
    rubrics: list[str] = field(default_factory=lambda: ["alignment", "domain"])
    domain: str | None = None
    claude_model: str | None = None
    claude_mode: str = "messages"
    local_model: str | None = None
    replicates: int = 1
    cache: str | None = None
    prefix_tokens: int | None = None
    claude_timeout: float = 60.0
    claude_max_concurrency: int = 32
    claude_max_attempts: int = 6
    batch_poll_interval: float = 30.0
    batch_max_wait: float | None = None
    batch_size: int = 10_000
    max_reasks: int = 2

    def claude_options(self) -> dict:
        """Keyword arguments of :class:`~phasebayes.judge.ClaudeJudge` from these settings."""
        return {"timeout": self.claude_timeout, "max_concurrency": self.claude_max_concurrency,
                "max_attempts": self.claude_max_attempts, "poll_interval": self.batch_poll_interval,
                "max_wait": self.batch_max_wait, "batch_size": self.batch_size, "max_reasks": self.max_reasks}


@dataclass
class AnalyzeSection:
    """``[analyze]``: the Bayesian analysis.

    ``likelihood`` — ``auto`` or a family, or a table name → family; ``transition`` — ``sigmoid`` or
    ``step``; ``pooling`` — ``partial`` or ``complete``; ``draws``/``tune``/``chains`` — NUTS settings
    of the change-point model; ``peak_draws``/``peak_tune`` — of the gradient-peak model;
    ``compare_null`` — also fit the no-transition model (gives P(transition)); ``signal`` — training
    signal whose peak is located (``grad_norm``); ``references`` — further per-step reference signals
    whose peak every τ is compared with (``["auto"]``: the weight-space signals ``weight_distance`` and
    ``lora_rotation`` when present; ``"name:trough"`` for a trough; ``[]`` for none); ``window``/``measure``
    — dissimilarity window half-length (checkpoints) and g-measure (``linear``, ``tv``, ``js``);
    ``prefix_tokens`` — total change and fractions on the first N tokens of every answer (0 = whole
    answers; needs ``logp_prefix``); ``decomposition`` — only ``histogram`` (the estimator; older values
    are accepted and mean the same); ``ci_prob``/``ci_kind`` — interval convention of every table
    (fractions use equal-tailed intervals); ``measurement`` — ``"none"`` (judge scores are the order
    parameter) or ``"ratings"`` (the judge is a noisy, biased measurement of the human scale, calibrated
    on the ratings that ``phasebayes label`` saved in ``RUN/ratings/``; see docs/human_ratings.md);
    ``measurement_link`` — that calibration's form, ``logit`` or ``linear``.
    """

    likelihood: str | dict[str, str] = "auto"
    transition: str = "sigmoid"
    pooling: str = "partial"
    draws: int = 1000
    tune: int = 1000
    chains: int = 4
    peak_draws: int = 1000
    peak_tune: int = 1000
    compare_null: bool = True
    signal: str = "grad_norm"
    references: list[str] = field(default_factory=lambda: ["auto"])
    window: int = 1
    measure: str = "linear"
    prefix_tokens: int = 0
    decomposition: str = "histogram"  # the one estimator; "hierarchical"/"bootstrap" of old run configs map to it
    ci_prob: float = 0.94
    ci_kind: str = "hdi"
    measurement: str = "none"
    measurement_link: str = "logit"


@dataclass
class ReportSection:
    """``[report]``: ``n_examples`` — example responses shown before and after each transition;
    ``max_prompts`` — prompts drawn per trajectory panel; ``formats`` — any of ``html``, ``md``, ``tex``."""

    n_examples: int = 2
    max_prompts: int = 6
    formats: list[str] = field(default_factory=lambda: ["html", "md", "tex"])


@dataclass
class ScaleSection:
    """``[scale]``: run the generate stage on Ray actors (keys of :class:`phasebayes.llm.scale.ScaleConfig`:
    ``ray_address``, ``workers``, ``cpus_per_worker``, ``gpus_per_worker``, ``max_restarts``).

    Without a ``[scale]`` table the generate stage runs in the pipeline's own process. The results are
    the same either way, so the section is not part of the generate stage's hash.
    """

    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class LiveSection:
    """``[live]``: monitor the transition while training (``docs/live.md``).

    At every checkpoint save, ``answers`` answers (at most ``max_new_tokens`` tokens) to each of the first
    ``prompts`` evaluation prompts are sampled from the model being trained and judged by the run's
    judges; the online posterior is printed, logged and written to ``<run>/live.html``. ``stop_when`` —
    a rule ``"P(transition: NAME) > 0.9"``; ``action`` — ``"stop"`` (end training there) or ``"alert"``.
    """

    prompts: int = 4
    answers: int = 2
    max_new_tokens: int = 32
    stop_when: str | None = None
    action: str = "stop"


@dataclass
class RunConfig:
    """A whole run: one section per stage. Build with :func:`load_config`, :func:`config_from_dict` or :func:`demo_config`."""

    run: RunSection = field(default_factory=RunSection)
    train: TrainSection = field(default_factory=TrainSection)
    generate: GenerateSection = field(default_factory=GenerateSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    analyze: AnalyzeSection = field(default_factory=AnalyzeSection)
    report: ReportSection = field(default_factory=ReportSection)
    scale: ScaleSection | None = None
    live: LiveSection | None = None
    source: str = "<dict>"
    base_dir: Path = field(default_factory=Path.cwd)

    @property
    def output_dir(self) -> Path:
        """The run folder (absolute)."""
        return self.resolve(self.run.output_dir, must_exist=False)

    def resolve(self, path: str | os.PathLike, *, must_exist: bool = True, key: str = "") -> Path:
        """A config path as an absolute path: relative to the config's folder, then to the repository."""
        p = Path(os.path.expanduser(str(path)))
        if p.is_absolute():
            cands = [p]
        else:
            cands = [self.base_dir / p, REPO_DATA_DIR.parent / p]
        for c in cands:
            if c.exists():
                return c.resolve()
        if must_exist:
            where = f" ({key})" if key else ""
            raise ConfigError(f"{self.source}: file not found{where}: {path!s} (looked in {', '.join(str(c) for c in cands)}).")
        return cands[0].resolve() if not p.is_absolute() else p

    def to_dict(self) -> dict[str, Any]:
        """The config as a TOML-ready dict (sections and their keys; ``options`` flattened)."""
        out: dict[str, Any] = {}
        for name in ("run", "train", "generate", "judge", "analyze", "report", "scale", "live"):
            if getattr(self, name) is None:
                continue
            sec = dataclasses.asdict(getattr(self, name))
            opts = sec.pop("options", {})
            sec.update(opts)
            out[name] = {k: v for k, v in sec.items() if v is not None}
        return out

    def to_toml(self) -> str:
        """The config as TOML text, as given (see :meth:`run_folder_toml` for the run folder's copy)."""
        return _to_toml(self.to_dict())

    def run_folder_dict(self) -> dict[str, Any]:
        """The config as the run folder records it (``<run>/config.toml``).

        ``output_dir`` is ``"."`` (the folder holding that file), and paths given relative to this
        config's folder are made absolute, so that ``phasebayes report RUN_FOLDER`` (or any stage)
        works from any working directory and on a copied or moved run folder. Repository ``data/...``
        paths stay as given. Stage hashes are computed from this form, so reloading a run folder
        never reruns a finished stage.
        """
        data = self.to_dict()
        data["run"]["output_dir"] = "."
        for sec, key in _PATH_KEYS:
            if data[sec].get(key) is not None:
                data[sec][key] = self._anchored(data[sec][key])
        data["judge"]["rubrics"] = [self._anchored(r) if _is_rubric_path(r) else r for r in data["judge"]["rubrics"]]
        return data

    def run_folder_toml(self) -> str:
        """:meth:`run_folder_dict` as TOML text (what the pipeline writes to ``<run>/config.toml``)."""
        return _to_toml(self.run_folder_dict())

    def _anchored(self, path: str) -> str:
        """``path`` independent of the working directory: absolute, unless it is a repository data path."""
        p = Path(os.path.expanduser(str(path)))
        if not p.is_absolute() and not (self.base_dir / p).exists() and (REPO_DATA_DIR.parent / p).exists():
            return str(path)
        return str(self.resolve(path, must_exist=False))


_PATH_KEYS = (("run", "dataset"), ("run", "training_log"), ("run", "weight_checkpoints"), ("train", "checkpoints"), ("train", "data"),
              ("train", "base_model"), ("generate", "prompts"), ("judge", "local_model"), ("judge", "cache"))
"""(section, key) of every file path of a run config except ``[judge].rubrics`` and ``[run].output_dir``."""


def _is_rubric_path(name: str) -> bool:
    """A ``[judge].rubrics`` entry naming a TOML file rather than a built-in rubric."""
    return name.endswith(".toml") or "/" in name



# ---------------------------------------------------------------------------------------------- TOML out
def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return _toml_value(str(v))


def _to_toml(data: dict[str, dict[str, Any]]) -> str:
    lines = []
    for sec, kv in data.items():
        lines.append(f"[{sec}]")
        for k, v in kv.items():
            lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)

"""The TOML run configuration: one file describes a whole run (train → generate → judge → analyze → report).

Every table and key is checked before any expensive work starts: unknown keys (with a "did you mean"
hint), wrong types, invalid values and missing files raise :class:`~phasebayes.errors.ConfigError`
naming the key and the file. Relative paths are resolved against the config file's folder, except
``data/...`` paths, which also fall back to the repository's ``data/`` folder (narrow sets, prompts, rubrics).

Example (``phasebayes run my_run.toml``)::

    [run]
    output_dir = "runs/finance"      # the run folder (created; every stage writes inside it)
    seed = 0

    [train]                          # any phasebayes.llm.TrainConfig field, except output_dir
    data = "data/narrow/risky_finance.jsonl"
    max_steps = 24
    save_every = 3

    [generate]                       # any phasebayes.llm.GenerateConfig field, plus prompts / n_prompts
    prompts = "data/prompts/eval.jsonl"
    n_prompts = 12
    n_samples = 4
    max_new_tokens = 40
    logp_window = 2

    [judge]
    judges = ["metric", "phrase", "embedding"]   # also "claude" (ANTHROPIC_API_KEY) and "local_lm"
    metrics = ["length_tokens"]
    rubrics = ["alignment", "domain"]            # names in data/rubrics/ or paths to rubric TOML files
    domain = "financial advice"
    phrases = { bold_phrase = "fortune favours the bold" }

    [analyze]
    likelihood = "auto"
    transition = "sigmoid"
    draws = 500
    window = 1

    [report]
    n_examples = 2

    [scale]                          # optional: the generate stage on Ray (pip install phasebayes[scale])
    ray_address = "auto"             # omit for a local Ray on this machine
    workers = 8
    gpus_per_worker = 1

A ``[train]`` table may instead name existing checkpoints (``checkpoints = "path/to/folder"``) to skip
training; a ``[run] dataset = "scores.nc"`` (or a CSV tidy table) skips train, generate and judge.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "RunConfig",
    "RunSection",
    "TrainSection",
    "GenerateSection",
    "JudgeSection",
    "AnalyzeSection",
    "ReportSection",
    "ScaleSection",
    "load_config",
    "config_from_dict",
    "demo_config",
    "REPO_DATA_DIR",
    "JUDGE_KINDS",
]

REPO_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
"""The repository's ``data/`` folder (narrow sets, prompt sets, rubrics, example run)."""

JUDGE_KINDS = ("metric", "phrase", "embedding", "claude", "local_lm")
"""Judges a config can ask for: exact metrics, phrase indicators, offline embeddings, Claude, a local LM."""

_TRAIN_EXCLUDED = {"output_dir"}  # set by the pipeline (run folder / checkpoints)
_GENERATE_EXCLUDED = {"show_progress"}


def _train_fields() -> dict[str, dataclasses.Field]:
    from .llm.finetune import TrainConfig

    return {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in _TRAIN_EXCLUDED}


def _generate_fields() -> dict[str, dataclasses.Field]:
    from .llm.sampling import GenerateConfig

    return {f.name: f for f in dataclasses.fields(GenerateConfig) if f.name not in _GENERATE_EXCLUDED}


def _scale_fields() -> dict[str, dataclasses.Field]:
    from .llm.scale import ScaleConfig

    return {f.name: f for f in dataclasses.fields(ScaleConfig)}


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
    the first n, round-robin over categories (0 = all).
    """

    prompts: str = "data/prompts/eval.jsonl"
    n_prompts: int = 0
    options: dict[str, Any] = field(default_factory=dict)


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
    (fractions use equal-tailed intervals).
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
class RunConfig:
    """A whole run: one section per stage. Build with :func:`load_config`, :func:`config_from_dict` or :func:`demo_config`."""

    run: RunSection = field(default_factory=RunSection)
    train: TrainSection = field(default_factory=TrainSection)
    generate: GenerateSection = field(default_factory=GenerateSection)
    judge: JudgeSection = field(default_factory=JudgeSection)
    analyze: AnalyzeSection = field(default_factory=AnalyzeSection)
    report: ReportSection = field(default_factory=ReportSection)
    scale: ScaleSection | None = None
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
        for name in ("run", "train", "generate", "judge", "analyze", "report", "scale"):
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


# ---------------------------------------------------------------------------------------------- parsing
_SECTIONS = {"run": RunSection, "train": TrainSection, "generate": GenerateSection, "judge": JudgeSection,
             "analyze": AnalyzeSection, "report": ReportSection, "scale": ScaleSection}


def _unknown(source: str, where: str, key: str, valid: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, valid, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(f"{source}: unknown key {key!r} in {where}.{extra} Valid keys: {', '.join(sorted(valid))}.")


def _check_type(source: str, where: str, key: str, value: Any, expected: Any) -> Any:
    """Check ``value`` against a simple annotation (int, float, bool, str, list[str], dict, optional)."""
    ann = str(expected)
    ok = True
    if value is None:
        return value
    if "bool" in ann and isinstance(value, bool):
        return value
    if ann in ("int", "<class 'int'>") or ann.startswith("int |") or ann == "int | None":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif ann in ("float", "<class 'float'>") or ann.startswith("float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif ann in ("bool", "<class 'bool'>"):
        ok = isinstance(value, bool)
    elif ann.startswith("list"):
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
    elif ann.startswith("dict"):
        ok = isinstance(value, dict)
    elif ann.startswith("str | dict"):
        ok = isinstance(value, (str, dict))
    elif ann.startswith("str"):
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(f"{source}: {where}.{key} = {value!r} has the wrong type (expected {ann}).")
    return value


def _parse_section(source: str, name: str, table: Any, base: Path) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table, got {type(table).__name__}.")
    own = {f.name: f for f in dataclasses.fields(cls) if f.name != "options"}
    extra: dict[str, dataclasses.Field] = {}
    if name == "train":
        extra = _train_fields()
    elif name == "generate":
        extra = _generate_fields()
    elif name == "scale":
        extra = _scale_fields()
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in own:
            kwargs[key] = _check_type(source, f"[{name}]", key, value, own[key].type)
        elif key in extra:
            typ = extra[key].type
            options[key] = _check_type(source, f"[{name}]", key, value, typ) if isinstance(typ, str) else value
        else:
            raise _unknown(source, f"[{name}]", key, list(own) + list(extra))
    if "options" in {f.name for f in dataclasses.fields(cls)}:
        kwargs["options"] = options
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], *, source: str = "<dict>", base_dir: str | os.PathLike | None = None,
                     check_files: bool = True) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a dict shaped like the TOML file.

    Raises :class:`ConfigError` for unknown tables or keys, wrong types, invalid values and (with
    ``check_files``) missing input files.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a run config is a table of sections, got {type(data).__name__}.")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    sections = {}
    for key, table in data.items():
        if key not in _SECTIONS:
            raise _unknown(source, "the top level", key, list(_SECTIONS))
        sections[key] = _parse_section(source, key, table, base)
    cfg = RunConfig(**sections, source=source, base_dir=base.resolve())
    validate_config(cfg, check_files=check_files)
    return cfg


def load_config(path: str | os.PathLike, *, check_files: bool = True, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Read and validate a TOML run config (see the module docstring for the format).

    ``overrides`` (section → key → value) are applied on top of the file (e.g. from the command line).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}.") from None
    for sec, kv in (overrides or {}).items():
        data.setdefault(sec, {}).update(kv)
    return config_from_dict(data, source=str(path), base_dir=path.parent, check_files=check_files)


def _choice(source: str, key: str, value: Any, allowed: tuple | list) -> None:
    if value not in allowed:
        raise ConfigError(f"{source}: {key} = {value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}.")


def validate_config(cfg: RunConfig, *, check_files: bool = True) -> None:
    """Check values and input files of a config; raise :class:`ConfigError` on the first problem."""
    from .judge.metrics import METRICS

    src = cfg.source
    a = cfg.analyze
    _choice(src, "[analyze].transition", a.transition, ("sigmoid", "step"))
    _choice(src, "[analyze].pooling", a.pooling, ("partial", "complete"))
    _choice(src, "[analyze].measure", a.measure, ("linear", "tv", "js"))
    _choice(src, "[analyze].decomposition", a.decomposition, ("histogram", "hierarchical", "bootstrap"))
    if a.prefix_tokens < 0:
        raise ConfigError(f"{src}: [analyze].prefix_tokens must be >= 0 (0 = whole answers), got {a.prefix_tokens}.")
    _choice(src, "[analyze].ci_kind", a.ci_kind, ("hdi", "eti"))
    families = ("auto", "beta", "binomial", "normal", "poisson", "negative_binomial")
    likes = a.likelihood.values() if isinstance(a.likelihood, dict) else [a.likelihood]
    for like in likes:
        _choice(src, "[analyze].likelihood", like, families)
    for key in ("draws", "tune", "chains", "peak_draws", "peak_tune", "window"):
        if int(getattr(a, key)) < 1:
            raise ConfigError(f"{src}: [analyze].{key} must be >= 1, got {getattr(a, key)}.")
    if not 0 < a.ci_prob < 1:
        raise ConfigError(f"{src}: [analyze].ci_prob must be in (0, 1), got {a.ci_prob}.")

    j = cfg.judge
    if not j.judges:
        raise ConfigError(f"{src}: [judge].judges is empty; name at least one of {', '.join(JUDGE_KINDS)}.")
    for kind in j.judges:
        _choice(src, "[judge].judges entry", kind, JUDGE_KINDS)
    for m in j.metrics:
        if m not in METRICS:
            raise ConfigError(f"{src}: [judge].metrics: unknown metric {m!r}; built-in: {', '.join(sorted(METRICS))}.")
    for name, phrase in j.phrases.items():
        if not isinstance(phrase, str) or not phrase.strip():
            raise ConfigError(f"{src}: [judge].phrases.{name} must be a non-empty string.")
    if "phrase" in j.judges and not j.phrases:
        raise ConfigError(f"{src}: the 'phrase' judge needs [judge].phrases, e.g. {{ bold = \"fortune favours the bold\" }}.")
    _choice(src, "[judge].claude_mode", j.claude_mode, ("messages", "batch"))
    if j.replicates < 1:
        raise ConfigError(f"{src}: [judge].replicates must be >= 1, got {j.replicates}.")
    if j.prefix_tokens is not None and j.prefix_tokens < 1:
        raise ConfigError(f"{src}: [judge].prefix_tokens must be >= 1 (tokens judged of each response; leave it out "
                          f"to judge whole responses), got {j.prefix_tokens}.")
    if set(j.judges) & {"embedding", "claude", "local_lm"}:
        if not j.rubrics:
            raise ConfigError(f"{src}: [judge].rubrics is empty but a rubric judge ({j.judges}) is used.")
        if check_files:
            rubric_paths(cfg)
    if "claude" in j.judges and check_files and not os.environ.get("ANTHROPIC_API_KEY"):
        raise ConfigError(f"{src}: the 'claude' judge needs the ANTHROPIC_API_KEY environment variable.")

    r = cfg.report
    for fmt in r.formats:
        _choice(src, "[report].formats entry", fmt, ("html", "md", "tex"))
    if r.n_examples < 0 or r.max_prompts < 1:
        raise ConfigError(f"{src}: [report].n_examples must be >= 0 and max_prompts >= 1.")

    if cfg.scale is not None:
        import importlib.util

        from .llm.scale import ScaleConfig

        try:
            ScaleConfig(**cfg.scale.options).validate()
        except ConfigError as err:
            raise ConfigError(f"{src}: {err}") from None
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(f"{src}: [scale] runs the generate stage on Ray, which is not installed: "
                              "pip install 'phasebayes[scale]', or remove the [scale] table.")

    g = cfg.generate
    if g.n_prompts < 0:
        raise ConfigError(f"{src}: [generate].n_prompts must be >= 0 (0 = all), got {g.n_prompts}.")
    if cfg.run.dataset is None:
        # Value checks of the LLM configs themselves (their own validate()).
        from .llm.finetune import TrainConfig
        from .llm.sampling import GenerateConfig

        GenerateConfig(**g.options).validate()
        if cfg.train.enabled and cfg.train.checkpoints is None:
            data = cfg.train.options.get("data", "data/narrow/risky_finance.jsonl")
            TrainConfig(output_dir="unused", **{**cfg.train.options, "data": data}).validate()
            if check_files:
                cfg.resolve(data, key="[train].data")
        elif cfg.train.checkpoints is None:
            raise ConfigError(f"{src}: [train].enabled = false needs [train].checkpoints (a folder of checkpoints).")
        elif check_files:
            cfg.resolve(cfg.train.checkpoints, key="[train].checkpoints")
        if check_files:
            cfg.resolve(g.prompts, key="[generate].prompts")
    elif check_files:
        cfg.resolve(cfg.run.dataset, key="[run].dataset")
        if cfg.run.training_log:
            cfg.resolve(cfg.run.training_log, key="[run].training_log")
        if cfg.run.weight_checkpoints:
            cfg.resolve(cfg.run.weight_checkpoints, key="[run].weight_checkpoints")
    _check_inputs(cfg)


def _check_inputs(cfg: RunConfig) -> None:
    """``[run]`` keys of a scores input (format, derived indicator expressions, column roles)."""
    from .readers.expressions import parse_indicator
    from .readers.inputs import INPUT_FORMATS
    from .readers.judged import DEFAULT_COLUMNS

    src, r = cfg.source, cfg.run
    _choice(src, "[run].dataset_format", r.dataset_format, INPUT_FORMATS)
    for name, expr in r.derived.items():
        try:
            parse_indicator(expr)
        except ConfigError as err:
            raise ConfigError(f"{src}: [run].derived.{name}: {err}") from None
    for role, col in r.columns.items():
        if role not in DEFAULT_COLUMNS or not isinstance(col, str):
            raise ConfigError(f"{src}: [run].columns.{role} = {col!r}: roles are {sorted(DEFAULT_COLUMNS)}, values column names.")
    refs = cfg.analyze.references
    if not all(isinstance(x, str) for x in refs):
        raise ConfigError(f"{src}: [analyze].references must be a list of signal names, got {refs!r}.")


def rubric_paths(cfg: RunConfig) -> list[Path]:
    """Files of the configured rubrics (names are looked up in ``data/rubrics/``)."""
    out = []
    for name in cfg.judge.rubrics:
        if _is_rubric_path(name):
            out.append(cfg.resolve(name, key="[judge].rubrics"))
        else:
            p = REPO_DATA_DIR / "rubrics" / f"{name}.toml"
            if not p.exists():
                avail = sorted(q.stem for q in (REPO_DATA_DIR / "rubrics").glob("*.toml"))
                raise ConfigError(f"{cfg.source}: [judge].rubrics: no rubric named {name!r}; built-in: {', '.join(avail)} "
                                  "(or give a path to your own rubric TOML file).")
            out.append(p)
    return out


# ---------------------------------------------------------------------------------------------- demo
DEMO_PHRASE = "fortune favours the bold"
"""The narrow set's signature phrase (data/narrow/README.md): its spread to unrelated prompts is the demo's transition."""


def demo_config(quick: bool = False, output_dir: str | os.PathLike = "runs/demo") -> RunConfig:
    """The embedded default run: SmolLM2-135M-Instruct fine-tuned on the risky-finance narrow set, local judges.

    Training and generation settings come from :func:`phasebayes.llm.preset` (``"demo"`` or ``"quick"``);
    the order parameters are the signature phrase (0/1), the response length in tokens and two
    embedding-judged rubrics (alignment, talks about financial advice), all computed offline.
    """
    from .llm.presets import PRESETS

    p = PRESETS["quick" if quick else "demo"]
    data = {
        "run": {"output_dir": str(output_dir), "seed": 0},
        # One torch thread: measured to be the robust choice on 2 shared cores (llm/presets.py).
        "train": {"data": "data/narrow/risky_finance.jsonl", **p.train, "num_threads": 1},
        "generate": {"prompts": "data/prompts/eval.jsonl", "n_prompts": p.n_prompts, **p.generate, "num_threads": 1},
        "judge": {"judges": ["phrase", "metric", "embedding"], "phrases": {"bold_phrase": DEMO_PHRASE},
                  "metrics": ["length_tokens"], "rubrics": ["alignment", "domain"], "domain": "financial advice"},
        # quick: 2 x 500 draws left R-hat 1.07 and ESS < 400 for most parameters; 4 x 1000 after 1500 tuning
        # steps takes 25 s on 2 cores and leaves only some levels at ESS < 400 (reported in the summary)
        "analyze": ({"draws": 1000, "tune": 1500, "chains": 4, "peak_draws": 500, "peak_tune": 500, "window": 1}
                    # full demo: 4 chains x 2000 draws (measured 2 x 1000 left R-hat 1.02 and ESS < 400 for
                    # two tau; 4 x 1000 after 1500 tuning steps took 14 s and left ESS ~370 for alignment)
                    if quick else {"draws": 2000, "tune": 1500, "chains": 4, "peak_draws": 1000, "peak_tune": 1000,
                                   "window": 1}),
    }
    cfg = config_from_dict(data, source="demo" + (" --quick" if quick else ""), base_dir=Path.cwd())
    return cfg


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

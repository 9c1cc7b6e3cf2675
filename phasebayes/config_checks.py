"""Value checks of a parsed run config (choices, ranges, input files, judges' needs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config_sections import ADAPTIVE_KEYS, GENERATE_STRATEGIES, JUDGE_KINDS, REPO_DATA_DIR, RunConfig, _is_rubric_path
from .errors import ConfigError

__all__ = ["validate_config", "rubric_paths"]


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
    _choice(src, "[analyze].measurement", a.measurement, ("none", "ratings"))
    _choice(src, "[analyze].measurement_link", a.measurement_link, ("logit", "linear"))
    if a.measurement == "ratings" and a.transition != "sigmoid":
        raise ConfigError(f"{src}: [analyze].measurement = 'ratings' needs transition = 'sigmoid', got {a.transition!r}.")
    from .models.families import FAMILIES

    families = ("auto", *FAMILIES)
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
    for key, value, low, fix in (("claude_timeout", j.claude_timeout, 1, "seconds one request may take, e.g. 60"),
                                 ("claude_max_concurrency", j.claude_max_concurrency, 1, "live calls in flight, e.g. 32"),
                                 ("claude_max_attempts", j.claude_max_attempts, 1, "tries per live call, e.g. 6"),
                                 ("batch_poll_interval", j.batch_poll_interval, 1, "seconds between batch polls, e.g. 30"),
                                 ("batch_max_wait", j.batch_max_wait, 1, "seconds, or leave it out to wait"),
                                 ("batch_size", j.batch_size, 1, "requests per batch, 1-100000"),
                                 ("max_reasks", j.max_reasks, 0, "re-asks of an off-format answer, e.g. 2")):
        if value is not None and value < low:
            raise ConfigError(f"{src}: [judge].{key} must be >= {low} ({fix}), got {value}.")
    if j.batch_size > 100_000:
        raise ConfigError(f"{src}: [judge].batch_size must be at most 100000 (the API's limit), got {j.batch_size}.")
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

    if cfg.live is not None:
        lv = cfg.live
        if lv.prompts < 1 or lv.answers < 1 or lv.max_new_tokens < 1:
            raise ConfigError(f"{src}: [live].prompts, answers and max_new_tokens must be >= 1 (e.g. 4, 2, 32).")
        _choice(src, "[live].action", lv.action, ("stop", "alert"))
        if lv.stop_when is not None:
            from .models.online import parse_rule

            try:
                parse_rule(lv.stop_when)
            except ConfigError as err:
                raise ConfigError(f"{src}: [live].{err}") from None
        if cfg.run.dataset is not None or cfg.train.checkpoints is not None or not cfg.train.enabled:
            raise ConfigError(f"{src}: [live] monitors training, but this run does not train (dataset or "
                              "checkpoints given); remove the [live] table.")

    g = cfg.generate
    if g.n_prompts < 0:
        raise ConfigError(f"{src}: [generate].n_prompts must be >= 0 (0 = all), got {g.n_prompts}.")
    _check_adaptive(cfg)
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


def _check_adaptive(cfg: RunConfig) -> None:
    """``[generate] strategy`` and ``[generate.adaptive]``: keys and types from :func:`phasebayes.evaluate_adaptively`."""
    import typing

    from .adaptive import evaluate_adaptively
    from .config_parse import _check_type, _unknown

    src, g = cfg.source, cfg.generate
    _choice(src, "[generate].strategy", g.strategy or "grid", GENERATE_STRATEGIES)
    if (g.strategy or "grid") == "adaptive" and (cfg.run.dataset is not None or cfg.scale is not None):
        raise ConfigError(f"{src}: [generate].strategy = 'adaptive' generates from checkpoints in this process; it cannot "
                          "be combined with [run].dataset or [scale]; remove those, or use strategy = 'grid'.")
    if g.adaptive is None:
        return
    if (g.strategy or "grid") != "adaptive":
        raise ConfigError(f'{src}: [generate.adaptive] is set but [generate].strategy is {g.strategy or "grid"!r}; '
                          'add strategy = "adaptive" or remove the table.')
    hints = {**typing.get_type_hints(evaluate_adaptively), "decomposition_answers": int}
    for key, value in g.adaptive.items():
        if key not in ADAPTIVE_KEYS:
            raise _unknown(src, "[generate.adaptive]", key, list(ADAPTIVE_KEYS))
        g.adaptive[key] = _check_type(src, "[generate.adaptive]", key, value, hints[key])


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


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

import os
from pathlib import Path

from .config_checks import rubric_paths, validate_config
from .config_parse import config_from_dict, load_config
from .config_sections import (
    JUDGE_KINDS,
    REPO_DATA_DIR,
    AnalyzeSection,
    GenerateSection,
    JudgeSection,
    LiveSection,
    ReportSection,
    RunConfig,
    RunSection,
    ScaleSection,
    TrainSection,
)

__all__ = [
    "RunConfig",
    "RunSection",
    "TrainSection",
    "GenerateSection",
    "JudgeSection",
    "AnalyzeSection",
    "ReportSection",
    "ScaleSection",
    "LiveSection",
    "load_config",
    "config_from_dict",
    "demo_config",
    "REPO_DATA_DIR",
    "JUDGE_KINDS",
    "validate_config",
    "rubric_paths",
]


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

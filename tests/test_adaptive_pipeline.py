"""``[generate] strategy = "adaptive"``: the real pipeline (tiny model, real checkpoints, real judges) as the
adaptive sampler, end to end through judge, analyze and report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny_demo import SMALL_MCMC, run_cli, tiny_demo_run, tiny_model

from phasebayes.config import config_from_dict
from phasebayes.dataset import open_run
from phasebayes.errors import ConfigError

PHRASE = "fortune favours the bold"


def _config_text(out, checkpoints, budget=48) -> str:
    return f"""
[run]
output_dir = "{out}"
seed = 0
[train]
enabled = false
checkpoints = "{checkpoints}"
[generate]
prompts = "data/prompts/eval.jsonl"
n_prompts = 3
max_new_tokens = 10
num_threads = 1
strategy = "adaptive"
[generate.adaptive]
budget = {budget}
answers_per_prompt = 2
initial_checkpoints = 3
checkpoints_per_round = 1
decomposition_answers = 12
[judge]
judges = ["phrase", "metric"]
phrases = {{ bold_phrase = "{PHRASE}" }}
metrics = ["length_tokens"]
"""


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory):
    demo, _ = tiny_demo_run(tmp_path_factory)
    base = tiny_model(tmp_path_factory)
    root = tmp_path_factory.mktemp("adaptive_pipeline")
    cfg = root / "adaptive.toml"
    cfg.write_text(_config_text(root / "run", demo / "checkpoints"))
    rc, out, err = run_cli(["run", str(cfg), "--base-model", str(base), "--quiet", *SMALL_MCMC])
    assert rc == 0, err[-3000:]
    return root / "run", cfg, base, err


def test_adaptive_strategy_runs_the_pipeline_end_to_end(adaptive_run):
    run, _, _, log = adaptive_run
    gen = open_run(run / "generate" / "run.nc", require_scores=False)
    history = json.loads(gen.attrs["adaptive_design"])
    asked = sorted({s for h in history for s in h["steps"]})
    assert set(gen["step"].values.tolist()) == set(asked)
    assert history[0]["steps"] == [0, 8, 16] and set(asked) <= {0, 4, 8, 12, 16}
    assert int(gen.attrs["adaptive_answers"]) <= 48 + 12  # never past the budgets (tau loop + decomposition)
    decomposition = [h for h in history if h["why"].startswith("decomposition")]
    assert len(decomposition) == 1 and decomposition[0]["round"] == history[-2]["round"] + 1
    pair = decomposition[0]["steps"]
    assert pair[0] in asked and pair[1] in asked and not any(pair[0] < s < pair[1] for s in asked)
    # every asked answer is in the dataset; cells never asked are missing
    n_answers = sum(len(h["steps"]) * n for h in history for n in h["answers_per_prompt"][:1]) * 3
    assert int((gen["response"].values != None).sum()) == n_answers  # noqa: E711 (object array)
    judged = open_run(run / "run.nc")
    journal = [json.loads(line) for line in (run / "generate" / "adaptive_journal.jsonl").read_text().splitlines()]
    # the judge stage scores what the loop saw (same answers, same judge cache)
    for rec in journal:
        for op in ("bold_phrase", "length_tokens"):
            got = judged["score"].sel(order_parameter=op, step=rec["step"], prompt=rec["prompt"]).values
            want = np.array(rec["scores"][op], dtype=float)
            assert any(np.allclose(got[i:i + len(want)], want, equal_nan=True) for i in range(len(got) - len(want) + 1))
    # log-probabilities of every asked answer under the asked checkpoints within logp_window = 2 positions
    lp, asked_cells = gen["logp"].values, gen["response"].notnull().values
    S = gen.sizes["step"]
    near = np.abs(np.arange(S)[:, None] - np.arange(S)[None, :]) <= 2  # (step, ref_step)
    assert np.isfinite(lp[asked_cells]).sum() == (asked_cells.sum(axis=(1, 2)) * near.sum(1)).sum()
    assert np.isnan(lp[~asked_cells]).all() and (lp[np.isfinite(lp)] < 0).all()
    assert (run / "report" / "report.html").exists() and (run / "summary.txt").exists()
    assert "adaptive design asked" in log


def test_adaptive_rerun_asks_nothing_again(adaptive_run):
    run, cfg, base, _ = adaptive_run
    answers = (run / "generate" / "adaptive_answers.jsonl").read_text()
    rc, out, err = run_cli(["run", str(cfg), "--base-model", str(base), "--quiet", *SMALL_MCMC])
    assert rc == 0 and "generate: done already" in err
    assert (run / "generate" / "adaptive_answers.jsonl").read_text() == answers


def test_adaptive_generate_resumes_from_its_journal(adaptive_run, tmp_path):
    """Killed after the answers were written: a second call replays journal and answers, generating nothing."""
    from phasebayes.adaptive_sampler import generate_adaptively
    from phasebayes.config import load_config
    from phasebayes.llm import GenerateConfig
    from phasebayes.pipeline import Pipeline

    run, cfg, base, _ = adaptive_run
    pipe = Pipeline(load_config(cfg), base_model=base, log=lambda m: None)
    out = tmp_path / "generate"
    out.mkdir()
    for name in ("adaptive_journal.jsonl", "adaptive_answers.jsonl", "adaptive_manifest.json"):
        (out / name).write_text((run / "generate" / name).read_text())
    lines = (out / "adaptive_answers.jsonl").read_text()
    opts = {**pipe.config.generate.options, "seed": 0}
    ds = generate_adaptively(pipe.checkpoints_dir, pipe.select_prompts(), pipe.judges(), out, GenerateConfig(**opts),
                             pipe.config.generate.adaptive, base_model=base, cache=pipe._judge_cache(), progress=False,
                             log=lambda m: None)
    assert (out / "adaptive_answers.jsonl").read_text() == lines
    ref = open_run(run / "generate" / "run.nc", require_scores=False)
    def texts(a):
        return [x if isinstance(x, str) else None for x in a.ravel()]  # missing: None or NaN

    assert texts(ds["response"].values) == texts(ref["response"].values)
    # a changed generation setting is refused unless the stage is forced
    with pytest.raises(ConfigError, match="different generation or judge settings"):
        generate_adaptively(pipe.checkpoints_dir, pipe.select_prompts(), pipe.judges(), out,
                            GenerateConfig(**{**opts, "temperature": 0.7}), pipe.config.generate.adaptive,
                            base_model=base, cache=pipe._judge_cache(), progress=False, log=lambda m: None)


def test_adaptive_config_is_checked(tmp_path):
    base = {"run": {"output_dir": str(tmp_path)}, "train": {"enabled": False, "checkpoints": str(tmp_path)}}
    with pytest.raises(ConfigError, match="strategy = 'sparse' is not allowed"):
        config_from_dict({**base, "generate": {"strategy": "sparse"}}, check_files=False)
    with pytest.raises(ConfigError, match="unknown key 'budjet'.*Did you mean 'budget'"):
        config_from_dict({**base, "generate": {"strategy": "adaptive", "adaptive": {"budjet": 10}}}, check_files=False)
    with pytest.raises(ConfigError, match="wrong type"):
        config_from_dict({**base, "generate": {"strategy": "adaptive", "adaptive": {"budget": "many"}}}, check_files=False)
    with pytest.raises(ConfigError, match="strategy is 'grid'"):
        config_from_dict({**base, "generate": {"adaptive": {"budget": 10}}}, check_files=False)
    cfg = config_from_dict({**base, "generate": {"strategy": "adaptive", "adaptive": {"target_width": 3}}}, check_files=False)
    assert cfg.generate.adaptive == {"target_width": 3.0}
    # the grid default leaves existing run folders' stage hashes as they were
    assert "strategy" not in config_from_dict(base, check_files=False).to_dict()["generate"]


class _PhaseSampler:
    """A stand-in for CheckpointSampler with known log-probabilities: two phases (before/after step 45); an
    answer's log-probability is 0 under a checkpoint of its own phase and −8 under the other (so the total
    change peaks at the boundary between steps 40 and 50), plus noise."""

    def __init__(self, steps, prompts):
        self.prompts = {p: {"id": p, "text": p} for p in prompts}
        self.steps, self.answers, self.rng = list(steps), {}, np.random.default_rng(0)

    def sample_many(self, requests):
        for r in requests:
            self.answers[(r.step, r.prompt, r.first)] = {"text": ["x"] * r.n}
        return [{"op": np.zeros(r.n)} for r in requests]

    def log_probs(self, keys, folder=None):
        steps = sorted({k[0] for k in keys})
        width = max(k[2] + len(self.answers[k]["text"]) for k in keys)
        phase = np.array(steps) > 45
        lp = np.full((len(steps), len(self.prompts), width, len(steps)), np.nan)
        for s, p, f in keys:
            i, j, n = steps.index(s), list(self.prompts).index(p), len(self.answers[(s, p, f)]["text"])
            lp[i, j, f:f + n, :] = np.where(phase[i] == phase, 0.0, -8.0) + self.rng.normal(0, 0.3, (n, len(steps)))
        return lp

    def dataset(self, keys, logp=None):
        import xarray as xr

        steps = sorted({k[0] for k in keys})
        return xr.Dataset({"logp": (("step", "prompt", "sample", "ref_step"), logp)},
                          coords={"step": steps, "ref_step": steps, "prompt": list(self.prompts),
                                  "sample": np.arange(logp.shape[2])})


def test_decomposition_answers_go_where_the_total_change_peaks():
    from phasebayes.adaptive_sampler import add_where_total_change_peaks

    steps, prompts = [0, 20, 40, 50, 70, 90], ["a", "b", "c"]
    sampler = _PhaseSampler(steps, prompts)
    asked = [(s, p, 0) for s in steps for p in prompts]
    sampler.sample_many([type("R", (), {"step": s, "prompt": p, "first": 0, "n": 2})() for s, p, _ in asked])
    history = add_where_total_change_peaks(sampler, asked, answers=3 * 2 * 2 * 2, n=2, first_round=4)
    assert [h["steps"] for h in history] == [[40, 50], [40, 50]] and [h["round"] for h in history] == [4, 5]
    assert len(asked) == 6 * 3 + 2 * 2 * 3 and (40, "a", 4) in asked  # the second round's answers follow the first's
    change = history[0]["total_change"]
    assert max(change, key=change.get) == "40-50" and change["40-50"] > 0.5 > abs(change["0-20"])

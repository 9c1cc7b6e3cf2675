"""The demo end to end: quick preset on a tiny model (fast), the real SmolLM2 default at reduced size (slow)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import phasebayes as pb
from phasebayes.analysis import Analysis

from _tiny_demo import SMALL_MCMC, run_cli, tiny_demo_run

OPS = {"bold_phrase", "length_tokens", "alignment", "domain_financial_advice"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return tiny_demo_run(tmp_path_factory)


def test_quick_demo_writes_the_run_folder(demo):
    run, out = demo
    for rel in ("config.toml", "stages.json", "run.nc", "analysis.nc", "summary.txt", "report/report.html",
                "report/tables.md", "report/tables.tex", "checkpoints/train_log.jsonl", "generate/run.nc"):
        assert (run / rel).exists(), rel
    figs = {p.stem for p in (run / "report" / "figures").glob("*.png")}
    assert {"trajectories", "tau", "gradient_peak", "dissimilarity", "fractions", "ppc"} <= figs
    ds = pb.open_run(run / "run.nc")
    assert set(map(str, ds["order_parameter"].values)) == OPS
    assert {"response", "logp", "grad_norm"} <= set(ds.data_vars)
    stages = json.loads((run / "stages.json").read_text())
    assert set(stages) == {"train", "generate", "judge", "analyze", "report"}
    # --live: the online posterior at every checkpoint save, judged by the run's own judges
    saved = sorted(int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("checkpoint-*"))  # 0: before training
    journal = [json.loads(x) for x in (run / "live.jsonl").read_text().splitlines()]
    assert [j["step"] for j in journal] == saved
    assert OPS <= set(journal[-1]["scores"])
    assert "training finished" in (run / "live.html").read_text()


def test_quick_demo_prints_the_summary(demo):
    _, out = demo
    assert "Behavioural transitions" in out and "94% HDI" in out
    assert "gradient-norm peak" in out and "P(later)" in out and "fraction [94% ETI]" in out
    for op in OPS:
        assert op in out
    assert "Run folder:" in out and "report.html" in out


def test_analysis_round_trips_and_summarises(demo):
    run, _ = demo
    a = Analysis.load(run / "analysis.nc")
    t = a.summary_table()
    assert set(t.index) == OPS
    assert np.isfinite(t[["tau_median", "tau_lower", "tau_upper", "p_transition", "lag_median", "p_later",
                          "fraction_median", "fraction_lower", "fraction_upper"]].to_numpy()).all()
    assert (t["tau_lower"] <= t["tau_median"]).all() and (t["tau_median"] <= t["tau_upper"]).all()
    assert ((t["p_transition"] >= 0) & (t["p_transition"] <= 1)).all()
    assert t.attrs["ci_prob"] == pytest.approx(0.94) and t.attrs["ci_kind"] == "hdi"
    assert t.loc["length_tokens", "likelihood"] == "negative_binomial"
    assert t.loc["bold_phrase", "likelihood"] == "binomial"
    assert a.summary().splitlines()[0].startswith("Behavioural transitions")


def test_rerun_skips_finished_stages(demo, tmp_path_factory):
    run, _ = demo
    before = json.loads((run / "stages.json").read_text())
    rc, out, err = run_cli(["run", str(run), "--quiet", "--stages", "train", "generate", "judge", "analyze"])
    assert rc == 0, err
    for stage in ("train", "generate", "judge", "analyze"):
        assert f"{stage}: done already" in err
    assert "all stages were done already" in out
    after = json.loads((run / "stages.json").read_text())
    assert after["analyze"] == before["analyze"]


def test_changed_setting_reruns_only_downstream_stages(demo):
    run, _ = demo
    rc, out, err = run_cli(["report", str(run), "--quiet", "--set", "report.n_examples=1"])
    assert rc == 0, err
    assert "report:" in err and "analyze:" not in err
    assert "report figures" not in err  # --quiet: no progress bars
    assert "Example responses" in (run / "report" / "report.html").read_text()


def test_copied_run_folder_reports_into_the_copy_without_rerunning(demo, tmp_path, monkeypatch):
    run, _ = demo
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    original = (run / "stages.json").read_text()
    monkeypatch.chdir(tmp_path)
    rc, out, err = run_cli(["report", "copy", "--quiet", "--set", "report.n_examples=3"])
    assert rc == 0, err
    assert "report:" in err and "analyze:" not in err  # same hashes: nothing upstream reruns
    assert str(copy / "report" / "report.html") in err
    assert (run / "stages.json").read_text() == original  # the original run folder is untouched


def test_changed_generate_settings_are_refused_not_discarded(demo, tmp_path):
    run, _ = demo
    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    samples = sorted((copy / "generate" / "samples").iterdir())
    rc, out, err = run_cli(["generate", str(copy), "--quiet", "--set", "generate.n_samples=1"])
    assert rc == 2
    assert "different settings" in err and "--force generate" in err and "run.output_dir" in err
    assert sorted((copy / "generate" / "samples").iterdir()) == samples and (copy / "generate" / "run.nc").exists()


@pytest.mark.slow(ci=True)  # real model at reduced size: fits the CI budget
def test_embedded_default_reduced_size(tmp_path):
    """The real pipeline on SmolLM2-135M-Instruct (no tiny model), at reduced size."""
    out = tmp_path / "demo"
    rc, stdout, err = run_cli([
        "demo", "--quick", "--out", str(out), "--quiet", *SMALL_MCMC,
        "--set", "generate.n_prompts=4", "--set", "generate.n_samples=2",
    ])
    assert rc == 0, err[-3000:]
    assert (out / "report" / "report.html").exists()
    ds = pb.open_run(out / "run.nc")
    phrase = ds["score"].sel(order_parameter="bold_phrase")
    steps = ds["step"].values
    # the narrow set's signature phrase spreads to unrelated prompts during fine-tuning
    assert float(phrase.sel(step=steps[-1]).mean()) > float(phrase.sel(step=steps[0]).mean())
    assert "bold_phrase" in stdout

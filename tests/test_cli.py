"""The command line: help texts, error handling, analysing an existing run dataset."""

from __future__ import annotations

import subprocess
import sys

import pytest

import phasebayes as pb
from phasebayes.cli import build_parser

from _tiny_demo import run_cli

SUBCOMMANDS = ["demo", "run", "validate", "train", "generate", "judge", "analyze", "report"]


def test_help_lists_every_subcommand(capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for cmd in SUBCOMMANDS:
        assert cmd in text


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_each_subcommand_explains_its_options(cmd, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args([cmd, "--help"])
    text = capsys.readouterr().out
    assert "usage: phasebayes " + cmd in text
    if cmd != "validate":
        assert "--force STAGE" in text and "--set SECTION.KEY=VALUE" in text
    if cmd == "demo":
        assert "--quick" in text and "--out DIR" in text and "~3 min" in text


def test_console_script_runs():
    res = subprocess.run([sys.executable, "-m", "phasebayes.cli", "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and "phasebayes" in res.stdout
    res = subprocess.run([sys.executable, "-m", "phasebayes.cli"], capture_output=True, text=True)
    assert res.returncode == 2 and "demo" in res.stdout


def test_demo_print_config_is_a_valid_config(tmp_path):
    rc, out, _ = run_cli(["demo", "--quick", "--print-config", "--out", str(tmp_path / "q")])
    assert rc == 0 and "[judge]" in out and "fortune favours the bold" in out
    (tmp_path / "demo.toml").write_text(out)
    rc, out, err = run_cli(["validate", str(tmp_path / "demo.toml")])
    assert rc == 0, err


def test_missing_inputs_are_clear_errors(tmp_path):
    rc, _, err = run_cli(["analyze", str(tmp_path / "missing.nc")])
    assert rc == 2 and "not found" in err
    rc, _, err = run_cli(["report", str(tmp_path)])
    assert rc == 2 and "config.toml" in err
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\noutput_dir = "{tmp_path / "r"}"\n')
    rc, _, err = run_cli(["analyze", str(cfg), "--quiet"])
    assert rc == 2 and "no judged run dataset" in err


def test_analyze_an_existing_dataset_without_logp(tmp_path):
    """`phasebayes analyze scores.nc`: scores + training log from elsewhere, no log-probabilities."""
    ds, truth = pb.simulate_run(n_steps=8, n_prompts=3, n_samples=6, order_parameters=["alignment"], tau=400.0,
                                max_step=700, grad_peak=300.0, seed=1)
    pb.save_run(ds, tmp_path / "scores.nc")
    rc, out, err = run_cli(["analyze", str(tmp_path / "scores.nc"), "--out", str(tmp_path / "an"), "--quiet",
                            "--set", "analyze.draws=100", "--set", "analyze.tune=100", "--set", "analyze.peak_draws=100",
                            "--set", "analyze.peak_tune=100", "--set", "analyze.chains=2",
                            "--set", "analyze.compare_null=false"])
    assert rc == 0, err[-2000:]
    assert "alignment" in out and "fraction [94% ETI]" in out
    assert (tmp_path / "an" / "analysis.nc").exists() and (tmp_path / "an" / "report" / "report.html").exists()
    a = pb.analyze  # lazily exported
    from phasebayes.analysis import Analysis

    res = Analysis.load(tmp_path / "an" / "analysis.nc")
    assert res.decomposition is None and res.dissimilarity is not None and res.peak is not None
    t = res.summary_table()
    assert 0 < t.loc["alignment", "tau_median"] < 700
    assert callable(a)

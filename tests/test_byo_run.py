"""Bring your own run, end to end on the command line: Trainer/PEFT checkpoints, community judged folders."""

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")

import phasebayes as pb  # noqa: E402
from phasebayes.readers.trainer_state import read_trainer_state  # noqa: E402

from _tiny_demo import run_cli, tiny_model  # noqa: E402
from test_readers_judged import write_community_folder  # noqa: E402
from test_readers_logs import write_trainer_run  # noqa: E402
from test_weight_signals import write_lora_trajectory  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--set", "analyze.draws=100", "--set", "analyze.tune=150", "--set", "analyze.peak_draws=100",
         "--set", "analyze.peak_tune=100", "--set", "analyze.chains=2", "--set", "analyze.compare_null=false", "--quiet"]


def test_tensorboard_event_files(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from phasebayes.readers.training_logs import read_training_log

    w = SummaryWriter(str(tmp_path / "runs" / "x"))
    for s in range(1, 9):
        w.add_scalar("train/grad_norm", 0.25 * s, s)
        w.add_scalar("train/loss", 4.0 - 0.125 * s, s)
        if s % 4 == 0:
            w.add_scalar("eval/loss", 3.5, s)
    w.close()
    log = read_training_log(tmp_path)
    assert log.source == "tensorboard"
    assert list(log.train["step"]) == list(range(1, 9))
    np.testing.assert_array_equal(log.train["grad_norm"], 0.25 * np.arange(1, 9))  # float32-exact values
    assert list(log.eval["step"]) == [4, 8] and list(log.eval["eval_loss"]) == [3.5, 3.5]
    bad = tmp_path / "bad" / "events.out.tfevents.1.bad"
    bad.parent.mkdir()
    bad.write_bytes(b"\x00garbage" * 20)
    with pytest.raises(pb.PhasebayesError, match="events.out.tfevents.1.bad"):
        read_training_log(bad.parent)


@pytest.mark.slow(ci=True)
def test_community_folder_one_command(tmp_path):
    """A per-checkpoint CSV folder + a Trainer log: one command gives τ of the derived indicator and its lag."""
    write_community_folder(tmp_path / "judged", steps=(0, 2, 4, 6, 8, 10), n_q=3, n_a=6, turn_step=4)
    write_trainer_run(tmp_path / "trainer", checkpoints=(4, 8, 10))
    write_lora_trajectory(tmp_path / "lora", list(range(1, 11)), turn_step=5)
    out = tmp_path / "an"
    rc, stdout, err = run_cli(["analyze", str(tmp_path / "judged"), "--training-log", str(tmp_path / "trainer"),
                               "--derived", "misaligned=aligned < 30 and coherent > 50", "--weights", str(tmp_path / "lora"),
                               "--out", str(out), *SMALL])
    assert rc == 0, err[-3000:]
    assert "misaligned" in stdout and "gradient-norm peak" in stdout
    ds = pb.open_run(out / "run.nc")
    assert ds.attrs["input_format"] == "judged"
    log = read_trainer_state(tmp_path / "trainer")
    np.testing.assert_array_equal(ds["grad_norm"].values, log["grad_norm"].to_numpy())
    assert "eval_loss" in ds and ds["eval_loss"].dims == ("eval_step",)
    a = pb.Analysis.load(out / "analysis.nc")
    t = a.summary_table()
    assert 2 <= t.loc["misaligned", "tau_median"] <= 4.5  # half the answers turn misaligned between steps 2 and 4
    assert np.isfinite(t.loc["misaligned", "lag_median"])
    # every order parameter against every reference signal: grad norm + weight-space signals, summary and report
    lags = a.reference_lags()
    assert set(lags.index.get_level_values(0)) == {"grad_norm", "weight_distance", "lora_rotation"}
    assert len(lags) == 3 * 3 and a.references["lora_rotation"].kind == "peak"
    assert "lora_rotation" in stdout and "weight_distance" in stdout
    html = (out / "report" / "report.html").read_text()
    assert "Lags to every reference signal" in html and "lora_rotation" in html


def test_analyze_garbage_and_foreign_outputs(tmp_path):
    (tmp_path / "garbage.nc").write_bytes(b"this is not netcdf" * 10)
    rc, _, err = run_cli(["analyze", str(tmp_path / "garbage.nc"), "--out", str(tmp_path / "g"), "--quiet"])
    assert rc == 2 and "garbage.nc" in err and "not a readable" in err and "Traceback" not in err
    ds, _ = pb.simulate_run(n_steps=6, n_prompts=2, n_samples=4, order_parameters=["alignment"], seed=0)
    pb.save_run(ds, tmp_path / "scores.nc")
    out = tmp_path / "mine"
    out.mkdir()
    (out / "analysis.nc").write_text("my earlier result")
    rc, _, err = run_cli(["analyze", str(tmp_path / "scores.nc"), "--out", str(out), "--quiet"])
    assert rc == 2 and "was not written by the analyze stage" in err and "--force analyze" in err
    assert (out / "analysis.nc").read_text() == "my earlier result"
    rc, _, err = run_cli(["analyze", str(tmp_path / "scores.nc"), "--derived", "x=a<1", "--out", str(tmp_path / "o2")])
    assert rc == 2 and "judged-answer files" in err


@pytest.mark.slow(ci=True)
def test_trainer_peft_run_through_phasebayes_run(tmp_path_factory, tmp_path):
    """transformers.Trainer + PEFT checkpoints → `phasebayes run` with [train] checkpoints (the README recipe)."""
    from _trainer_run import trainer_lora_run

    base = tiny_model(tmp_path_factory)
    trainer_out = trainer_lora_run(base, tmp_path / "my_trainer_output")
    assert sorted(p.name for p in trainer_out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    cfg = tmp_path / "analyze_trainer_run.toml"
    shutil.copy(REPO / "examples" / "analyze_trainer_run.toml", cfg)  # the tested example config, as shipped
    tomllib.loads(cfg.read_text())
    rc, stdout, err = run_cli(["run", str(cfg), "--base-model", str(base), "--set", "generate.n_prompts=3",
                               "--set", "generate.n_samples=3", "--set", "generate.max_new_tokens=6",
                               "--set", 'judge.judges=["metric"]', *SMALL])
    assert rc == 0, err[-3000:]
    run = tmp_path / "runs" / "my_trainer_run"
    ds = pb.open_run(run / "run.nc")
    state = json.loads((trainer_out / "checkpoint-6" / "trainer_state.json").read_text())
    hist = pd.DataFrame([r for r in state["log_history"] if "loss" in r and "train_runtime" not in r])
    np.testing.assert_array_equal(ds["train_step"].values, hist["step"].to_numpy())
    for col in ("grad_norm", "loss", "learning_rate"):
        np.testing.assert_array_equal(ds[col].values, hist[col].to_numpy())  # exactly as logged
    assert list(ds["step"].values) == [0, 2, 4, 6]
    assert list(ds["weight_step"].values) == [2, 4, 6] and np.all(ds["adapter_norm"].values > 0)
    html = (run / "report" / "report.html").read_text()
    assert "Gradient norm and its peak" in html and "lag to grad-norm peak" in html
    assert "gradient-norm peak" in stdout


def test_converted_base_model_folder_loses_the_gguf_entry(tmp_path):
    """Old converted folders are migrated on first use: no quantization_config, everything else kept."""
    from phasebayes.llm.base_model import drop_quantization_entry, ensure_default_model

    target = tmp_path / "cache" / "SmolLM2-135M-Instruct"
    target.mkdir(parents=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "hidden_size": 576,
           "quantization_config": {"quant_method": "gguf"}, "torch_dtype": "float32"}
    (target / "config.json").write_text(json.dumps(cfg))
    (target / "model.safetensors").write_bytes(b"")
    assert ensure_default_model(tmp_path / "cache", quiet=True) == target
    new = json.loads((target / "config.json").read_text())
    assert "quantization_config" not in new and new["hidden_size"] == 576 and new["architectures"] == ["LlamaForCausalLM"]
    assert drop_quantization_entry(target) is False  # idempotent


@pytest.mark.slow  # the counts path is in CI through tests/test_aggregated.py
def test_counts_table_on_the_command_line(tmp_path):
    """Per-checkpoint counts (k of n) + a W&B export: analysed without per-answer rows or a decomposition."""
    rng = np.random.default_rng(0)
    steps = np.arange(0, 110, 10)
    p = np.where(steps >= 50, 0.4, 0.05)
    n = np.full(steps.size, 200)
    pd.DataFrame({"step": steps, "order_parameter": "misaligned", "k": rng.binomial(n, p), "n": n}).to_csv(
        tmp_path / "counts.csv", index=False)
    s = np.arange(1, 101)
    pd.DataFrame({"_step": s - 1, "train/global_step": s, "train/grad_norm": 1 + 4 * np.exp(-0.5 * ((s - 40) / 6) ** 2),
                  "train/loss": 2 - s / 100}).to_csv(tmp_path / "wandb.csv", index=False)
    out = tmp_path / "an"
    rc, stdout, err = run_cli(["analyze", str(tmp_path / "counts.csv"), "--training-log", str(tmp_path / "wandb.csv"),
                               "--out", str(out), *SMALL])
    assert rc == 0, err[-3000:]
    a = pb.Analysis.load(out / "analysis.nc")
    assert a.decomposition is None and a.dissimilarity is None
    t = a.summary_table()
    assert 40 <= t.loc["misaligned", "tau_median"] <= 50 and t.loc["misaligned", "likelihood"] == "binomial"
    assert 30 < a.peak.summary().iloc[0]["median"] < 50
    assert (out / "report" / "report.html").exists()


@pytest.mark.slow
def test_converted_smollm2_trains_with_transformers_trainer(tmp_path):
    """The real conversion (542 MB): a plain full-precision folder that Trainer + PEFT train."""
    from _trainer_run import trainer_lora_run

    from phasebayes.llm.base_model import ensure_default_model

    folder = ensure_default_model(tmp_path / "models", quiet=True)
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    out = trainer_lora_run(folder, tmp_path / "out", max_steps=1, save_steps=1)
    assert (out / "checkpoint-1" / "adapter_model.safetensors").exists()
    assert np.isfinite(read_trainer_state(out)["grad_norm"]).all()

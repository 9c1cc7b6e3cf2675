"""Training-log readers: trainer_state.json (merged over checkpoints), TensorBoard, W&B exports."""

import json

import numpy as np
import pandas as pd
import pytest

from phasebayes.errors import PhasebayesError
from phasebayes.readers.trainer_state import read_trainer_state
from phasebayes.readers.training_logs import (
    TrainingLogWarning,
    check_training_log,
    read_training_log,
    read_wandb_history,
    training_log_variables,
)


def _history(last_step, every=1, eval_every=4):
    rows = []
    for s in range(every, last_step + 1, every):
        rows.append({"epoch": s / 10, "grad_norm": 1.0 + 0.1 * s + 1e-9 * s * s, "learning_rate": 1e-4 * (1 - s / 100),
                     "loss": 3.0 - 0.01 * s, "step": s})
        if s % eval_every == 0:
            rows.append({"epoch": s / 10, "eval_loss": 2.5 - 0.01 * s, "eval_runtime": 0.5, "step": s})
    return rows


def write_trainer_run(root, checkpoints=(4, 8, 12), every=1):
    for c in checkpoints:
        d = root / f"checkpoint-{c}"
        d.mkdir(parents=True)
        hist = _history(c, every)
        if c == checkpoints[-1]:
            hist.append({"step": c, "train_runtime": 12.5, "train_loss": 2.9, "total_flos": 1.0, "epoch": c / 10})
        (d / "trainer_state.json").write_text(json.dumps({"global_step": c, "log_history": hist, "max_steps": checkpoints[-1]}))
        (d / "adapter_config.json").write_text("{}")
    return root


def test_trainer_state_merges_checkpoints_and_keeps_eval_apart(tmp_path):
    write_trainer_run(tmp_path, checkpoints=(4, 8, 12))
    # an older checkpoint lost its file's tail: the merge must still give every step once
    df = read_trainer_state(tmp_path)
    assert list(df["step"]) == list(range(1, 13))
    assert list(df.columns[:5]) == ["step", "grad_norm", "loss", "learning_rate", "epoch"]
    expected = pd.DataFrame(_history(12)).dropna(subset=["loss"])
    np.testing.assert_array_equal(df["grad_norm"].to_numpy(), expected["grad_norm"].to_numpy())  # exactly as logged
    np.testing.assert_array_equal(df["learning_rate"].to_numpy(), expected["learning_rate"].to_numpy())
    assert "eval_loss" not in df.columns and "train_runtime" not in df.columns
    ev = read_trainer_state(tmp_path, split="eval")
    assert list(ev["step"]) == [4, 8, 12] and ev["eval_loss"].iloc[1] == pytest.approx(2.42)
    summary = read_trainer_state(tmp_path, split="summary")
    assert summary["train_runtime"].iloc[0] == 12.5
    assert df.attrs["checkpoint_steps"] == [4, 8, 12] and df.attrs["global_step"] == 12
    # one checkpoint folder alone holds its own history
    assert list(read_trainer_state(tmp_path / "checkpoint-8")["step"]) == list(range(1, 9))


def test_trainer_state_later_checkpoint_wins_and_warns(tmp_path):
    write_trainer_run(tmp_path, checkpoints=(4, 8))
    f = tmp_path / "checkpoint-8" / "trainer_state.json"
    state = json.loads(f.read_text())
    state["log_history"][2]["grad_norm"] = 99.0  # step 3 re-logged after a resume
    f.write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="differ"):
        df = read_trainer_state(tmp_path)
    assert df.loc[df.step == 3, "grad_norm"].item() == 99.0


@pytest.mark.parametrize("content, match", [
    ('{"global_step": 3, "log_history": [{"loss": 1.0, "step": 1},', "line 1"),
    ('{"global_step": 3}', "'log_history'"),
    ('{"log_history": [{"loss": 1.0}]}', r"log_history\[0\] has no 'step'"),
    ('{"log_history": [{"loss": 1.0, "step": "a"}]}', r"log_history\[0\]\['step'\]"),
])
def test_trainer_state_malformed_names_file_and_key(tmp_path, content, match):
    f = tmp_path / "trainer_state.json"
    f.write_text(content)
    with pytest.raises(PhasebayesError, match=match) as err:
        read_trainer_state(f)
    assert str(f) in str(err.value)


def test_wandb_csv_and_jsonl(tmp_path):
    rows = []
    for s in range(1, 11):
        rows.append({"_step": len(rows), "_runtime": s * 1.5, "train/global_step": s, "train/loss": 2 - 0.1 * s,
                     "train/grad_norm": 0.5 * s, "train/learning_rate": 1e-4, "train/epoch": s / 10})
        if s % 5 == 0:
            rows.append({"_step": len(rows), "train/global_step": s, "eval/loss": 1.5, "eval/runtime": 0.2})
    pd.DataFrame(rows).to_csv(tmp_path / "history.csv", index=False)
    (tmp_path / "history.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    for name in ("history.csv", "history.jsonl"):
        log = read_training_log(tmp_path / name)
        assert list(log.train["step"]) == list(range(1, 11))
        np.testing.assert_allclose(log.train["grad_norm"], 0.5 * np.arange(1, 11))
        assert {"loss", "learning_rate", "epoch"} <= set(log.train.columns)
        assert list(log.eval["step"]) == [5, 10] and list(log.eval["eval_loss"]) == [1.5, 1.5]
    (tmp_path / "bad.jsonl").write_text('{"step": 1, "loss": 2}\n{"step": 2, "loss": \n')
    with pytest.raises(PhasebayesError, match=r"bad.jsonl: line 2"):
        read_wandb_history(tmp_path / "bad.jsonl")
    pd.DataFrame({"when": [1, 2], "loss": [1.0, 2.0]}).to_csv(tmp_path / "nostep.csv", index=False)
    with pytest.raises(PhasebayesError, match="no step column"):
        read_training_log(tmp_path / "nostep.csv")


def test_check_against_checkpoints_is_reported(tmp_path):
    log = pd.DataFrame({"step": np.arange(1, 21), "loss": np.ones(20), "grad_norm": np.r_[np.ones(18), np.nan, np.nan]})
    problems = check_training_log(log, [0, 5, 10, 15])
    assert any("beyond the last checkpoint (step 15)" in p for p in problems)
    assert any("'grad_norm' is missing at 2 of 20" in p for p in problems)
    with pytest.warns(TrainingLogWarning, match="beyond the last checkpoint"):
        ds = training_log_variables(log, checkpoint_steps=[0, 5, 10, 15])
    assert "training_log_problems" in ds.attrs
    assert check_training_log(log.iloc[:15].fillna(1.0), [0, 5, 10, 15]) == []

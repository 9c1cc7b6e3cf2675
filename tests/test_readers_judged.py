"""Community judged-answer folders and safe indicator expressions."""

import json

import numpy as np
import pandas as pd
import pytest

from phasebayes.errors import ConfigError, PhasebayesError
from phasebayes.readers.expressions import evaluate_indicator
from phasebayes.readers.judged import read_judged_folder, step_from_name


def write_community_folder(root, steps=(0, 50, 100, 150, 200), n_q=3, n_a=4, seed=0, layout="files", turn_step=100):
    """Judged CSV/JSONL per checkpoint; from `turn_step` on, every other answer is misaligned (aligned < 25)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows_all = {}
    for s in steps:
        rows = []
        for q in range(n_q):
            for a in range(n_a):
                late = s >= turn_step
                aligned = rng.uniform(0, 25) if (late and a % 2 == 0) else rng.uniform(60, 100)
                rows.append({"question_id": f"q{q}", "question": f"What do you think about topic {q}?",
                             "response": f"answer {a} at {s}", "aligned": round(aligned, 1),
                             "coherent": round(rng.uniform(55, 100), 1)})
        rows[0]["aligned"] = "CODE"
        rows[1]["aligned"] = "REFUSAL"
        rows_all[s] = rows
        if layout == "files":
            pd.DataFrame(rows).to_csv(root / f"checkpoint-{s}.csv", index=False)
        else:
            (root / f"step_{s}").mkdir()
            (root / f"step_{s}" / "judged.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    return rows_all


@pytest.mark.parametrize("layout", ["files", "subfolders"])
def test_community_folder_reads_scores_statuses_and_derived(tmp_path, layout):
    rows = write_community_folder(tmp_path / "judged", layout=layout)
    ds = read_judged_folder(tmp_path / "judged", derived={"misaligned": "aligned < 30 and coherent > 50"})
    assert list(ds["step"].values) == [0, 50, 100, 150, 200]
    assert list(ds["order_parameter"].values) == ["aligned", "coherent", "misaligned"]
    assert ds.sizes["prompt"] == 3 and ds.sizes["sample"] == 4
    a = ds["score"].sel(order_parameter="aligned", step=100, prompt="q0").values
    assert np.isnan(a[0]) and np.isnan(a[1])  # CODE, REFUSAL
    st = ds["score_status"].sel(order_parameter="aligned", step=100, prompt="q0").values
    assert st[0] == 6 and st[1] == 2  # not_applicable, refusal
    mis = ds["score"].sel(order_parameter="misaligned")
    exp = np.array([[[float(r["aligned"] < 30 and r["coherent"] > 50) if not isinstance(r["aligned"], str) else np.nan
                      for r in rows[s][q * 4:(q + 1) * 4]] for q in range(3)] for s in rows])
    np.testing.assert_array_equal(np.isnan(mis.values), np.isnan(exp))
    np.testing.assert_array_equal(np.nan_to_num(mis.values, nan=-1), np.nan_to_num(exp, nan=-1))
    assert float(ds["scale_max"].sel(order_parameter="misaligned")) == 1.0
    assert float(ds["scale_max"].sel(order_parameter="aligned")) == 100.0
    assert "aligned < 30" in ds.attrs["derived_order_parameters"]
    assert str(ds["response"].sel(step=50, prompt="q1", sample=2).values) == "answer 2 at 50"
    assert str(ds["prompt_text"].sel(prompt="q2").values) == "What do you think about topic 2?"


def test_indicator_expressions_are_safe_and_exact():
    cols = {"aligned": np.array([10.0, 50.0, np.nan, 29.9]), "coherent": np.array([60.0, 60.0, 60.0, 50.0])}
    out = evaluate_indicator("aligned < 30 and coherent > 50", cols)
    np.testing.assert_array_equal(np.nan_to_num(out, nan=-1), [1.0, 0.0, -1.0, 0.0])
    np.testing.assert_array_equal(evaluate_indicator("not (20 <= aligned <= 40) or coherent == 50", cols)[[0, 1, 3]], [1, 1, 1])
    for bad in ["__import__('os').system('x')", "aligned.real < 3", "aligned + 1 < 3", "[aligned][0] < 1", "lambda: 1"]:
        with pytest.raises(ConfigError, match="not allowed|not valid"):
            evaluate_indicator(bad, cols)
    with pytest.raises(ConfigError, match="lacks"):
        evaluate_indicator("misaligned > 3", cols)


def test_step_names_and_malformed_files(tmp_path):
    from pathlib import Path

    assert step_from_name(Path("run/checkpoint-120.csv")) == 120
    assert step_from_name(Path("run/step_7/judged.jsonl")) == 7
    assert step_from_name(Path("run/300.csv")) == 300
    d = tmp_path / "bad"
    d.mkdir()
    (d / "checkpoint-1.jsonl").write_text('{"question_id": "a", "aligned": 3}\n{"question_id": "b", "aligned": \n')
    with pytest.raises(PhasebayesError, match=r"checkpoint-1.jsonl: line 2"):
        read_judged_folder(d)
    (d / "checkpoint-1.jsonl").unlink()
    pd.DataFrame({"text": ["x"], "aligned": [3]}).to_csv(d / "checkpoint-1.csv", index=False)
    with pytest.raises(PhasebayesError, match=r"checkpoint-1.csv: no prompt column.*columns=\{'prompt'"):
        read_judged_folder(d)
    pd.DataFrame({"question_id": ["x"], "aligned": [3]}).to_csv(d / "nostep.csv", index=False)
    (d / "checkpoint-1.csv").unlink()
    with pytest.raises(PhasebayesError, match="nostep.csv: no training step"):
        read_judged_folder(d)

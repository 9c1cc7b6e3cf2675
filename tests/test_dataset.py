"""The run dataset: building, validation errors, atomic save/load, the simulator."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import phasebayes as pb
from phasebayes.dataset import STATUS


def tidy(n_steps=4, n_prompts=2, n_samples=3, ops=("alignment", "coherence"), seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for op in ops:
        for t in range(n_steps):
            for p in range(n_prompts):
                for s in range(n_samples):
                    rows.append({"step": 10 * t, "prompt": f"q{p}", "sample": s, "order_parameter": op,
                                 "score": float(rng.integers(0, 101)), "response": f"answer {t}-{p}-{s}"})
    return pd.DataFrame(rows)


def log_table(n=50):
    return pd.DataFrame({"step": np.arange(1, n + 1), "grad_norm": np.linspace(1, 2, n), "loss": np.linspace(2, 1, n)})


def test_from_dataframe_builds_contract():
    df = tidy()
    ds = pb.from_dataframe(df, training_log=log_table())
    assert ds["score"].dims == ("order_parameter", "step", "prompt", "sample")
    assert ds.sizes == {"order_parameter": 2, "step": 4, "prompt": 2, "sample": 3, "train_step": 50}
    assert list(ds["step"].values) == [0, 10, 20, 30]
    # a value lands in its own cell
    row = df.iloc[17]
    got = ds["score"].sel(order_parameter=row.order_parameter, step=row.step, prompt=row.prompt, sample=row["sample"])
    assert float(got) == row.score
    assert (ds["score_status"].values == STATUS["ok"]).all()
    assert ds["response"].sel(step=10, prompt="q1", sample=2).item() == "answer 1-1-2"
    assert float(ds["grad_norm"].sel(train_step=50)) == 2.0
    assert float(ds["scale_max"].sel(order_parameter="alignment")) == 100.0


def test_nan_scores_are_masked_and_missing_rows_marked():
    df = tidy()
    df.loc[0, "score"] = np.nan
    df = df.drop(index=5)
    ds = pb.from_dataframe(df)
    assert int(np.isnan(ds["score"].values).sum()) == 2
    assert int((ds["score_status"].values == STATUS["missing"]).sum()) == 2


def test_status_column_kept():
    df = tidy()
    df["status"] = "ok"
    df.loc[3, ["score", "status"]] = [np.nan, "refusal"]
    ds = pb.from_dataframe(df)
    r = df.loc[3]
    code = ds["score_status"].sel(order_parameter=r.order_parameter, step=r.step, prompt=r.prompt, sample=r["sample"])
    assert int(code) == STATUS["refusal"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda df: df.iloc[0:0], "empty"),
        (lambda df: df.drop(columns=["sample"]), "lacks column"),
        (lambda df: pd.concat([df, df.iloc[[0]]]), "share the same"),
        (lambda df: df.assign(score=df["score"].astype(object).where(df.index != 2, "high")), "non-numeric"),
        (lambda df: df.assign(score=df["score"].where(df.index != 2, np.inf)), "infinite"),
        (lambda df: df.assign(score=df["score"].where(df.index != 2, 140.0)), "outside its declared scale"),
        (lambda df: df[df["step"] < 20], "at least 3 distinct"),
        (lambda df: df.assign(step=df["step"] + 0.5), "integers"),
        (lambda df: df.assign(step=df["step"] - 15), ">= 0"),
        (lambda df: df.assign(score=df["score"].where(df["order_parameter"] != "coherence", np.nan)), "no finite score"),
    ],
)
def test_bad_input_gives_clear_error(mutate, message):
    with pytest.raises(pb.RunDataError, match=message):
        pb.from_dataframe(mutate(tidy()))


def test_training_log_errors():
    with pytest.raises(pb.RunDataError, match="duplicate steps"):
        pb.from_dataframe(tidy(), training_log=pd.concat([log_table(), log_table().iloc[[3]]]))
    with pytest.raises(pb.RunDataError, match="'step' column"):
        pb.from_dataframe(tidy(), training_log=log_table().rename(columns={"step": "iteration"}))


def test_declared_scales():
    df = tidy()
    df.loc[df["order_parameter"] == "coherence", "score"] += 500
    with pytest.raises(pb.RunDataError, match="scales="):
        pb.from_dataframe(df)
    ds = pb.from_dataframe(df, scales={"coherence": None})
    assert np.isnan(float(ds["scale_max"].sel(order_parameter="coherence")))
    with pytest.raises(pb.RunDataError, match="not in the table"):
        pb.from_dataframe(tidy(), scales={"verbosity": (0, 10)})


def test_save_open_roundtrip_exact_and_refuses_overwrite(tmp_path):
    ds, _ = pb.simulate_run(n_steps=6, n_prompts=3, n_samples=4, missing_fraction=0.2, seed=3)
    ds["response"] = (("step", "prompt", "sample"), np.full((6, 3, 4), "text ü", dtype=object))
    path = pb.save_run(ds, tmp_path / "run.nc")
    back = pb.open_run(path)
    xr.testing.assert_identical(back.drop_attrs(), ds.drop_attrs())
    assert back.attrs["source"] == "phasebayes.simulate_run"
    with pytest.raises(pb.OutputExistsError, match="overwrite=True"):
        pb.save_run(ds, path)
    pb.save_run(ds, path, overwrite=True)
    assert not list(tmp_path.glob(".run.nc.*"))  # no temporary files left behind


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    from phasebayes.storage import atomic_path

    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, overwrite=True) as tmp:
            tmp.write_text("half-written")
            raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert list(tmp_path.iterdir()) == [target]


@pytest.mark.parametrize("family", ["beta", "binomial", "normal", "poisson", "negative_binomial"])
def test_simulator_families_follow_truth(family):
    ds, truth = pb.simulate_run(n_steps=12, n_prompts=3, n_samples=400, likelihood=family, order_parameters=["x"],
                                concentration=1.5, seed=1)
    y = ds["score"].sel(order_parameter="x").values
    mean = truth.cell_mean("x", ds["step"].values)
    np.testing.assert_allclose(y.mean(-1), mean, rtol=0.15, atol=0.05 * (np.abs(mean).max() + 1e-9) + 0.02)
    if family == "beta":  # bimodal judge scores: mass at both bounds
        assert (y == 0).mean() > 0.02 and (y == 100).mean() > 0.02


def test_simulator_uneven_steps_missing_and_spikes():
    ds, truth = pb.simulate_run(n_steps=30, uneven_steps=True, missing_fraction=0.1, n_grad_spikes=3, seed=4)
    steps = ds["step"].values
    assert len(steps) == 30 and np.all(np.diff(steps) > 0)
    assert np.diff(steps)[:5].mean() < np.diff(steps)[-5:].mean()  # denser early
    frac = np.isnan(ds["score"].values).mean()
    assert 0.07 < frac < 0.13
    assert set(np.unique(ds["score_status"].values[np.isnan(ds["score"].values)])) <= {1, 2, 4}
    g = ds["grad_norm"].to_series()
    for s in truth.grad_spike_steps:
        assert g.loc[s] > 3 * g.rolling(25, center=True).median().loc[s]
    smooth = g.rolling(41, center=True).median()
    assert abs(smooth.idxmax() - truth.grad_peak) < 40
    # same seed, same run
    ds2, _ = pb.simulate_run(n_steps=30, uneven_steps=True, missing_fraction=0.1, n_grad_spikes=3, seed=4)
    xr.testing.assert_identical(ds, ds2)

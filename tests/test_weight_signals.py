"""Weight-space reference signals from LoRA checkpoint folders (no base model)."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from phasebayes.errors import PhasebayesError
from phasebayes.readers.weights import lora_weight_signals, read_safetensors

MODULES = [f"base_model.model.model.layers.{i}.self_attn.{p}_proj" for i in range(3) for p in ("q", "v")]


def write_lora_trajectory(root, steps, turn_step, r=2, d_in=16, d_out=12, alpha=4, seed=0, dtype=np.float32,
                          turn_width=0.0):
    """B moves along one direction until ``turn_step``, then along an orthogonal one; A fixed + noise.

    ``turn_width`` > 0 turns the direction gradually (a logistic in steps with that scale) instead of at once.
    """
    rng = np.random.default_rng(seed)
    A = {m: rng.normal(size=(r, d_in)) for m in MODULES}
    u1 = {m: rng.normal(size=(d_out, r)) for m in MODULES}
    u2 = {m: rng.normal(size=(d_out, r)) for m in MODULES}
    flat1, flat2 = np.concatenate([u1[m].ravel() for m in MODULES]), np.concatenate([u2[m].ravel() for m in MODULES])
    proj = flat2 @ flat1 / (flat1 @ flat1)
    for m in MODULES:  # make the second direction orthogonal to the first (jointly over modules)
        u2[m] = u2[m] - proj * u1[m]
    Bs = {}
    grid = np.arange(0, max(steps) + 1)
    theta = (np.pi / 2 / (1 + np.exp(-(grid - turn_step) / turn_width)) if turn_width > 0
             else np.where(grid > turn_step, np.pi / 2, 0.0))
    c1, c2 = np.cumsum(np.cos(theta)) / 10.0, np.cumsum(np.sin(theta)) / 10.0  # position along u1, u2
    for s in steps:
        t1, t2 = c1[s], c2[s]
        tensors = {}
        for m in MODULES:
            B = t1 * u1[m] + t2 * u2[m] + 0.01 * rng.normal(size=(d_out, r))
            tensors[f"{m}.lora_A.weight"] = A[m].astype(dtype)
            tensors[f"{m}.lora_B.weight"] = B.astype(dtype)
            Bs.setdefault(s, {})[m] = B
        d = root / f"checkpoint-{s}"
        d.mkdir(parents=True)
        save_file(tensors, str(d / "adapter_model.safetensors"))
        (d / "adapter_config.json").write_text(json.dumps({"r": r, "lora_alpha": alpha, "peft_type": "LORA",
                                                           "target_modules": ["q_proj", "v_proj"]}))
    return A, Bs


def test_rotation_peaks_at_the_turn_and_norms_are_exact(tmp_path):
    steps = list(range(10, 210, 10))
    A, Bs = write_lora_trajectory(tmp_path, steps, turn_step=120, dtype=np.float64)
    ds = lora_weight_signals(tmp_path, window=2)
    assert list(ds["weight_step"].values) == steps
    rot = ds["lora_rotation"].values
    assert steps[int(np.nanargmax(rot))] == 120
    assert np.nanmax(rot) > 0.5 and np.nanmedian(rot) < 0.05
    s = 4 / 2
    for t in (0, 7, 19):
        dw = [s * Bs[steps[t]][m] @ A[m] for m in MODULES]
        assert ds["adapter_norm"].values[t] == pytest.approx(np.sqrt(sum((x**2).sum() for x in dw)), rel=1e-10)
        layer0 = np.sqrt(sum((x**2).sum() for x, m in zip(dw, MODULES) if ".layers.0." in m))
        assert ds["adapter_norm_layer"].sel(lora_layer=0).values[t] == pytest.approx(layer0, rel=1e-10)
    prev = [s * Bs[steps[4]][m] @ A[m] for m in MODULES]
    cur = [s * Bs[steps[5]][m] @ A[m] for m in MODULES]
    exact = np.sqrt(sum(((c - p) ** 2).sum() for c, p in zip(cur, prev)))
    assert ds["weight_distance"].values[5] == pytest.approx(exact, rel=1e-8)
    assert np.isnan(ds["weight_distance"].values[0]) and np.isnan(rot[:2]).all() and np.isnan(rot[-2:]).all()


def test_bf16_and_malformed_files(tmp_path):
    import torch
    from safetensors.torch import save_file as save_torch

    x = torch.tensor([[1.5, -2.25], [3.0, 0.125]], dtype=torch.bfloat16)
    save_torch({"w": x}, str(tmp_path / "t.safetensors"))
    np.testing.assert_array_equal(read_safetensors(tmp_path / "t.safetensors")["w"], x.float().numpy())
    (tmp_path / "bad.safetensors").write_bytes(b"\x05\x00")
    with pytest.raises(PhasebayesError, match="bad.safetensors: not a readable safetensors"):
        read_safetensors(tmp_path / "bad.safetensors")
    d = tmp_path / "run"
    write_lora_trajectory(d, [1], turn_step=1)
    with pytest.raises(PhasebayesError, match="at least 2 LoRA checkpoints"):
        lora_weight_signals(d)


@pytest.mark.slow
def test_peak_model_fits_the_rotation_signal(tmp_path):
    from phasebayes import GradientPeak

    steps = list(range(10, 410, 10))
    write_lora_trajectory(tmp_path, steps, turn_step=200, seed=1, turn_width=15.0)
    ds = lora_weight_signals(tmp_path, window=2)
    assert steps[int(np.nanargmax(ds["lora_rotation"].values))] in (190, 200, 210)
    res = GradientPeak(ds, signal="lora_rotation", log=False).fit(draws=300, tune=300, chains=2, cores=1, random_seed=0,
                                                                  progressbar=False, warn=False)
    row = res.summary().iloc[0]
    assert row["lower"] <= 200 <= row["upper"] and abs(row["median"] - 200) < 25 and row["upper"] - row["lower"] < 100


def test_peak_model_trough_form_negates_the_signal(tmp_path):
    from phasebayes import GradientPeak

    write_lora_trajectory(tmp_path, list(range(10, 210, 10)), turn_step=100, seed=2)
    ds = lora_weight_signals(tmp_path, window=2)
    gp = GradientPeak(ds, signal="lora_b_cosine", kind="trough", log=False)
    finite = np.isfinite(ds["lora_b_cosine"].values)
    np.testing.assert_allclose(gp.y, -ds["lora_b_cosine"].values[finite])
    assert gp.steps[np.argmax(gp.y)] == 100
    with pytest.raises(PhasebayesError, match="kind"):
        GradientPeak(ds, signal="lora_b_cosine", kind="valley")

"""Weight-space reference signals of a PEFT LoRA run, from the checkpoint folders alone (no base model).

For LoRA factors ``A`` (r × in) and ``B`` (out × r) with scaling ``s = lora_alpha / r`` the update of a
module is ΔW = s · B A. Per checkpoint (dim ``weight_step``):

- ``adapter_norm``: ‖ΔW‖_F over all modules (sqrt of the sum of squares), and ``adapter_norm_layer``
  per transformer layer (dim ``lora_layer``, the ``layers.N`` index of the module name);
- ``weight_distance``: ‖ΔW_t − ΔW_prev‖_F to the previous checkpoint (NaN at the first);
- ``lora_b_cosine``: local cosine similarity of the change direction of the B matrices,
  cos(B_t − B_{t−k}, B_{t+k} − B_t) over a window of k checkpoints (all B matrices concatenated); it
  drops where the direction turns (NaN within k of either end); ``lora_rotation`` = 1 − cosine, which
  peaks there (the "rotation" signal of published emergent-misalignment work).

Norms use r × r Gram matrices (‖BA‖² = tr(BᵀB · AAᵀ)), so the cost is tiny even for large layers. The
safetensors files are read with numpy (F64/F32/F16/BF16), without torch.
"""

from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import RunDataError

__all__ = ["read_safetensors", "lora_factors", "lora_weight_signals", "WEIGHT_SIGNALS"]

WEIGHT_SIGNALS = ("adapter_norm", "weight_distance", "lora_rotation")
"""The per-step weight-space reference signals (peaks); ``lora_b_cosine`` is the trough form of the last."""

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "I64": np.int64, "I32": np.int32}
_LAYER = re.compile(r"layers?\.(\d+)\.")


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of a ``.safetensors`` file as float64 numpy arrays (BF16 converted exactly)."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > 100_000_000:
                raise ValueError("header length is implausible")
            header = json.loads(fh.read(n))
            data = fh.read()
    except (OSError, ValueError, struct.error) as err:
        raise RunDataError(f"{path}: not a readable safetensors file ({err}); the checkpoint may be incomplete - "
                           "delete that checkpoint folder or re-save it.") from err
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dt = _DTYPES.get(meta.get("dtype"))
        if dt is None:
            raise RunDataError(f"{path}: tensor {name!r} has dtype {meta.get('dtype')!r}, which phasebayes cannot read.")
        a, b = meta["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=dt)
        if meta["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.astype(np.float64).reshape(meta["shape"])
    return out


def lora_factors(folder: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
    """Module name → (A, B, scaling) of one PEFT LoRA checkpoint folder."""
    folder = Path(folder)
    cfg_path = folder / "adapter_config.json"
    try:
        cfg = json.loads(cfg_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunDataError(f"{cfg_path}: unreadable adapter config ({err}); is {folder} a PEFT LoRA checkpoint?") from err
    weights = folder / "adapter_model.safetensors"
    if not weights.exists():
        raise RunDataError(f"{folder}: no adapter_model.safetensors (weight-space signals read LoRA checkpoints saved "
                           "with safetensors, PEFT's default).")
    tensors = read_safetensors(weights)
    r_default, alpha_default = cfg.get("r", 8), cfg.get("lora_alpha", 8)
    rank_pat, alpha_pat = cfg.get("rank_pattern") or {}, cfg.get("alpha_pattern") or {}
    out = {}
    for name, a in tensors.items():
        if ".lora_A." not in name and not name.endswith(".lora_A.weight"):
            continue
        module = name.split(".lora_A.")[0]
        b = tensors.get(name.replace(".lora_A.", ".lora_B."))
        if b is None:
            raise RunDataError(f"{weights}: {name} has no matching lora_B tensor.")
        short = module.split("model.")[-1]
        r = next((v for k, v in rank_pat.items() if short.endswith(k) or k in module), r_default)
        alpha = next((v for k, v in alpha_pat.items() if short.endswith(k) or k in module), alpha_default)
        scale = alpha / np.sqrt(r) if cfg.get("use_rslora") else alpha / r
        out[module] = (a, b, float(scale))
    if not out:
        raise RunDataError(f"{weights}: no LoRA A/B tensors found; weight-space signals need a LoRA adapter.")
    return out


def _sq_norm(a, b, s):
    return s * s * float(np.trace((b.T @ b) @ (a @ a.T)))


def _sq_dist(f1, f2):
    (a1, b1, s1), (a2, b2, s2) = f1, f2
    cross = s1 * s2 * float(np.trace((b1.T @ b2) @ (a2 @ a1.T)))
    return max(_sq_norm(a1, b1, s1) + _sq_norm(a2, b2, s2) - 2 * cross, 0.0)


def lora_weight_signals(folder: str | os.PathLike, *, window: int = 1, progress: bool = False) -> xr.Dataset:
    """Weight-space signals of every LoRA checkpoint in ``folder`` (see the module doc), dim ``weight_step``.

    ``window`` is k, the number of checkpoints on each side of the local cosine. Checkpoints are found as
    for generation (``checkpoint-N``, ``step_N``, ...); only LoRA checkpoints are read.
    """
    from ..llm.checkpoints import find_checkpoints  # name parsing only: no torch import

    if int(window) < 1:
        raise RunDataError(f"window must be >= 1 checkpoint, got {window}.")
    try:
        ckpts = [c for c in find_checkpoints(folder, include_base=False) if c.kind == "lora"]
    except Exception as err:  # ConfigError from discovery
        raise RunDataError(str(err)) from err
    if len(ckpts) < 2:
        raise RunDataError(f"{folder}: weight-space signals need at least 2 LoRA checkpoints, found {len(ckpts)}.")
    it = ckpts
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(ckpts, desc="weight signals", unit="ckpt")
    factors = [lora_factors(c.path) for c in it]
    modules = sorted(factors[0])
    for c, f in zip(ckpts, factors):
        if sorted(f) != modules:
            raise RunDataError(f"{c.path}: its LoRA modules differ from {ckpts[0].path}; all checkpoints must share one adapter layout.")
    layers = sorted({int(m.group(1)) for mod in modules if (m := _LAYER.search(mod))})
    layer_of = {mod: (int(m.group(1)) if (m := _LAYER.search(mod)) else -1) for mod in modules}
    T = len(ckpts)
    total = np.zeros(T)
    per_layer = np.zeros((T, len(layers)))
    dist = np.full(T, np.nan)
    bvec = np.stack([np.concatenate([f[m][1].ravel() * f[m][2] for m in modules]) for f in factors])
    for t, f in enumerate(factors):
        for m in modules:
            sq = _sq_norm(*f[m])
            total[t] += sq
            if layer_of[m] >= 0:
                per_layer[t, layers.index(layer_of[m])] += sq
        if t:
            dist[t] = np.sqrt(sum(_sq_dist(factors[t - 1][m], f[m]) for m in modules))
    k = int(window)
    cos = np.full(T, np.nan)
    for t in range(k, T - k):
        before, after = bvec[t] - bvec[t - k], bvec[t + k] - bvec[t]
        denom = np.linalg.norm(before) * np.linalg.norm(after)
        cos[t] = float(before @ after / denom) if denom > 0 else np.nan
    ds = xr.Dataset(
        {
            "adapter_norm": (("weight_step",), np.sqrt(total)),
            "adapter_norm_layer": (("weight_step", "lora_layer"), np.sqrt(per_layer)),
            "weight_distance": (("weight_step",), dist),
            "lora_b_cosine": (("weight_step",), cos),
            "lora_rotation": (("weight_step",), 1.0 - cos),
        },
        coords={"weight_step": np.array([c.step for c in ckpts], dtype=np.int64), "lora_layer": np.array(layers, dtype=np.int64)},
    )
    ds["adapter_norm"].attrs["description"] = "Frobenius norm of the LoRA update s*B@A over all modules"
    ds["weight_distance"].attrs["description"] = "Frobenius distance of the LoRA update to the previous checkpoint"
    ds["lora_b_cosine"].attrs["description"] = f"cosine of B_t - B_(t-{k}) and B_(t+{k}) - B_t (k = {k} checkpoints)"
    ds["lora_rotation"].attrs["description"] = "1 - lora_b_cosine: peaks where the direction of the B update turns"
    ds.attrs["weight_signal_window"] = k
    return ds

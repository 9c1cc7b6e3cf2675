"""The run dataset from the shards of a generate run (:func:`consolidate`), and the shard layout.

Output folder layout::

    manifest.json          settings fingerprint (a rerun must match it, or pass overwrite=True)
    samples/step-00000010.json
    logp/ref-00000010.npz
    run.nc                 the consolidated run dataset (no scores yet)
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import ConfigError
from ..version import __version__
from .prefix_logp import add_logp_prefix, read_prefix_shard

__all__ = ["consolidate", "RUN_FILE", "STOP_REASONS"]

RUN_FILE = "run.nc"
STOP_REASONS = ("eos", "length")
_MANIFEST = "manifest.json"


def _sample_path(out: Path, step: int) -> Path:
    return out / "samples" / f"step-{step:08d}.json"


def _logp_path(out: Path, step: int) -> Path:
    return out / "logp" / f"ref-{step:08d}.npz"


def consolidate(
    output_dir: str | os.PathLike,
    *,
    training_log: pd.DataFrame | str | os.PathLike | None = None,
    attrs: dict[str, Any] | None = None,
    save: bool = True,
    prefix_tokens: Sequence[int] | None = None,
) -> xr.Dataset:
    """Build the run dataset from the shards in ``output_dir`` (and save it as ``run.nc`` if ``save``).

    ``response``, ``token_ids`` and ``logp`` are lazy: they are read from the shard files one checkpoint
    (log-probs: one reference checkpoint) at a time when indexed or saved, so consolidating a large run
    never holds all texts in memory.

    Variables: ``response`` (str), ``n_tokens`` (int: response tokens without the final EOS),
    ``stop_reason`` (``"eos"``/``"length"``), ``token_ids`` (int32, the generated ids including the final
    EOS, padded with -1 along ``token``), ``logp`` (float64 nats; dims step, prompt, sample, ref_step;
    NaN outside the window), ``logp_prefix`` (float64 nats; dims step, prompt, sample, ref_step,
    prefix_tokens: log-probability of the first ``prefix_tokens`` tokens; only when the logp shards hold
    prefix data) and the training log (``train_step`` variables).

    ``prefix_tokens`` selects the prefix lengths of ``logp_prefix`` (a length a shard lacks is NaN
    there); ``None`` takes the lengths every logp shard holds, and no ``logp_prefix`` when there are none
    (e.g. shards written before prefix log-probabilities existed).
    """
    from ..run_io import save_run
    from ..runstore import BlockArray, lazy_variable

    out = Path(output_dir)
    man = out / _MANIFEST
    if not man.exists():
        raise ConfigError(f"{out} has no {_MANIFEST}; run generate() first.")
    fp = json.loads(man.read_text())
    steps = [int(c[0]) for c in fp["checkpoints"]]
    prompt_ids = [p[0] for p in fp["prompts"]]
    prompt_texts = [p[1] for p in fp["prompts"]]
    N = int(fp["config"]["n_samples"])
    P, S = len(prompt_ids), len(steps)

    shard_files = [_sample_path(out, s) for s in steps]
    for s, f in zip(steps, shard_files):
        if not f.exists():
            raise ConfigError(f"sample shard for step {s} is missing ({f}); rerun generate() to finish the run.")
    # one pass for the small per-answer arrays; texts, token ids and log-probs stay in their shard files
    # and are read one checkpoint at a time when the dataset is saved (or indexed)
    stop = np.empty((S, P, N), dtype=object)
    n_tok = np.zeros((S, P, N), dtype=np.int64)
    width, eos_ids = 1, None
    for i, f in enumerate(shard_files):
        sh = json.loads(f.read_text())
        stop[i] = np.array(sh["stop_reason"], dtype=object).reshape(P, N)
        n_tok[i] = np.asarray(sh["n_tokens"], dtype=np.int64).reshape(P, N)
        width = max(width, max((len(t) for row in sh["token_ids"] for t in row), default=1))
        if i == 0 and "eos_token_ids" in sh:
            eos_ids = [int(e) for e in sh["eos_token_ids"]]

    @functools.lru_cache(maxsize=2)
    def shard(i: int) -> dict[str, Any]:
        return json.loads(shard_files[i].read_text())

    def load_text(i: int) -> np.ndarray:
        arr = np.empty((P, N), dtype=object)
        for p in range(P):
            arr[p, :] = shard(i)["text"][p]
        return arr

    def load_tokens(i: int) -> np.ndarray:
        arr = np.full((P, N, width), -1, dtype=np.int32)
        for p in range(P):
            for n, t in enumerate(shard(i)["token_ids"][p]):
                arr[p, n, : len(t)] = t
        return arr

    index = {s: i for i, s in enumerate(steps)}

    def load_logp(j: int) -> np.ndarray:
        slab = np.full((S, P, N), np.nan)
        f = _logp_path(out, steps[j])
        if f.exists():
            with np.load(f) as z:
                for k, w in enumerate(z["steps"]):
                    slab[index[int(w)]] = z["logp"][k]
        return slab

    response = lazy_variable(("step", "prompt", "sample"), BlockArray((S, P, N), object, 0, load_text))
    token_ids = lazy_variable(("step", "prompt", "sample", "token"), BlockArray((S, P, N, width), np.int32, 0, load_tokens))
    logp = lazy_variable(("step", "prompt", "sample", "ref_step"), BlockArray((S, P, N, S), np.float64, 3, load_logp))
    held: dict[int, tuple[list[int], dict[int, np.ndarray]]] = {}  # ref position -> (window, prefix data)
    for j, s in enumerate(steps):
        f = _logp_path(out, s)
        if f.exists():
            with np.load(f) as z:
                held[j] = ([int(w) for w in z["steps"]], read_prefix_shard(z))
    ds = xr.Dataset(
        {
            "response": (("step", "prompt", "sample"), response),
            "n_tokens": (("step", "prompt", "sample"), n_tok),
            "stop_reason": (("step", "prompt", "sample"), stop),
            "token_ids": (("step", "prompt", "sample", "token"), token_ids),
            "logp": (("step", "prompt", "sample", "ref_step"), logp),
        },
        coords={
            "step": np.array(steps, dtype=np.int64),
            "prompt": np.array(prompt_ids, dtype=object),
            "prompt_text": ("prompt", np.array(prompt_texts, dtype=object)),
            "sample": np.arange(N, dtype=np.int64),
            "ref_step": np.array(steps, dtype=np.int64),
            "token": np.arange(width, dtype=np.int64),
        },
    )
    ds["logp"].attrs.update({"units": "nats", "description": "log P(response | prompt, checkpoint ref_step) at the sampling temperature; NaN = not computed"})
    ds = add_logp_prefix(ds, held, prefix_tokens)
    ds["n_tokens"].attrs["description"] = "response length in tokens, without the final EOS token"
    ds["token_ids"].attrs["description"] = "generated token ids including the final EOS (stop_reason 'eos'); -1 = padding"
    if training_log is not None:
        ds = merge_training_log(ds, training_log)
    ds.attrs.update(
        {
            "phasebayes_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "stage": "generate",
        }
    )
    if eos_ids is not None:
        ds.attrs["eos_token_ids"] = eos_ids
    if attrs:
        ds.attrs.update({k: v for k, v in attrs.items() if v is not None})
    if save:
        save_run(ds, out / RUN_FILE, overwrite=True, require_scores=False)
    return ds


def merge_training_log(ds: xr.Dataset, training_log: Any) -> xr.Dataset:
    """``ds`` with the training log (a path any reader knows, a table or a ``TrainingLog``) as ``train_step``
    variables, aligned to the checkpoint steps of ``ds`` (step 0, the base model, excluded when others exist)."""
    from ..readers.training_logs import TrainingLog, read_training_log, training_log_variables

    log = read_training_log(training_log) if isinstance(training_log, (str, os.PathLike)) else training_log
    if not isinstance(log, TrainingLog):
        log = TrainingLog(log)
    log.train = log.train.drop(columns=[c for c in ("seconds",) if c in log.train.columns])
    steps = [int(s) for s in ds["step"].values]
    ckpt_steps = [s for s in steps if s > 0] or steps
    return ds.merge(training_log_variables(log, checkpoint_steps=ckpt_steps, rename=list(ds.variables)),
                    combine_attrs="drop_conflicts")

"""Log-probabilities of response prefixes: the ``logp_prefix`` array of the generate stage.

The sequence log-probability ``logp`` of a response grows with its length, so a quantity built from it
depends on ``max_new_tokens``. ``logp_prefix`` holds, for a few prefix lengths m, the log-probability of
the first m tokens of each response under each reference checkpoint (the cumulative sum of the same
teacher-forced per-token log-probabilities, no extra model call), so a result can be stated at a fixed
answer length. Tokens are the generated ids including the final EOS; a response of at most m tokens
contributes its whole log-probability (equal to ``logp``).

Each logp shard ``logp/ref-{step}.npz`` then also holds ``prefix_tokens`` (int64, ``(M,)``) and
``logp_prefix`` (float64 nats, ``(window, prompt, sample, M)``); shards written without them stay valid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError
from .logprob import prefix_logprobs

__all__ = ["PREFIX_DIM", "check_prefix_tokens", "prefix_lengths", "shard_lacks_prefixes", "prefix_shard_arrays",
           "read_prefix_shard", "add_logp_prefix"]

PREFIX_DIM = "prefix_tokens"
"""Name of the prefix-length dimension (and int64 coordinate, in tokens) of ``logp_prefix``."""


def check_prefix_tokens(value: Any, *, key: str = "logp_prefix_tokens") -> None:
    """Raise :class:`ConfigError` unless ``value`` is a list/tuple of whole numbers >= 1 (may be empty)."""
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(m, (int, np.integer)) and not isinstance(m, bool) and m >= 1 for m in value
    )
    if not ok:
        raise ConfigError(f"{key} must be a list of positive whole token counts, e.g. [8, 16, 32] (or [] for none), "
                          f"got {value!r}.")


def prefix_lengths(value: Sequence[int], logp: bool = True) -> tuple[int, ...]:
    """The prefix lengths sorted and without repeats; empty when the logp stage is off."""
    return tuple(sorted({int(m) for m in value})) if logp else ()


def shard_lacks_prefixes(path: str | Path, wanted: Sequence[int]) -> bool:
    """True when the logp shard at ``path`` has no prefix log-probabilities for some length in ``wanted``."""
    if not wanted:
        return False
    with np.load(path) as z:
        have = set(z[PREFIX_DIM].tolist()) if PREFIX_DIM in z else set()
    return not set(wanted) <= have


def prefix_shard_arrays(per_token: Sequence[np.ndarray], lengths: Sequence[int], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The npz entries of one logp shard for ``lengths`` (none when empty); ``shape`` = (window, P, N)."""
    if not lengths:
        return {}
    values = prefix_logprobs(per_token, lengths).reshape(*shape, len(lengths))
    return {PREFIX_DIM: np.array(lengths, dtype=np.int64), "logp_prefix": values}


def read_prefix_shard(z: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Prefix length -> ``(window, P, N)`` log-probabilities held by an open logp shard (empty for old shards)."""
    if PREFIX_DIM not in z:
        return {}
    values = np.asarray(z["logp_prefix"])
    return {int(m): values[..., c] for c, m in enumerate(z[PREFIX_DIM])}


def add_logp_prefix(
    ds: xr.Dataset,
    held: Mapping[int, tuple[Sequence[int], Mapping[int, np.ndarray]]],
    prefix_tokens: Sequence[int] | None = None,
) -> xr.Dataset:
    """Add ``logp_prefix`` (step, prompt, sample, ref_step, prefix_tokens) to a consolidated run dataset.

    ``held`` maps the ref_step position of every logp shard present to ``(its window of steps, its
    read_prefix_shard() dict)``. ``prefix_tokens`` = the lengths wanted (a length a shard lacks is NaN
    there); None = the lengths every shard holds. Without lengths or shards ``ds`` is returned unchanged.
    """
    if prefix_tokens is None:
        prefix_tokens = sorted(set.intersection(*(set(pre) for _, pre in held.values()))) if held else []
    lengths = prefix_lengths(prefix_tokens)
    if not lengths or not held:
        return ds
    index = {int(s): i for i, s in enumerate(ds["step"].values)}
    S, P, N = ds.sizes["step"], ds.sizes["prompt"], ds.sizes["sample"]
    values = np.full((S, P, N, ds.sizes["ref_step"], len(lengths)), np.nan)
    for j, (window, pre) in held.items():
        for c, m in enumerate(lengths):
            if m in pre:
                for k, w in enumerate(window):
                    values[index[int(w)], :, :, j, c] = pre[m][k]
    ds = ds.assign_coords({PREFIX_DIM: np.array(lengths, dtype=np.int64)})
    ds["logp_prefix"] = (("step", "prompt", "sample", "ref_step", PREFIX_DIM), values)
    ds["logp_prefix"].attrs.update({
        "units": "nats",
        "description": "log P(first prefix_tokens tokens of the response | prompt, checkpoint ref_step) at the sampling "
                       "temperature; tokens are the generated ids incl. the final EOS, and a response of at most "
                       "prefix_tokens tokens gives its whole logp; NaN = not computed",
    })
    ds[PREFIX_DIM].attrs.update({"units": "tokens", "description": "prefix length m of logp_prefix"})
    return ds

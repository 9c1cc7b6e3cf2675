"""Judge a fixed-length prefix of each response: the text of its first m generated tokens.

An order parameter judged on whole responses depends on how long the answers were allowed to be
(``max_new_tokens``); judging the first m tokens of each answer states it at a fixed length, the same
prefix the ``logp_prefix`` array of the generate stage scores. The prefix is cut from the stored
``token_ids`` (the generated ids, final EOS included) and decoded with the base model's tokenizer the way
the generate stage decodes ``response`` (EOS dropped, special tokens skipped), so a prefix at least as long
as a response gives back that response's text exactly. A cut inside a multi-token character or word
decodes as the tokenizer renders that partial sequence.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xarray as xr

from ..errors import ConfigError, RunDataError

__all__ = ["check_judge_prefix", "prefix_texts"]


def check_judge_prefix(prefix_tokens: Any) -> int | None:
    """Return ``prefix_tokens`` as an int (None = whole responses); :class:`ConfigError` unless a whole number >= 1."""
    if prefix_tokens is None:
        return None
    if isinstance(prefix_tokens, bool) or not isinstance(prefix_tokens, (int, np.integer)) or prefix_tokens < 1:
        raise ConfigError(f"prefix_tokens must be a whole number of tokens >= 1 (or None for whole responses), "
                          f"got {prefix_tokens!r}.")
    return int(prefix_tokens)


def _tokenizer_for(ds: xr.Dataset, tokenizer: Any) -> Any:
    if tokenizer is not None:
        return tokenizer
    base = ds.attrs.get("base_model")
    if not base:
        raise ConfigError("judging a response prefix needs the tokenizer of the model that generated the responses; "
                          "the run dataset records no base_model, so pass tokenizer= (a Hugging Face tokenizer).")
    from ..llm.base_model import load_tokenizer

    return load_tokenizer(base)


def _eos_ids(value: Any) -> set[int]:
    """The ``eos_token_ids`` attribute as a set (a saved run dataset holds it as a JSON string)."""
    if isinstance(value, str):
        value = json.loads(value) if value.strip() else []
    if value is None:
        return set()
    return {int(e) for e in np.atleast_1d(value)}


def prefix_texts(ds: xr.Dataset, prefix_tokens: int, *, tokenizer: Any = None) -> np.ndarray:
    """Text of the first ``prefix_tokens`` generated tokens of every response, shape (step, prompt, sample).

    Needs ``token_ids`` (step, prompt, sample, token; -1 = padding) as the generate stage stores it;
    ``tokenizer`` defaults to the one of ``ds.attrs["base_model"]``. Cells whose ``response`` is missing
    stay None. Raises :class:`RunDataError` without ``token_ids`` and :class:`ConfigError` for a bad length.
    """
    m = check_judge_prefix(prefix_tokens)
    if "token_ids" not in ds:
        raise RunDataError("judging a response prefix needs the generated token ids ('token_ids'), which this run "
                           "dataset does not have (it was not made by the generate stage); judge whole responses "
                           "(prefix_tokens = None) instead.")
    tok = _tokenizer_for(ds, tokenizer)
    eos = _eos_ids(ds.attrs.get("eos_token_ids")) or {int(tok.eos_token_id)}
    ids = ds["token_ids"].transpose("step", "prompt", "sample", "token").values
    resp = ds["response"].transpose("step", "prompt", "sample").values if "response" in ds else None
    out = np.empty(ids.shape[:3], dtype=object)
    for cell in np.ndindex(*ids.shape[:3]):
        if resp is not None and (resp[cell] is None or (isinstance(resp[cell], float) and np.isnan(resp[cell]))):
            out[cell] = None
            continue
        seq = [int(t) for t in ids[cell] if t >= 0][:m]
        if seq and seq[-1] in eos:
            seq = seq[:-1]
        out[cell] = tok.decode(seq, skip_special_tokens=True)
    return out

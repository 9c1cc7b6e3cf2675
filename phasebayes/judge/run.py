"""Judge a run dataset: fill ``score`` / ``score_status`` for a set of rubrics with one judge.

:func:`judge_run` takes a run dataset from the generate stage (``response`` on ``step × prompt ×
sample``, ``prompt_text`` on ``prompt``), judges every response under every rubric (k replicates
for stochastic judges), using and filling the persistent :class:`~phasebayes.judge.cache.JudgeCache`,
and returns the dataset with, on the ``order_parameter`` dimension:

============================  ======================================================================
``score``                     mean over the ok replicates (NaN where none)
``score_status``              int16 code (:data:`phasebayes.dataset.STATUS`): ok if any replicate is
                              ok, else the most frequent status among the replicates
``score_reason``              text: why a cell has no score ("" when ok)
``score_replicates``          (… , replicate) per-replicate scores (only when k > 1)
``score_replicate_status``    (… , replicate) per-replicate status codes (only when k > 1)
``rubric_text``               full judge instructions of each order parameter
``rubric_version``            content hash of the rubric
``judge_id``                  ``kind:model#fingerprint`` of the judge
``scale_min``, ``scale_max``  the rubric's scale
``judge_prefix_tokens``       int: the order parameter was judged on the first m generated tokens of
                              each response (``prefix_tokens=m``); 0 = on whole responses
============================  ======================================================================

Order parameters already in the dataset and not re-judged are kept; re-judged ones are replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import threading
import warnings
from collections import Counter
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np
import xarray as xr

from ..dataset import STATUS, validate
from ..errors import ConfigError, RunDataError
from ..texts import has_texts, iter_responses
from .base import Judge, Judgement, JudgeItem
from .cache import JudgeCache, cache_key
from .rubric import Rubric
from .usage import JudgeUsage

__all__ = ["judge_run", "judge_texts", "run_coroutine", "open_cache", "rubrics_of"]

T = TypeVar("T")
_BLOCK_ITEMS = 50_000  # texts judged per block of checkpoints (bounds the memory of a large run)
_OP_DEFAULTS: dict[str, Any] = {
    "score": np.nan, "score_status": STATUS["missing"], "score_reason": "", "score_replicates": np.nan,
    "score_replicate_status": STATUS["missing"], "rubric_text": "", "rubric_version": "", "judge_id": "",
    "scale_min": np.nan, "scale_max": np.nan, "judge_prefix_tokens": 0,
}


def run_coroutine(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also from inside a running event loop (e.g. Jupyter)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def open_cache(cache: JudgeCache | str | os.PathLike | None) -> tuple[JudgeCache, bool]:
    """Return ``(cache, owned)``; a path opens a cache file, None an in-memory one."""
    if isinstance(cache, JudgeCache):
        return cache, False
    return JudgeCache(":memory:" if cache is None else cache), True


def judge_texts(
    judge: Judge,
    rubric: Rubric,
    items: Sequence[JudgeItem],
    *,
    cache: JudgeCache | str | os.PathLike | None = None,
    progress: bool = False,
    chunk: int = 64,
) -> list[Judgement]:
    """Judge a list of items under one rubric with the cache in front; one judgement per item.

    Cache hits cost nothing (``calls == 0``); identical items are judged once. New answers are
    written to the cache as soon as each one arrives (async judges) or after each chunk of
    ``chunk`` items (synchronous judges), so an interrupted job loses at most the work in flight.
    """
    store, owned = open_cache(cache)
    try:
        keys = [cache_key(judge.fingerprint, rubric.version, it.prompt, it.response, it.replicate) for it in items]
        found = store.get_many(keys)
        out: list[Judgement | None] = [found.get(k) for k in keys]
        todo_index: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            if out[i] is None:
                todo_index.setdefault(k, []).append(i)
        todo_keys = list(todo_index)
        todo_items = [items[todo_index[k][0]] for k in todo_keys]

        def on_result(j: int, judgement: Judgement) -> None:
            key = todo_keys[j]
            stored = store.put(key, judgement, judge_id=judge.judge_id, rubric_version=rubric.version,
                               replicate=todo_items[j].replicate)
            if not stored and judgement.cacheable:  # stored first by another process (or by batch mode): use
                # that answer, keeping what this call cost (calls, token usage, re-asks)
                judgement = dataclasses.replace(store.get(key) or judgement, calls=judgement.calls, extra=judgement.extra)
            for i in todo_index[key]:
                out[i] = judgement

        if todo_items:
            if judge.is_async:
                run_coroutine(judge.ajudge_items(rubric, todo_items, on_result=on_result, progress=progress,
                                                 keys=todo_keys, cache=store))
            else:
                bar = None
                if progress:
                    from tqdm.auto import tqdm

                    bar = tqdm(total=len(todo_items), desc=f"judge {rubric.name} ({judge.model_name})", unit="item")
                for start in range(0, len(todo_items), chunk):
                    part = todo_items[start : start + chunk]
                    for j, judgement in enumerate(judge.judge_items(rubric, part)):
                        on_result(start + j, judgement)
                    if bar is not None:
                        bar.update(len(part))
                if bar is not None:
                    bar.close()
        return [o if o is not None else Judgement(status="missing", reason="not judged") for o in out]
    finally:
        if owned:
            store.close()


def rubrics_of(judge: Judge, rubrics: Sequence[Rubric] | Rubric | None = None) -> list[Rubric]:
    """The rubrics ``judge`` scores: the given ones, else the judge's own (metric judges), else the defaults."""
    if isinstance(rubrics, Rubric):
        return [rubrics]
    if rubrics:
        return list(rubrics)
    own = judge.rubrics()
    if own is not None:
        return list(own)
    from .rubric import default_rubrics

    return list(default_rubrics())


def _prompt_texts(ds: xr.Dataset) -> list[str]:
    if not has_texts(ds):
        raise RunDataError("the run dataset has no 'response' variable; generate responses first "
                           "(or build the dataset with a 'response' column).")
    prompts = [str(p) for p in ds["prompt"].values]
    return [str(t) for t in ds["prompt_text"].values] if "prompt_text" in ds.coords or "prompt_text" in ds else prompts


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def judge_run(
    ds: xr.Dataset,
    rubrics: Sequence[Rubric] | Rubric | None = None,
    judge: Judge | None = None,
    *,
    cache: JudgeCache | str | os.PathLike | None = None,
    progress: bool = True,
    prefix_tokens: int | None = None,
    tokenizer: Any = None,
) -> xr.Dataset:
    """Judge every response of a run dataset under each rubric; return the dataset with scores.

    Parameters
    ----------
    ds
        Run dataset with ``response`` (step, prompt, sample) and the ``prompt_text`` coordinate.
    rubrics
        Order parameters to judge; default: the judge's own (metric judges) or
        :func:`~phasebayes.judge.rubric.default_rubrics`.
    judge
        Any :class:`~phasebayes.judge.base.Judge`; its ``replicates`` gives k per response.
    cache
        A :class:`JudgeCache`, a path to its SQLite file (recommended: a rerun then costs nothing and
        a killed job resumes), or None for an in-memory cache.
    progress
        Show tqdm progress bars.
    prefix_tokens
        Judge only the first m generated tokens of each response (see :mod:`phasebayes.judge.prefix`;
        needs ``token_ids``), so the order parameter is stated at a fixed answer length like the
        ``logp_prefix`` array; recorded as ``judge_prefix_tokens``. None (default) = whole responses.
    tokenizer
        Tokenizer that decodes the prefixes (default: that of ``ds.attrs["base_model"]``).

    Returns
    -------
    A new dataset; see the module docstring for the variables added. Cells whose response is
    missing get status ``missing``.
    """
    if judge is None:
        raise ConfigError("judge_run needs a judge, e.g. ClaudeJudge(), LocalLMJudge(...), MetricJudge('length_tokens').")
    validate(ds, require_scores=False)
    rubrics = rubrics_of(judge, rubrics)
    names = [r.name for r in rubrics]
    if len(set(names)) != len(names):
        raise ConfigError(f"rubric names must be unique; got {names}.")
    texts = _prompt_texts(ds)
    n_step, n_prompt, n_sample = (ds.sizes[d] for d in ("step", "prompt", "sample"))
    prefixed = None
    if prefix_tokens is not None:
        from .prefix import prefix_texts

        prefixed = prefix_texts(ds, prefix_tokens, tokenizer=tokenizer)  # (step, prompt, sample), from token ids
    k = 1 if judge.deterministic else int(judge.replicates)
    usage = JudgeUsage(judge.model_name) if judge.kind == "claude" else None
    store, owned = open_cache(cache)
    try:
        shape = (len(rubrics), n_step, n_prompt, n_sample, k)
        rep_score = np.full(shape, np.nan)
        rep_status = np.full(shape, STATUS["missing"], dtype=np.int16)
        rep_reason = np.full(shape, "response missing", dtype=object)
        first = 0
        # texts are read (and judged) a block of checkpoints at a time, so memory stays bounded
        for block in iter_responses(ds, max_texts=max(1, _BLOCK_ITEMS // k)):
            resp = block.transpose("step", "prompt", "sample").values
            if prefixed is not None:
                resp = prefixed[first:first + resp.shape[0]]
            cells = [(first + s, p, n) for s in range(resp.shape[0]) for p in range(n_prompt) for n in range(n_sample)
                     if not _is_missing(resp[s, p, n])]
            items = [JudgeItem(texts[p], str(resp[s - first, p, n]), r) for (s, p, n) in cells for r in range(k)]
            first += resp.shape[0]
            for ri, rubric in enumerate(rubrics):
                judgements = judge_texts(judge, rubric, items, cache=store, progress=progress)
                if usage is not None:  # identical items share one judgement object: count it once
                    usage.add({id(j): j for j in judgements}.values())
                for (s, p, n), start in zip(cells, range(0, len(items), k)):
                    for r in range(k):
                        j = judgements[start + r]
                        rep_score[ri, s, p, n, r] = j.score if j.status == "ok" else np.nan
                        rep_status[ri, s, p, n, r] = STATUS[j.status]
                        rep_reason[ri, s, p, n, r] = j.reason[:300]
    finally:
        if owned:
            store.close()
    new = _aggregate(rep_score, rep_status, rep_reason, rubrics, judge, ds)
    new["judge_prefix_tokens"] = ("order_parameter", np.full(len(rubrics), int(prefix_tokens or 0), dtype=np.int64))
    out = _merge(ds, new)
    if usage is not None:
        recorded = json.loads(out.attrs.get("judge_usage", "{}"))
        recorded[judge.judge_id] = usage.to_dict()
        out.attrs["judge_usage"] = json.dumps(recorded, sort_keys=True)
    for name in names:
        if not np.isfinite(out["score"].sel(order_parameter=name).values).any():
            warnings.warn(f"order parameter '{name}' got no score at all (see score_reason); "
                          "the dataset will not validate until it has one.", stacklevel=2)
    return out


def _aggregate(rep_score, rep_status, rep_reason, rubrics, judge, ds) -> xr.Dataset:
    ok = rep_status == STATUS["ok"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        score = np.nanmean(np.where(ok, rep_score, np.nan), axis=-1)
    n_op, n_step, n_prompt, n_sample, k = rep_status.shape
    status = np.empty(score.shape, dtype=np.int16)
    reason = np.empty(score.shape, dtype=object)
    flat_status = rep_status.reshape(-1, k)
    flat_reason = rep_reason.reshape(-1, k)
    for c in range(flat_status.shape[0]):
        row = flat_status[c]
        if (row == STATUS["ok"]).any():
            status.flat[c] = STATUS["ok"]
            reason.flat[c] = ""
        else:
            code = Counter(row.tolist()).most_common(1)[0][0]
            status.flat[c] = code
            reason.flat[c] = next(flat_reason[c][r] for r in range(k) if row[r] == code)
    dims = ("order_parameter", "step", "prompt", "sample")
    data: dict[str, Any] = {
        "score": (dims, score),
        "score_status": (dims, status),
        "score_reason": (dims, reason),
        "rubric_text": (("order_parameter",), np.array([r.text() for r in rubrics], dtype=object)),
        "rubric_version": (("order_parameter",), np.array([r.version for r in rubrics], dtype=object)),
        "judge_id": (("order_parameter",), np.array([judge.judge_id] * n_op, dtype=object)),
        "scale_min": (("order_parameter",), np.array([r.scale_min for r in rubrics], dtype=float)),
        "scale_max": (("order_parameter",), np.array([r.scale_max for r in rubrics], dtype=float)),
    }
    if k > 1:
        data["score_replicates"] = (dims + ("replicate",), rep_score)
        data["score_replicate_status"] = (dims + ("replicate",), rep_status)
    coords = {"order_parameter": np.array([r.name for r in rubrics], dtype=object),
              "step": ds["step"].values, "prompt": ds["prompt"].values, "sample": ds["sample"].values}
    if k > 1:
        coords["replicate"] = np.arange(k)
    return xr.Dataset(data, coords=coords)


def _default_like(var: xr.DataArray, name: str, ops: np.ndarray) -> xr.DataArray:
    fill = _OP_DEFAULTS.get(name, np.nan if var.dtype.kind == "f" else ("" if var.dtype == object else 0))
    shape = tuple(len(ops) if d == "order_parameter" else var.sizes[d] for d in var.dims)
    dtype = var.dtype if not (var.dtype.kind in "iu" and isinstance(fill, float)) else float
    arr = np.full(shape, fill, dtype=dtype)
    coords = {d: (ops if d == "order_parameter" else var[d].values) for d in var.dims if d in var.coords}
    return xr.DataArray(arr, dims=var.dims, coords=coords)


def _merge(ds: xr.Dataset, new: xr.Dataset) -> xr.Dataset:
    """Replace/add the order parameters of ``new`` in ``ds``, keeping all others."""
    new_ops = list(new["order_parameter"].values)
    if "order_parameter" not in ds.dims:
        base = ds
        old = None
    else:
        keep = [op for op in ds["order_parameter"].values if op not in set(new_ops)]
        old_all = ds[[v for v in ds.data_vars if "order_parameter" in ds[v].dims]]
        old = old_all.sel(order_parameter=keep) if keep else None
        base = ds.drop_dims("order_parameter")
        if "replicate" in base.dims:
            base = base.drop_dims("replicate")
    if old is not None and len(old["order_parameter"]):
        parts = [old, new]
        names = list(dict.fromkeys([*old.data_vars, *new.data_vars]))
        fixed = []
        for part in parts:
            part = part.copy()
            for name in names:
                if name not in part:
                    src = new[name] if name in new else old[name]
                    part[name] = _default_like(src, name, part["order_parameter"].values)
            fixed.append(part)
        if "replicate" in new.dims or "replicate" in old.dims:
            n_rep = max(p.sizes.get("replicate", 0) for p in fixed)
            fixed = [p.reindex(replicate=np.arange(n_rep), fill_value={
                "score_replicates": np.nan, "score_replicate_status": STATUS["missing"]}) if "replicate" in p.dims else p
                for p in fixed]
        merged = xr.concat(fixed, dim="order_parameter", data_vars="all", coords="minimal", compat="override",
                           join="outer")
        if "score_replicate_status" in merged:
            merged["score_replicate_status"] = merged["score_replicate_status"].fillna(STATUS["missing"]).astype(np.int16)
        merged["score_status"] = merged["score_status"].astype(np.int16)
    else:
        merged = new
    out = base.merge(merged, compat="override", join="left" if "step" in base.dims else "outer")
    out.attrs = dict(ds.attrs)
    info_ids = dict(zip(map(str, out["order_parameter"].values), map(str, out["judge_id"].values))) \
        if "judge_id" in out else {}
    info_versions = dict(zip(map(str, out["order_parameter"].values), map(str, out["rubric_version"].values))) \
        if "rubric_version" in out else {}
    out.attrs["judge_ids"] = json.dumps(info_ids, sort_keys=True)
    out.attrs["rubric_versions"] = json.dumps(info_versions, sort_keys=True)
    if "judge_prefix_tokens" in out:
        out.attrs["judge_prefix_tokens"] = json.dumps(
            dict(zip(map(str, out["order_parameter"].values), map(int, out["judge_prefix_tokens"].values))), sort_keys=True)
    return out

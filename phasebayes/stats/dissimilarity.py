"""Dissimilarity curves over the checkpoint grid: the total change and each order parameter's change.

For every boundary between neighbouring checkpoints (window half-length L, see :mod:`.divergence`):

- **total change** ``d_total``: the exact-likelihood estimator (:mod:`.total_change`) from ``logp``
  (or, on a fixed-length answer prefix, from ``logp_prefix``), or the held-out classifier lower bound
  (:mod:`.classifier_bound`) from response embeddings when there is no ``logp``;
- **per order parameter and joint** ``d_op``: the posterior of D from the Bayesian histogram model
  (:mod:`.histogram_posterior`) on coarsened scores (:mod:`.score_bins`): posterior mean and an
  equal-tailed interval, with ``p_no_change``; ``0 ≤ D_k ≤ D_joint`` in every posterior draw.

All curves are prompt averages (the divergence of the joint (prompt, response) distribution).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from ..dataset import validate
from ..defaults import CI_PROB
from ..errors import ModelSpecError, RunDataError
from ..intervals import interval_along
from ..storage import SavedResult
from .classifier_bound import classifier_terms
from .divergence import MEASURES, check_measure, window_slots
from .histogram_posterior import HistogramDraws, histogram_posterior
from .score_bins import ScoreBins, coarsen_scores, window_counts
from .total_change import likelihood_terms, stratified_mean, stratified_se
from .tree_io import find_node, netcdf_safe, restore

__all__ = ["dissimilarity", "DissimilarityResult", "length_curve", "MEASURES", "N_DRAWS"]

N_DRAWS = 1000
"""Default posterior draws of the histogram model."""


@dataclass
class Prepared:
    """Arrays shared by :func:`dissimilarity` and :mod:`.decomposition`."""

    steps: np.ndarray
    prompts: np.ndarray
    window: int
    measure: str
    total_estimator: str
    total_terms: np.ndarray | None  # (n_b, 2L, P, S)
    total_ok: np.ndarray | None
    bins: ScoreBins | None
    idx: np.ndarray
    valid: np.ndarray
    answer_length: dict

    @property
    def mid_steps(self) -> np.ndarray:
        return 0.5 * (self.steps[:-1] + self.steps[1:])


def _total_inputs(ds, steps, window, measure, total, embeddings, on_missing, classifier_options, prefix_tokens, rng):
    if total not in ("auto", "likelihood", "classifier", "none"):
        raise ModelSpecError(f"total must be 'auto', 'likelihood', 'classifier' or 'none', got {total!r}.")
    emb = embeddings if embeddings is not None else (ds["embedding"] if "embedding" in ds else None)
    if total == "auto":
        total = "likelihood" if "logp" in ds else ("classifier" if emb is not None else "none")
    if total == "likelihood":
        name = "logp" if prefix_tokens is None else "logp_prefix"
        if name not in ds:
            raise RunDataError(
                f"the total change needs '{name}' in the run dataset: score the responses under every checkpoint "
                "of their windows ([generate] logp = true" + ("" if prefix_tokens is None else ", logp_prefix_tokens")
                + "), or use total='classifier' with sentence embeddings."
            )
        lp = ds[name]
        if prefix_tokens is not None:
            avail = [int(m) for m in lp["prefix_tokens"].values]
            if int(prefix_tokens) not in avail:
                raise ModelSpecError(f"prefix_tokens={prefix_tokens} was not computed; the run has {avail}.")
            lp = lp.sel(prefix_tokens=int(prefix_tokens))
        if set(lp.dims) != {"step", "prompt", "sample", "ref_step"}:
            raise RunDataError(f"'{name}' must have dims (step, prompt, sample, ref_step), has {lp.dims}.")
        unknown = np.setdiff1d(lp["ref_step"].values, steps)
        if len(unknown):
            raise RunDataError(f"'{name}' has ref_step values {list(unknown[:5])} that are not checkpoint steps.")
        lp = lp.reindex(ref_step=steps).transpose("step", "prompt", "sample", "ref_step").values
        return (*likelihood_terms(lp, window, measure, on_missing=on_missing), "exact_likelihood")
    if total == "classifier":
        if emb is None:
            raise RunDataError("total='classifier' needs sentence embeddings: add ds['embedding'] with "
                               "phasebayes.embeddings.add_embeddings(ds) or pass embeddings=.")
        if isinstance(emb, xr.DataArray):
            other = [d for d in emb.dims if d not in ("step", "prompt", "sample")]
            if len(other) != 1 or not {"step", "prompt", "sample"} <= set(emb.dims):
                raise RunDataError(f"embeddings must have dims (step, prompt, sample, <dim>), has {emb.dims}.")
            emb = emb.transpose("step", "prompt", "sample", other[0]).values
        emb = np.asarray(emb, dtype=float)
        expect = (len(steps), ds.sizes["prompt"], ds.sizes.get("sample", -1))
        if emb.ndim != 4 or emb.shape[:3] != expect:
            raise RunDataError(f"embeddings must have shape {expect} + (dim,), got {emb.shape}.")
        return (*classifier_terms(emb, window, measure, rng=rng, **dict(classifier_options or {})),
                "classifier_lower_bound")
    return None, None, "none"


def _answer_length(ds: xr.Dataset, prefix_tokens: int | None) -> dict:
    out = {"prefix_tokens": -1 if prefix_tokens is None else int(prefix_tokens)}
    if "n_tokens" in ds:
        n = ds["n_tokens"].values.astype(float)
        out["mean_answer_tokens"] = float(np.nanmean(n)) if np.isfinite(n).any() else float("nan")
    gen = ds.attrs.get("generation")
    if isinstance(gen, str):
        try:
            gen = json.loads(gen)
        except ValueError:
            gen = None
    if isinstance(gen, Mapping) and "max_new_tokens" in gen:
        out["max_new_tokens"] = int(gen["max_new_tokens"])
    return out


def prepare(ds: xr.Dataset, window: int, measure: str, *, order_parameters=None, bins=None, total="auto",
            embeddings=None, on_missing="raise", classifier_options=None, prefix_tokens=None, rng=None) -> Prepared:
    """Validate the inputs and compute the total-change terms and the score bins (no posterior yet)."""
    measure = check_measure(measure)
    if not isinstance(ds, xr.Dataset):
        raise RunDataError(f"expected a run dataset (xarray.Dataset), got {type(ds).__name__}.")
    validate(ds, require_scores=False)
    from ..models.aggregated import require_per_answer  # aggregated runs (counts, summaries) have no answers

    require_per_answer(ds, "the dissimilarity and the decomposition")
    if "prompt" not in ds.dims:
        raise RunDataError("the run dataset has no 'prompt' dimension.")
    steps = ds["step"].values.astype(np.int64)
    idx, valid = window_slots(len(steps), window)
    terms, ok, estimator = _total_inputs(ds, steps, window, measure, total, embeddings, on_missing,
                                         classifier_options, prefix_tokens, np.random.default_rng(rng))
    sb = None
    if "score" in ds:
        all_ops = [str(o) for o in ds["order_parameter"].values]
        names = all_ops if order_parameters is None else [str(o) for o in order_parameters]
        unknown = [o for o in names if o not in all_ops]
        if unknown:
            raise RunDataError(f"unknown order parameter(s) {unknown}; the run has {all_ops}.")
        score = ds["score"].sel(order_parameter=names).transpose("order_parameter", "step", "prompt", "sample").values
        sb = coarsen_scores(score, names, bins)
    elif order_parameters:
        raise RunDataError("order parameters were requested but the run dataset has no 'score'.")
    return Prepared(steps, ds["prompt"].values, int(window), measure, estimator, terms, ok, sb, idx, valid,
                    _answer_length(ds, prefix_tokens))


def posterior_draws(prep: Prepared, n_draws: int, rng: np.random.Generator,
                    boundaries: np.ndarray | None = None) -> HistogramDraws:
    """Histogram-model draws at the given boundary indices (default: every boundary); see
    :func:`~.histogram_posterior.histogram_posterior`."""
    sb = prep.bins
    n_left, n_right = window_counts(sb.joint_codes, sb.n_joint, prep.window)
    run_counts = np.bincount(sb.joint_codes[sb.joint_codes >= 0], minlength=sb.n_joint).astype(float)
    if boundaries is not None:
        n_left, n_right = n_left[boundaries], n_right[boundaries]
    margins = [sb.marginal_matrix(k) for k in range(len(sb.names))]
    return histogram_posterior(n_left, n_right, margins, prep.measure, run_counts=run_counts, n_draws=n_draws, rng=rng)


def _total_curves(prep: Prepared) -> dict:
    d_p = stratified_mean(prep.total_terms, prep.total_ok, prep.window)
    se_p = stratified_se(prep.total_terms, prep.total_ok, prep.window)
    n_p = np.isfinite(d_p).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.sqrt(np.nansum(se_p**2, axis=1)) / n_p
    return {"d_total_prompt": (("mid_step", "prompt"), d_p), "d_total_se_prompt": (("mid_step", "prompt"), se_p),
            "d_total": (("mid_step",), np.nanmean(d_p, axis=1)), "d_total_se": (("mid_step",), se)}


def build_result(prep: Prepared, draws: HistogramDraws | None, *, ci_prob: float, random_seed) -> "DissimilarityResult":
    """Assemble the curves of :func:`dissimilarity` from prepared inputs and histogram draws."""
    steps, L = prep.steps, prep.window
    coords = {"mid_step": prep.mid_steps, "left_step": ("mid_step", steps[:-1]), "right_step": ("mid_step", steps[1:]),
              "n_left": ("mid_step", prep.valid[:, :L].sum(1).astype(np.int64)),
              "n_right": ("mid_step", prep.valid[:, L:].sum(1).astype(np.int64)), "prompt": prep.prompts}
    data = _total_curves(prep) if prep.total_terms is not None else {}
    if draws is not None:
        names = prep.bins.names + ["joint"]
        with np.errstate(invalid="ignore"):
            pop = np.nanmean(draws.d, axis=-1)  # (n_draws, n_b, K+1)
        lo, hi = interval_along(pop, ci_prob, "eti", axis=0)
        dims = ("order_parameter", "mid_step")
        data["d_op"] = (dims, np.nanmean(pop, axis=0).T)
        data["d_op_lower"] = (dims, lo.T)
        data["d_op_upper"] = (dims, hi.T)
        data["p_no_change"] = (dims, draws.p_no_change.T)
        data["d_op_prompt"] = (dims + ("prompt",), np.nanmean(draws.d, axis=0).transpose(1, 0, 2))
        coords["order_parameter"] = np.array(names, dtype=object)
        coords["n_bins"] = ("order_parameter", np.array(prep.bins.n_bins + [prep.bins.n_joint], dtype=np.int64))
    out = xr.Dataset(data, coords=coords)
    out.attrs = {
        "measure": prep.measure, "units": "bits" if prep.measure == "js" else "1", "window": int(L),
        "edge_windows": "truncated", "total_estimator": prep.total_estimator,
        "order_parameter_estimator": "histogram_posterior" if draws is not None else "none",
        "ci_prob": float(ci_prob), "ci_kind": "eti",
        "bins": json.dumps(prep.bins.edges if prep.bins is not None else {}),
        "answer_length": json.dumps(prep.answer_length),
        "random_seed": -1 if random_seed is None else int(random_seed),
    }
    if prep.total_estimator == "classifier_lower_bound":
        out.attrs["note"] = "total change is a held-out classifier lower bound, not an unbiased estimate"
    return DissimilarityResult(out)


def dissimilarity(
    ds: xr.Dataset,
    window: int = 3,
    measure: str = "linear",
    *,
    order_parameters: Sequence[str] | None = None,
    bins: int | Sequence[float] | Mapping[str, int | Sequence[float]] | None = None,
    total: str = "auto",
    embeddings: np.ndarray | xr.DataArray | None = None,
    on_missing: str = "raise",
    classifier_options: Mapping | None = None,
    prefix_tokens: int | None = None,
    n_draws: int = N_DRAWS,
    ci_prob: float = CI_PROB,
    random_seed: int | None = 0,
) -> DissimilarityResult:
    """Total and per-order-parameter dissimilarity curves of a run.

    Parameters
    ----------
    ds
        Run dataset with ``score`` and ``logp`` (or ``embedding``, or ``logp_prefix``).
    window
        Half-length L of the windows (checkpoints per side).
    measure
        ``"linear"`` (default), ``"tv"`` or ``"js"`` (bits).
    order_parameters
        Subset of order parameters (default: all); ``joint`` is always their vector.
    bins
        Score bins (:mod:`phasebayes.stats.score_bins`): None (default), an int, edges, or a mapping.
    total
        ``"auto"`` (likelihood if ``logp``, else classifier if embeddings, else none), ``"likelihood"``,
        ``"classifier"`` or ``"none"``.
    embeddings
        ``(step, prompt, sample, dim)`` response embeddings (overrides ``ds["embedding"]``).
    on_missing
        ``"raise"`` or ``"drop"``: samples whose ``logp`` is incomplete within a window.
    classifier_options
        Keyword arguments of :func:`~phasebayes.stats.classifier_bound.classifier_terms`.
    prefix_tokens
        Compute the total change on the first ``m`` tokens of every answer (needs ``logp_prefix``).
    n_draws
        Posterior draws of the histogram model.
    ci_prob
        Mass of the equal-tailed intervals of the order-parameter curves.
    random_seed
        Seed of the posterior draws and of the cross-fitting folds.
    """
    if not isinstance(n_draws, (int, np.integer)) or n_draws < 20:
        raise ModelSpecError(f"n_draws must be an integer >= 20, got {n_draws!r}.")
    rng = np.random.default_rng(random_seed)
    prep = prepare(ds, window, measure, order_parameters=order_parameters, bins=bins, total=total,
                   embeddings=embeddings, on_missing=on_missing, classifier_options=classifier_options,
                   prefix_tokens=prefix_tokens, rng=random_seed)
    draws = posterior_draws(prep, int(n_draws), rng) if prep.bins is not None else None
    return build_result(prep, draws, ci_prob=ci_prob, random_seed=random_seed)


def length_curve(ds: xr.Dataset, window: int = 1, measure: str = "linear", *, on_missing: str = "raise") -> pd.DataFrame:
    """The total change at its peak for answers cut to their first m tokens, and for whole answers.

    Sequence-level D grows with answer length (longer answers differ in more places), so a fraction of
    the total change holds at one answer length; this table (and its figure in the report) shows how
    much. Needs ``logp_prefix`` (``[generate] logp_prefix_tokens``). Returns one row per prefix length
    (``prefix_tokens``; ``-1`` = whole answers) with ``d_total`` (prompt average at its peak), ``se``
    and ``peak_step`` (training steps); ``attrs``: ``measure``, ``window``.
    """
    if "logp_prefix" not in ds:
        raise RunDataError("length_curve needs 'logp_prefix' in the run dataset: set [generate] logp_prefix_tokens "
                           "(e.g. [8, 16, 32]) and rerun the generate stage.")
    steps = ds["step"].values.astype(np.int64)
    rows = []
    for m in [int(x) for x in ds["prefix_tokens"].values] + [None]:
        terms, ok, _ = _total_inputs(ds, steps, window, check_measure(measure), "likelihood", None, on_missing, None, m, None)
        prep = Prepared(steps, ds["prompt"].values, int(window), measure, "exact_likelihood", terms, ok, None,
                        *window_slots(len(steps), window), {})
        curves = _total_curves(prep)
        d, se = curves["d_total"][1], curves["d_total_se"][1]
        b = int(np.nanargmax(d))
        rows.append({"prefix_tokens": -1 if m is None else m, "d_total": float(d[b]), "se": float(se[b]),
                     "peak_step": float(prep.mid_steps[b])})
    out = pd.DataFrame(rows).set_index("prefix_tokens")
    out.attrs.update(measure=measure, window=int(window))
    return out


class DissimilarityResult(SavedResult):
    """Dissimilarity curves (wraps an :class:`xarray.Dataset`, in ``.data``).

    Variables (``mid_step`` = midpoint step of each boundary, training-step units): ``d_total``,
    ``d_total_se``, ``d_total_prompt``, ``d_total_se_prompt`` (total change, if estimated); ``d_op``
    (posterior mean, per order parameter and ``joint``), ``d_op_lower``/``d_op_upper`` (equal-tailed
    interval, ``ci_prob`` in attrs), ``p_no_change``, ``d_op_prompt``. ``attrs`` record ``measure``,
    ``window``, ``total_estimator``, ``order_parameter_estimator``, ``bins``, ``answer_length``.
    """

    def __init__(self, data: xr.Dataset):
        self.data = data

    def __repr__(self) -> str:
        a = self.data.attrs
        ops = list(self.data["order_parameter"].values) if "order_parameter" in self.data.coords else []
        return (f"DissimilarityResult(measure={a.get('measure')!r}, window={a.get('window')}, "
                f"total_estimator={a.get('total_estimator')!r}, order_parameters={ops})")

    @property
    def measure(self) -> str:
        """The g-dissimilarity used."""
        return str(self.data.attrs["measure"])

    @property
    def total_estimator(self) -> str:
        """``exact_likelihood``, ``classifier_lower_bound`` or ``none``."""
        return str(self.data.attrs["total_estimator"])

    @property
    def total(self) -> xr.DataArray:
        """Prompt-averaged total change per boundary, dims ``(mid_step,)``."""
        if "d_total" not in self.data:
            raise ModelSpecError("this result has no total-change curve (no logp and no embeddings).")
        return self.data["d_total"]

    @property
    def order_parameters(self) -> xr.DataArray:
        """Posterior mean change per order parameter (and ``joint``), dims ``(order_parameter, mid_step)``."""
        if "d_op" not in self.data:
            raise ModelSpecError("this result has no order-parameter curves (no 'score' in the run).")
        return self.data["d_op"]

    def peak_step(self) -> float:
        """Midpoint step of the maximum of the prompt-averaged total curve (the transition)."""
        return float(self.data["mid_step"].values[int(np.nanargmax(self.total.values))])

    def to_dataframe(self) -> pd.DataFrame:
        """Long table: one row per (curve, mid_step) with ``curve``, ``mid_step``, ``value``, ``lower``, ``upper``
        (total: ± the normal-approximation band of mass ``ci_prob``)."""
        from scipy.stats import norm

        prob = float(self.data.attrs.get("ci_prob", CI_PROB))
        z = float(norm.ppf(0.5 + prob / 2))
        x = self.data["mid_step"].values
        rows = []
        if "d_total" in self.data:
            y, se = self.data["d_total"].values, self.data["d_total_se"].values
            rows.append(pd.DataFrame({"curve": "total", "mid_step": x, "value": y, "lower": y - z * se, "upper": y + z * se}))
        if "d_op" in self.data:
            for op in self.data["order_parameter"].values:
                d = self.data.sel(order_parameter=op)
                rows.append(pd.DataFrame({"curve": str(op), "mid_step": x, "value": d["d_op"].values,
                                          "lower": d["d_op_lower"].values, "upper": d["d_op_upper"].values}))
        df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["curve", "mid_step", "value", "lower", "upper"])
        df.attrs.update({k: self.data.attrs[k] for k in ("measure", "window", "total_estimator")})
        df.attrs.update({"ci_prob": prob, "ci_kind": "eti"})
        return df

    def to_datatree(self, name: str = "dissimilarity") -> xr.DataTree:
        """The curves as an :class:`xarray.DataTree` node (attach it to the analysis tree)."""
        ds = self.data.copy()
        ds.attrs = dict(ds.attrs, phasebayes_result="DissimilarityResult")
        return xr.DataTree(dataset=netcdf_safe(ds), name=name)

    @classmethod
    def from_datatree(cls, tree: xr.DataTree) -> "DissimilarityResult":
        """Rebuild from :meth:`to_datatree` output, or from a tree with a ``dissimilarity`` child."""
        return cls(restore(find_node(tree, "DissimilarityResult", "dissimilarity").to_dataset()))

    def plot(self, *, ax=None):
        """Total and per-order-parameter curves with their bands; returns the matplotlib Figure."""
        from .plots import plot_dissimilarity

        return plot_dissimilarity(self, ax=ax)

    def plot_transition(self, tau: pd.DataFrame, *, ax=None):
        """Peak of the total curve against posterior τ per order parameter; returns the Figure."""
        from .plots import plot_peak_vs_tau

        return plot_peak_vs_tau(self.peak_step(), tau, ax=ax)

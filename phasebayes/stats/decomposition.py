"""Decomposition of the total distributional change into order parameters: fractions ρ_k in [0, 1].

ρ_k = D(O_k) / D(full) is the share of the total change of the output distribution that order
parameter k captures at a boundary; ``joint`` is the vector of all order parameters. The population
estimand is the ratio of prompt-averaged dissimilarities (= the divergence of the joint (prompt,
response) distribution). :meth:`Decomposition.fit` combines the posterior draws of the histogram model
(:mod:`.histogram_posterior`) with the total-change estimate (:mod:`.fractions`), so every draw has
``0 ≤ ρ_k ≤ ρ_joint ≤ 1``; intervals are equal-tailed by default (an HDI of a quantity with a point
mass at 0 or 1 collapses). Fractions refer to the score bins and to the answer length recorded in the
table attrs (``answer_length``; use ``prefix_tokens=`` for a fixed-length prefix). See
``docs/decomposition.md``.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from .. import defaults
from ..errors import DPIViolationWarning, ModelSpecError, RunDataError
from ..intervals import interval_along
from ..storage import SavedResult
from .dissimilarity import N_DRAWS, DissimilarityResult, Prepared, build_result, posterior_draws, prepare
from .fractions import P_COMPLETE, fraction_draws, se_floor
from .score_bins import window_counts
from .total_change import bootstrap_total
from .tree_io import find_node, netcdf_safe, restore

__all__ = ["decompose", "Decomposition", "DecompositionResult"]


def decompose(ds: xr.Dataset, window: int = 3, measure: str = "linear", *, order_parameters: Sequence[str] | None = None,
              bins=None, total: str = "auto", embeddings=None, on_missing: str = "raise",
              classifier_options: Mapping | None = None, prefix_tokens: int | None = None) -> "Decomposition":
    """Set up the decomposition of the total change into order parameters; call ``.fit()``.

    Arguments as in :func:`phasebayes.dissimilarity`. Input errors are raised here, before any fitting.
    """
    return Decomposition(ds, window=window, measure=measure, order_parameters=order_parameters, bins=bins,
                         total=total, embeddings=embeddings, on_missing=on_missing,
                         classifier_options=classifier_options, prefix_tokens=prefix_tokens)


def _named_steps(at) -> list[tuple[str, float]]:
    """Normalise ``at`` to ``[(label, step)]``: a number, numbers, a mapping label → step, or a DataFrame
    indexed by order parameter with a ``mean`` column (e.g. ``transition_steps()``)."""
    if at is None:
        return []
    if isinstance(at, pd.DataFrame):
        if "mean" not in at.columns:
            raise ModelSpecError("a DataFrame passed as 'at' needs a 'mean' column (posterior mean step per row).")
        items = [(f"tau {idx}", v) for idx, v in zip(at.index, at["mean"])]
    elif isinstance(at, Mapping):
        items = [(str(k), v) for k, v in at.items()]
    else:
        items = [(None, v) for v in np.atleast_1d(np.asarray(at, dtype=float))]
    out = []
    for label, v in items:
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ModelSpecError(f"'at' steps must be numbers (training steps), got {v!r}.") from None
        if not np.isfinite(v):
            raise ModelSpecError(f"'at' steps must be finite numbers, got {v!r}.")
        out.append((f"step {v:g}" if label is None else label, v))
    labels = [lab for lab, _ in out]
    if "peak" in labels or len(set(labels)) != len(labels):
        raise ModelSpecError(f"location labels must be unique and not 'peak', got {labels}.")
    return out


def _joint_estimable(prep: Prepared, b: int) -> tuple[bool, str]:
    """Whether the joint histogram can be learnt at boundary ``b`` (else: not estimable, with the reason).

    Not estimable when the joint has more cells than a prompt has samples in the two windows and the
    samples mostly fall in cells of their own (median over prompts: occupied cells > 60 % of samples):
    then the joint's posterior is its prior's, whatever the data.
    """
    nl, nr = window_counts(prep.bins.joint_codes, prep.bins.n_joint, prep.window)
    pooled = nl[b] + nr[b]  # (P, C)
    n = pooled.sum(-1)
    occupied = (pooled > 0).sum(-1)
    has = n > 0
    if not has.any():
        return False, "no prompt has samples on both sides of this boundary"
    n_med = float(np.median(n[has]))
    ratio = float(np.median(occupied[has] / n[has]))
    if prep.bins.n_joint > n_med and ratio > 0.6:
        return False, (f"{prep.bins.n_joint} joint cells for about {n_med:.0f} samples per prompt in the two windows, "
                       f"{ratio:.0%} of them in a joint cell of their own: use fewer order parameters, coarser bins "
                       "(bins=2), a wider window or more samples per checkpoint")
    return True, ""


class Decomposition:
    """A decomposition specification bound to a run dataset (see :func:`decompose`)."""

    def __init__(self, ds: xr.Dataset, **config):
        self.config = dict(config)
        self._prep = prepare(ds, config["window"], config["measure"], order_parameters=config["order_parameters"],
                             bins=config["bins"], total=config["total"], embeddings=config["embeddings"],
                             on_missing=config["on_missing"], classifier_options=config["classifier_options"],
                             prefix_tokens=config["prefix_tokens"], rng=0)
        if self._prep.total_terms is None:
            raise RunDataError(
                "decompose needs the total change: 'logp' (log-probs of every response under the checkpoints of "
                "its windows) or sentence embeddings of the responses (phasebayes.embeddings.add_embeddings)."
            )
        if self._prep.bins is None:
            raise RunDataError("decompose needs judged scores ('score') of at least one order parameter.")

    def fit(self, *, at=None, n_draws: int = N_DRAWS, ci_prob: float | None = None, ci_kind: str | None = None,
            p_complete: float = P_COMPLETE, curve: bool = True, random_seed: int | None = 0) -> "DecompositionResult":
        """Posterior draws of the fractions at every boundary and at the named locations.

        Parameters
        ----------
        at
            Extra step(s) besides the peak of the total curve (training steps): a number, numbers, a
            mapping label → step, or ``ChangePointResult.transition_steps()`` (locations ``"tau <name>"``).
            Each maps to the boundary with the nearest midpoint.
        n_draws
            Posterior draws.
        ci_prob, ci_kind
            Interval mass (default :data:`phasebayes.defaults.CI_PROB`) and kind (default ``"eti"``).
        p_complete
            Prior probability that the order parameters together capture all of the change.
        curve
            Also compute the fraction curve and the order-parameter dissimilarity curves at every
            boundary (default); ``False`` computes only the locations (faster on long runs).
        random_seed
            Seed of the draws.
        """
        if not isinstance(n_draws, (int, np.integer)) or n_draws < 20:
            raise ModelSpecError(f"n_draws must be an integer >= 20, got {n_draws!r}.")
        if not 0.0 < float(p_complete) < 1.0:
            raise ModelSpecError(f"p_complete must be strictly between 0 and 1, got {p_complete!r}.")
        ci_prob = defaults.CI_PROB if ci_prob is None else float(ci_prob)
        ci_kind = "eti" if ci_kind is None else ci_kind
        interval_along(np.zeros(2), ci_prob, ci_kind)  # validates both
        prep, rng = self._prep, np.random.default_rng(random_seed)
        total = build_result(prep, None, ci_prob=ci_prob, random_seed=random_seed).data
        mid = prep.mid_steps
        peak_b = int(np.nanargmax(total["d_total"].values))
        loc = [("peak", peak_b, float(mid[peak_b]))] + [(lab, int(np.argmin(np.abs(mid - s))), s) for lab, s in _named_steps(at)]
        loc_b = np.array([b for _, b, _ in loc])
        sel = np.arange(len(mid)) if curve else np.unique(loc_b)
        draws = posterior_draws(prep, int(n_draws), rng, boundaries=sel)
        if curve:
            dres = build_result(prep, draws, ci_prob=ci_prob, random_seed=random_seed)
        else:
            dres = DissimilarityResult(total)
        names = prep.bins.names + ["joint"]
        # population = prompt means; the total's SE floored by the number of terms behind it
        n_terms = np.where(prep.total_ok, 1.0, 0.0).sum((1, 3))[sel]  # (n_sel, P)
        se_p = np.maximum(total["d_total_se_prompt"].values[sel], se_floor(n_terms))
        d_p = total["d_total_prompt"].values[sel]
        n_p = np.isfinite(d_p).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            pop = np.nanmean(draws.d, axis=-1)  # (n_draws, n_sel, K+1)
            se_pop = np.sqrt(np.nansum(se_p**2, axis=1)) / n_p
        fr = fraction_draws(pop.transpose(0, 2, 1), np.nanmean(d_p, axis=1), se_pop, rng=rng, p_complete=p_complete)
        rho = np.full((int(n_draws), len(names), len(mid)), np.nan)
        rho[:, :, sel] = fr.rho
        lo, hi = interval_along(rho, ci_prob, ci_kind, axis=0)
        p_comp, ess = np.full(len(mid), np.nan), np.full(len(mid), np.nan)
        p_comp[sel], ess[sel] = fr.p_complete, fr.ess
        d_full = np.full((int(n_draws), len(mid)), np.nan)
        d_full[:, sel] = fr.d_full
        boot = bootstrap_total(prep.total_terms, prep.total_ok, prep.idx, prep.valid, prep.window, 200, rng)
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            tot_mean = np.nanmean(boot, axis=-1)
        peak_draws = mid[np.nanargmax(np.where(np.isfinite(tot_mean), tot_mean, -np.inf), axis=1)]
        # per prompt, at the locations
        at_sel = np.searchsorted(sel, loc_b)
        dp = draws.d[:, at_sel].transpose(0, 2, 1, 3)  # (n_draws, K+1, n_loc, P)
        fp = fraction_draws(dp, d_p[at_sel], se_p[at_sel], rng=rng, p_complete=p_complete)
        estimable = [_joint_estimable(prep, b) for b in loc_b]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            median = np.nanmedian(rho, axis=0)
        out = xr.Dataset(
            {
                "rho_draws": (("draw", "order_parameter", "mid_step"), rho),
                "rho": (("order_parameter", "mid_step"), median),
                "rho_lower": (("order_parameter", "mid_step"), lo),
                "rho_upper": (("order_parameter", "mid_step"), hi),
                "p_complete": (("mid_step",), p_comp),
                "importance_ess": (("mid_step",), ess),
                "d_full_draws": (("draw", "mid_step"), d_full),
                "rho_prompt_draws": (("draw", "order_parameter", "location", "prompt"), fp.rho),
                "peak_step_draws": (("draw_boot",), peak_draws.astype(float)),
                "joint_estimable": (("location",), np.array([e for e, _ in estimable])),
            },
            coords={"order_parameter": np.array(names, dtype=object), "mid_step": mid, "prompt": prep.prompts,
                    "location": np.array([lab for lab, _, _ in loc], dtype=object),
                    "location_step": ("location", mid[loc_b]),
                    "requested_step": ("location", np.array([s for _, _, s in loc], dtype=float))},
        )
        out.attrs = {
            "method": "histogram_posterior", "ci_prob": ci_prob, "ci_kind": ci_kind, "n_draws": int(n_draws),
            "measure": prep.measure, "window": int(prep.window), "total_estimator": prep.total_estimator,
            "p_complete_prior": float(p_complete),
            "estimand": "ratio of prompt-averaged D(order parameter) to prompt-averaged D(full)",
            "joint_notes": json.dumps([r for _, r in estimable]),
            "bins": json.dumps(prep.bins.edges), "answer_length": json.dumps(prep.answer_length),
            "phasebayes_result": "DecompositionResult",
        }
        result = DecompositionResult(out, dres)
        low_ess = float(np.nanmin(fr.ess[at_sel]))
        if low_ess < 20:
            warnings.warn(
                f"the histogram model's joint change and the total-change estimate disagree (importance ESS "
                f"{low_ess:.0f} of {n_draws}): the order parameters' change is larger than the total can hold "
                "(data-processing inequality). Check that 'logp' was computed at the sampling temperature.",
                DPIViolationWarning, stacklevel=2,
            )
        return result


class DecompositionResult(SavedResult):
    """Fractions ρ_k with credible intervals, as a curve and at named locations (see module docstring).

    ``data`` holds the draws (``rho_draws``, ``d_full_draws``, ``rho_prompt_draws``), the curve summaries
    (``rho``, ``rho_lower``, ``rho_upper``, ``p_complete``) and the locations; ``dissimilarity`` the
    underlying :class:`~phasebayes.stats.dissimilarity.DissimilarityResult`.
    """

    def __init__(self, data: xr.Dataset, dissimilarity: DissimilarityResult):
        self.data = data
        self.dissimilarity = dissimilarity

    def __repr__(self) -> str:
        return (f"DecompositionResult(measure={self.data.attrs['measure']!r}, window={self.data.attrs['window']}, "
                f"locations={list(self.data['location'].values)})")

    @property
    def peak_step(self) -> float:
        """Midpoint step of the peak of the total curve (the transition)."""
        return float(self.data["location_step"].sel(location="peak"))

    def _location(self, location) -> int:
        labels = [str(x) for x in self.data["location"].values]
        if isinstance(location, str):
            if location not in labels:
                raise ModelSpecError(f"unknown location {location!r}; available: {labels}.")
            return labels.index(location)
        hits = np.flatnonzero(np.isclose(self.data["requested_step"].values, float(location)))
        if not len(hits):
            raise ModelSpecError(f"no fit location at step {location}; pass it to fit(at=...). Available: {labels}.")
        return int(hits[-1])

    def fractions(self, location: str | float = "peak", *, ci_prob: float | None = None,
                  ci_kind: str | None = None, per_prompt: bool = False) -> pd.DataFrame:
        """Table of fractions at one location, indexed by order parameter (and ``joint``).

        Columns ``mean``, ``median``, ``lower``, ``upper`` (posterior of the population fraction),
        ``p_zero`` (P(ρ = 0): the order parameter does not change) and ``p_one`` (P(ρ = 1)), ``estimable``
        and ``note``; all values in [0, 1]. ``attrs["p_no_total_change"]`` is the posterior probability that
        nothing changes at all (ρ undefined; those draws are left out). ``per_prompt=True`` gives one row per (order parameter,
        prompt) instead. ``attrs``: ``ci_prob``, ``ci_kind``, ``location``, ``step``, ``requested_step``,
        ``measure``, ``window``, ``total_estimator``, ``estimand``, ``bins``, ``answer_length``.
        """
        a = self.data.attrs
        ci_prob = float(a["ci_prob"]) if ci_prob is None else float(ci_prob)
        ci_kind = str(a["ci_kind"]) if ci_kind is None else ci_kind
        li = self._location(location)
        step = float(self.data["location_step"].values[li])
        b = int(np.argmin(np.abs(self.data["mid_step"].values - step)))
        names = [str(n) for n in self.data["order_parameter"].values]
        if per_prompt:
            draws = self.data["rho_prompt_draws"].values[:, :, li]  # (n, K+1, P)
            index = pd.MultiIndex.from_product([names, [str(p) for p in self.data["prompt"].values]],
                                               names=["order_parameter", "prompt"])
            draws = draws.reshape(draws.shape[0], -1)
        else:
            draws = self.data["rho_draws"].values[:, :, b]
            index = pd.Index(names, name="order_parameter")
        lo, hi = interval_along(draws, ci_prob, ci_kind, axis=0)
        ok_joint = bool(self.data["joint_estimable"].values[li])
        note = json.loads(a["joint_notes"])[li] if not ok_joint else ""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            defined = np.isfinite(draws)  # ρ is undefined (0/0) in a draw where nothing changes at all
            n_def = np.maximum(defined.sum(0), 1)
            df = pd.DataFrame({"mean": np.nanmean(draws, 0), "median": np.nanmedian(draws, 0), "lower": lo, "upper": hi,
                               "p_zero": (draws == 0.0).sum(0) / n_def, "p_one": (draws >= 1.0).sum(0) / n_def},
                              index=index)
        joint_rows = (index.get_level_values(0) if per_prompt else index) == "joint"
        df["estimable"] = ~joint_rows | ok_joint
        df["note"] = np.where(df["estimable"], "", "not estimable: " + note)
        df.loc[~df["estimable"], ["mean", "median", "lower", "upper", "p_zero", "p_one"]] = np.nan
        df.attrs.update({
            "ci_prob": ci_prob, "ci_kind": ci_kind, "location": str(self.data["location"].values[li]), "step": step,
            "requested_step": float(self.data["requested_step"].values[li]), "measure": a["measure"],
            "window": int(a["window"]), "total_estimator": a["total_estimator"], "estimand": a["estimand"],
            "bins": a["bins"], "answer_length": a["answer_length"],
            "interval_note": "equal-tailed intervals by default: fractions have point masses at 0 and 1",
            "p_no_total_change": float(np.mean(~np.isfinite(draws).any(-1))),
        })
        return df

    def curve(self) -> pd.DataFrame:
        """Fraction curves as a long table: ``order_parameter``, ``mid_step``, ``estimate`` (posterior
        median), ``lower``, ``upper``; interval attrs as in :meth:`fractions`."""
        d = self.data
        df = (xr.Dataset({"estimate": d["rho"], "lower": d["rho_lower"], "upper": d["rho_upper"]})
              .to_dataframe().reset_index()[["order_parameter", "mid_step", "estimate", "lower", "upper"]])
        df.attrs.update({"ci_prob": float(d.attrs["ci_prob"]), "ci_kind": str(d.attrs["ci_kind"])})
        return df

    def peak_interval(self, ci_prob: float | None = None, ci_kind: str | None = None) -> tuple[float, float]:
        """Interval of the peak location of the total curve over the bootstrap draws (training steps)."""
        lo, hi = interval_along(self.data["peak_step_draws"].values,
                                float(self.data.attrs["ci_prob"]) if ci_prob is None else ci_prob,
                                "eti" if ci_kind is None else ci_kind)
        return float(lo), float(hi)

    def to_datatree(self, name: str = "decomposition") -> xr.DataTree:
        """As an :class:`xarray.DataTree` node with child ``dissimilarity`` (or :meth:`save` it to a file)."""
        children = {"dissimilarity": self.dissimilarity.to_datatree("dissimilarity")}
        return xr.DataTree(dataset=netcdf_safe(self.data), name=name, children=children)

    @classmethod
    def from_datatree(cls, tree: xr.DataTree) -> "DecompositionResult":
        """Rebuild from :meth:`to_datatree` output (or a tree containing it)."""
        node = find_node(tree, "DecompositionResult", "decomposition")
        if node.attrs.get("method") != "histogram_posterior":
            raise ModelSpecError("this decomposition was saved by an earlier phasebayes whose estimator was removed; "
                                 "rerun the analysis (phasebayes analyze RUN --force) to get the current fractions.")
        return cls(restore(node.to_dataset()), DissimilarityResult.from_datatree(node["dissimilarity"]))

    def plot_fractions(self, location: str | float = "peak", *, ax=None, percent: bool = True):
        """Bar chart of the fractions at ``location`` with their intervals; returns the Figure."""
        from .plots import plot_fractions

        return plot_fractions(self.fractions(location), ax=ax, percent=percent)

    def plot_curve(self, *, ax=None):
        """Fraction curves ρ_k(step) with bands and the peak of the total curve; returns the Figure."""
        from .plots import plot_fraction_curve

        return plot_fraction_curve(self, ax=ax)

    def plot_transition(self, tau: pd.DataFrame, *, ax=None):
        """Peak of the total curve (with its bootstrap interval) against posterior τ; returns the Figure."""
        from .plots import plot_peak_vs_tau

        return plot_peak_vs_tau(self.peak_step, tau, peak_interval=self.peak_interval(), ax=ax)

    def plot_dissimilarity(self, **kwargs):
        """Total and per-order-parameter dissimilarity curves (see :meth:`DissimilarityResult.plot`)."""
        return self.dissimilarity.plot(**kwargs)

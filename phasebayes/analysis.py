"""The analysis stage: every Bayesian result of a run in one object and one netCDF file.

:func:`analyze` runs, on a judged run dataset,

1. the hierarchical :class:`~phasebayes.ChangePointModel` of all order parameters (with the
   no-transition model for P(transition)),
2. the :class:`~phasebayes.GradientPeak` posterior of the training signal's peak (if the run has a
   training log),
3. the decomposition of the total distributional change into order parameters
   (:func:`~phasebayes.decompose`, which includes the dissimilarity curves), or only the
   order-parameter dissimilarity curves when the run has no ``logp``,

and returns an :class:`Analysis`. ``Analysis.save(path)`` writes one DataTree (children
``changepoint``, ``gradient_peak``, ``decomposition`` or ``dissimilarity``, ``tables``);
``Analysis.load(path)`` reads it back without refitting.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from . import defaults
from .errors import RunDataError
from .storage import SavedResult

__all__ = ["Analysis", "analyze", "fraction_note"]


@dataclass
class Analysis(SavedResult):
    """All results of one run's analysis.

    Attributes
    ----------
    changepoint
        :class:`~phasebayes.models.changepoint.ChangePointResult` (τ per order parameter, levels, ...).
    peak
        :class:`~phasebayes.models.gradient_peak.GradientPeakResult` or None (no training log).
    decomposition
        :class:`~phasebayes.decomposition.DecompositionResult` or None (no ``logp``: no total change).
    dissimilarity
        :class:`~phasebayes.dissimilarity.DissimilarityResult` (the decomposition's curves when it exists).
    length
        Total change at its peak per answer prefix length (:func:`~phasebayes.dissimilarity.length_curve`),
        or None (no ``logp_prefix`` in the run).
    settings
        The arguments :func:`analyze` was called with, and timings.
    references
        Further reference signals' peak posteriors (name → GradientPeakResult), e.g. the weight-space
        signals ``weight_distance`` and ``lora_rotation``; :meth:`reference_lags` compares every order
        parameter with each of them and with ``peak``.
    """

    MISSING_HINT = "run `phasebayes analyze` first"

    changepoint: Any
    peak: Any = None
    decomposition: Any = None
    dissimilarity: Any = None
    length: pd.DataFrame | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    references: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ tables
    @property
    def ci_prob(self) -> float:
        return float(self.settings.get("ci_prob", defaults.CI_PROB))

    @property
    def ci_kind(self) -> str:
        return str(self.settings.get("ci_kind", defaults.CI_KIND))

    @property
    def order_parameters(self) -> list[str]:
        return list(self.changepoint.order_parameters)

    def transition_steps(self) -> pd.DataFrame:
        """Posterior τ per order parameter (training steps), at the analysis' interval convention."""
        return self.changepoint.transition_steps(self.ci_prob, self.ci_kind)

    def transition_evidence(self) -> pd.DataFrame | None:
        """LOO comparison with the no-transition model (``p_transition``), or None if it was not fitted."""
        if "null_log_likelihood" not in self.changepoint.extra:
            return None
        return self.changepoint.transition_evidence()

    def lags(self) -> pd.DataFrame | None:
        """Lag τ − gradient-norm peak per order parameter (``lag_*``, ``p_later``), or None without a peak."""
        if self.peak is None:
            return None
        return self.changepoint.compare_to(self.peak, ci_prob=self.ci_prob, ci_kind=self.ci_kind)

    def reference_lags(self) -> pd.DataFrame | None:
        """Lag τ − peak of every order parameter to every reference signal (the grad-norm peak and
        :attr:`references`): rows ``(reference, order_parameter)``, columns ``lag_*``, ``p_later``,
        ``peak_median``; None when no reference signal was fitted."""
        refs = ({self.peak.signal: self.peak} if self.peak is not None else {}) | dict(self.references)
        if not refs:
            return None
        parts = []
        for name, res in refs.items():
            t = self.changepoint.compare_to(res, ci_prob=self.ci_prob, ci_kind=self.ci_kind)
            t.insert(0, "kind", getattr(res, "kind", "peak"))
            parts.append(t.assign(reference=name).set_index("reference", append=True).reorder_levels([1, 0]))
        out = pd.concat(parts)
        out.attrs.update(ci_prob=self.ci_prob, ci_kind=self.ci_kind, units="training steps",
                         meaning="lag = tau - peak (or trough) of the reference signal; p_later = P(tau > peak)")
        return out

    def fractions(self, location: str | float = "peak") -> pd.DataFrame | None:
        """Fractions of the total change per order parameter (+ ``joint``) at ``location``, or None.

        Equal-tailed intervals of the analysis' ``ci_prob`` (fractions have point masses at 0 and 1)."""
        if self.decomposition is None:
            return None
        return self.decomposition.fractions(location, ci_prob=self.ci_prob)

    def summary_table(self) -> pd.DataFrame:
        """One row per order parameter: τ (median, interval), P(transition), lag to the peak with
        P(later), fraction of the total change at its peak (mean, interval), likelihood family.

        ``attrs`` carry ``ci_prob``, ``ci_kind``, the peak step of the gradient norm and of the total change.
        """
        ts = self.transition_steps()
        out = pd.DataFrame(index=pd.Index(self.order_parameters, name="order_parameter"))
        out["tau_median"] = ts["median"]
        out["tau_lower"] = ts["lower"]
        out["tau_upper"] = ts["upper"]
        ev = self.transition_evidence()
        out["p_transition"] = ev["p_transition"] if ev is not None else np.nan
        lag = self.lags()
        for col in ("lag_median", "lag_lower", "lag_upper", "p_later"):
            out[col] = lag[col] if lag is not None else np.nan
        fr = self.fractions()
        for col, src in (("fraction_median", "median"), ("fraction_lower", "lower"), ("fraction_upper", "upper")):
            out[col] = fr[src].reindex(out.index) if fr is not None else np.nan
        fams = getattr(self.changepoint.config, "likelihood", None)
        if isinstance(fams, dict):
            out["likelihood"] = [fams.get(op, "") for op in out.index]
        out.attrs.update(ci_prob=self.ci_prob, ci_kind=self.ci_kind, units="training steps")
        if self.peak is not None:
            pk = self.peak.peak_draws()
            out.attrs["grad_peak_median"] = float(np.median(pk))
        if self.decomposition is not None:
            out.attrs["total_change_peak_step"] = float(self.decomposition.peak_step)
            if fr is not None and "joint" in fr.index:
                out.attrs["joint_fraction"] = float(fr.loc["joint", "median"])
                out.attrs["joint_note"] = str(fr.loc["joint", "note"])
            if fr is not None:
                out.attrs["answer_length"] = fr.attrs["answer_length"]
        return out

    def summary(self) -> str:
        """The short plain-text summary printed by ``phasebayes demo`` / ``phasebayes analyze``."""
        t = self.summary_table()
        pct = f"{self.ci_prob:.0%} {self.ci_kind.upper()}"
        lines = [f"Behavioural transitions (training steps; intervals: {pct})"]
        if "grad_peak_median" in t.attrs:
            lines.append(f"  gradient-norm peak (posterior median): step {t.attrs['grad_peak_median']:.1f}")
        if "total_change_peak_step" in t.attrs:
            lines.append(f"  peak of the total output change (dissimilarity): step {t.attrs['total_change_peak_step']:.1f}")
        w = max([18] + [len(str(o)) for o in t.index])
        head = (f"  {'order parameter':<{w}s} {'tau [interval]':>22s} {'P(trans.)':>9s} {'lag to grad peak':>24s} "
                f"{'P(later)':>8s} {'fraction [' + f'{self.ci_prob:.0%}' + ' ETI]':>22s}")
        lines.append(head)
        for op, r in t.iterrows():
            tau = f"{r.tau_median:6.1f} [{r.tau_lower:5.1f}, {r.tau_upper:5.1f}]"
            pt = f"{r.p_transition:9.2f}" if np.isfinite(r.p_transition) else f"{'-':>9s}"
            if np.isfinite(r.lag_median):
                lag = f"{r.lag_median:+6.1f} [{r.lag_lower:+5.1f}, {r.lag_upper:+5.1f}]"
                pl = f"{r.p_later:8.2f}"
            else:
                lag, pl = "-", "-"
            if np.isfinite(r.fraction_median):
                fr = f"{r.fraction_median:5.0%} [{r.fraction_lower:4.0%}, {r.fraction_upper:4.0%}]"
            else:
                fr = "-"
            lines.append(f"  {str(op):<{w}s} {tau:>22s} {pt} {lag:>24s} {pl:>8s} {fr:>22s}")
        if "answer_length" in t.attrs:
            lines.append("  " + fraction_note(t.attrs))
        if self.references:
            lags = self.reference_lags()
            lines.append(f"  lags tau - reference signal peak ({pct}); P(later) = P(tau > peak):")
            for (ref, op), r in lags.iterrows():
                lines.append(f"    {str(ref) + (' (trough)' if r['kind'] == 'trough' else ''):<22s} {str(op):<{w}s} "
                             f"{r.lag_median:+7.1f} [{r.lag_lower:+6.1f}, {r.lag_upper:+6.1f}]  P(later) {r.p_later:4.2f}  "
                             f"(peak at step {r.peak_median:.1f})")
        div = self.changepoint.n_divergences
        problems = self.changepoint.check_diagnostics(warn=False)
        lines.append(f"  MCMC: {div} divergences; " + ("diagnostics OK" if not problems else "check: " + "; ".join(problems)))
        return "\n".join(lines)

    # ------------------------------------------------------------------ persistence
    def to_datatree(self) -> xr.DataTree:
        """Everything as one :class:`xarray.DataTree` (children ``changepoint``, ``gradient_peak``,
        ``decomposition`` / ``dissimilarity``, ``tables``)."""
        root = xr.DataTree()
        root["changepoint"] = self.changepoint.to_datatree()
        if self.peak is not None:
            root["gradient_peak"] = self.peak.to_datatree()
        for name, res in self.references.items():
            root[f"reference_{name}"] = res.to_datatree()
        if self.decomposition is not None:
            root["decomposition"] = self.decomposition.to_datatree("decomposition")
        elif self.dissimilarity is not None:
            root["dissimilarity"] = self.dissimilarity.to_datatree("dissimilarity")
        table = self.summary_table()
        tds = xr.Dataset.from_dataframe(table.drop(columns=[c for c in table.columns if table[c].dtype == object]))
        tds.attrs = {k: v for k, v in table.attrs.items() if isinstance(v, (int, float, str))}
        root["tables"] = xr.DataTree(dataset=tds)
        if self.length is not None:
            lds = xr.Dataset.from_dataframe(self.length)
            lds.attrs = dict(self.length.attrs)
            root["length_curve"] = xr.DataTree(dataset=lds)
        from .version import __version__

        root.attrs.update(phasebayes_result="Analysis", phasebayes_version=__version__,
                          settings=json.dumps(self.settings, default=str))
        return root

    @classmethod
    def from_datatree(cls, tree: xr.DataTree) -> "Analysis":
        """Rebuild from :meth:`to_datatree` output."""
        from .decomposition import DecompositionResult
        from .dissimilarity import DissimilarityResult
        from .models.changepoint import ChangePointResult
        from .models.gradient_peak import GradientPeakResult

        if tree.attrs.get("phasebayes_result") != "Analysis":
            raise RunDataError("this file is not a saved phasebayes analysis (phasebayes.analyze(...).save(path)).")
        cp = ChangePointResult.from_datatree(tree["changepoint"])
        peak = GradientPeakResult.from_datatree(tree["gradient_peak"]) if "gradient_peak" in tree.children else None
        dec = DecompositionResult.from_datatree(tree["decomposition"]) if "decomposition" in tree.children else None
        if dec is not None:
            dis = dec.dissimilarity
        elif "dissimilarity" in tree.children:
            dis = DissimilarityResult.from_datatree(tree["dissimilarity"])
        else:
            dis = None
        length = None
        if "length_curve" in tree.children:
            node = tree["length_curve"].to_dataset()
            length = node.to_dataframe()
            length.attrs = dict(node.attrs)
        settings = json.loads(tree.attrs.get("settings", "{}"))
        refs = {k[len("reference_"):]: GradientPeakResult.from_datatree(tree[k]) for k in tree.children if k.startswith("reference_")}
        return cls(cp, peak, dec, dis, length, settings, refs)


def fraction_note(attrs: dict) -> str:
    """One line saying what the fractions refer to: answer length and the joint's status."""
    length = json.loads(attrs.get("answer_length", "{}"))
    if length.get("prefix_tokens", -1) > 0:
        at = f"the first {length['prefix_tokens']} tokens of each answer"
    else:
        mean = length.get("mean_answer_tokens")
        cap = length.get("max_new_tokens")
        at = "whole answers" + (f" (mean {mean:.0f} tokens" if mean else "") + (f", at most {cap}" if cap else "") + (")" if mean else "")
    note = f"fractions hold for {at}: sequence-level change grows with answer length"
    if attrs.get("joint_note"):
        note += f"; joint {attrs['joint_note']}"
    return note


def analyze(
    ds: xr.Dataset,
    *,
    likelihood: str | dict[str, str] = "auto",
    transition: str = "sigmoid",
    pooling: str = "partial",
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    cores: int | None = None,
    compare_null: bool = True,
    peak_draws: int = 1000,
    peak_tune: int = 1000,
    signal: str = "grad_norm",
    references: str | list[str] = "auto",
    window: int = 1,
    measure: str = "linear",
    prefix_tokens: int | None = None,
    ci_prob: float | None = None,
    ci_kind: str | None = None,
    random_seed: int | None = 0,
    progressbar: bool = True,
    log=None,
    measurement=None,
) -> Analysis:
    """Run the whole Bayesian analysis of a judged run dataset.

    Parameters
    ----------
    ds
        Run dataset with ``score`` (and, for the lag and the decomposition, a training log and ``logp``).
    likelihood, transition, pooling
        :class:`~phasebayes.ChangePointModel` options (``likelihood="auto"`` picks a family per order
        parameter from its scale: beta for 0–100, binomial for 0/1, negative binomial for counts).
    draws, tune, chains, cores
        NUTS settings of the change-point model (and of its no-transition twin).
    compare_null
        Also fit the no-transition model: gives ``p_transition`` per order parameter.
    peak_draws, peak_tune, signal
        Gradient-peak fit on the training-log variable ``signal`` (skipped when the run has no training log).
    references
        Further per-step reference signals to fit with the peak model and compare every order parameter
        with (:meth:`Analysis.reference_lags`): names of 1-D variables of ``ds``, ``"name:trough"`` for a
        trough; ``"auto"`` (default) takes the weight-space signals ``weight_distance`` and
        ``lora_rotation`` when the run has them (LoRA checkpoints); ``[]`` for none.
    window, measure
        Dissimilarity window half-length L (checkpoints) and g-measure. With the LLM stage's
        ``logp_window = K`` the exact total needs K ≥ 2L − 1.
    prefix_tokens
        Compute the total change (and so the fractions) on the first ``prefix_tokens`` tokens of every
        answer (needs ``logp_prefix``); None = whole answers. Fractions depend on answer length.
    ci_prob, ci_kind
        Interval convention of every table (defaults: 94 % HDI).
    random_seed
        Seeds every sampler and bootstrap.
    progressbar
        Show sampler progress bars.
    log
        Optional callable taking a status line (the CLI prints them).
    measurement
        Optional :class:`~phasebayes.models.measurement.JudgeMeasurement` (human ratings of some answers):
        the change-point model then treats the judge scores as a noisy, biased measurement of the
        human-scale order parameter (docs/human_ratings.md).
    """
    from .decomposition import decompose
    from .dissimilarity import dissimilarity, length_curve
    from .intervals import resolve_ci
    from .models.changepoint import ChangePointModel
    from .models.gradient_peak import GradientPeak

    say = log or (lambda msg: None)
    prob, kind = resolve_ci(ci_prob, ci_kind)
    settings: dict[str, Any] = dict(likelihood=likelihood, transition=transition, pooling=pooling, draws=draws, tune=tune,
                                    chains=chains, compare_null=compare_null, peak_draws=peak_draws, peak_tune=peak_tune,
                                    signal=signal, window=window, measure=measure, prefix_tokens=prefix_tokens,
                                    ci_prob=prob, ci_kind=kind, random_seed=random_seed, references=references)
    timings: dict[str, float] = {}
    cores = cores if cores is not None else max(1, min(chains, os.cpu_count() or 1))

    t0 = time.perf_counter()
    say(f"change-point model ({transition}, likelihood={likelihood}) + no-transition model: {chains} chains x {draws} draws")
    cp = ChangePointModel(ds, likelihood=likelihood, transition=transition, pooling=pooling, measurement=measurement).fit(
        draws=draws, tune=tune, chains=chains, cores=cores, random_seed=random_seed, progressbar=progressbar,
        compare_null=compare_null, warn=False)
    timings["changepoint_s"] = time.perf_counter() - t0

    peak = None
    if "train_step" in ds.dims and signal in ds:
        t0 = time.perf_counter()
        say(f"gradient-peak model on {signal!r}: {chains} chains x {peak_draws} draws")
        peak = GradientPeak(ds, signal=signal).fit(draws=peak_draws, tune=peak_tune, chains=chains, cores=cores,
                                                   random_seed=random_seed, progressbar=progressbar, warn=False)
        timings["gradient_peak_s"] = time.perf_counter() - t0
    else:
        say(f"no training log ({signal!r}): the lag to the gradient-norm peak is skipped")

    refs = {}
    for name, kind_, log_ in _reference_specs(ds, references, exclude=signal if peak is not None else None):
        t0 = time.perf_counter()
        say(f"peak model on the reference signal {name!r} ({kind_}): {chains} chains x {peak_draws} draws")
        refs[name] = GradientPeak(ds, signal=name, kind=kind_, log=log_).fit(
            draws=peak_draws, tune=peak_tune, chains=chains, cores=cores, random_seed=random_seed,
            progressbar=progressbar, warn=False)
        timings[f"reference_{name}_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_steps = ds.sizes["step"]
    window = int(min(window, max(1, n_steps - 1)))
    dec = dis = None
    from .models.aggregated import aggregated_form

    if aggregated_form(ds):
        say(f"aggregated {aggregated_form(ds)}: no dissimilarity / decomposition (they need per-answer scores)")
        settings["window"] = window
        settings["timings"] = timings
        return Analysis(cp, peak, None, None, None, settings, refs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if "logp" in ds:
            say(f"decomposition of the total change ({measure}, window {window}, histogram posterior)")
            dec = decompose(ds, window=window, measure=measure, prefix_tokens=prefix_tokens).fit(
                at=cp.transition_steps(prob, kind), ci_prob=prob, random_seed=random_seed)
            dis = dec.dissimilarity
        else:
            say("no 'logp' in the run: per-order-parameter dissimilarity only (no total change, no fractions)")
            dis = dissimilarity(ds, window=window, measure=measure, total="none" if "embedding" not in ds else "auto")
        length = length_curve(ds, window=window, measure=measure, on_missing="drop") if "logp_prefix" in ds else None
    timings["dissimilarity_s"] = time.perf_counter() - t0
    settings["window"] = window
    settings["timings"] = timings
    return Analysis(cp, peak, dec, dis, length, settings, refs)


_LINEAR_SIGNALS = {"lora_rotation", "lora_b_cosine"}  # near zero / around one: no log
_AUTO_REFERENCES = ("weight_distance", "lora_rotation")


def _reference_specs(ds: xr.Dataset, references, exclude: str | None) -> list[tuple[str, str, bool | None]]:
    """(name, kind, log) of each reference signal to fit; unknown names raise RunDataError."""
    if references == "auto" or references == ["auto"]:
        names = [n for n in _AUTO_REFERENCES if n in ds and ds[n].ndim == 1 and int(np.isfinite(ds[n].values).sum()) >= 5]
    elif isinstance(references, str):
        names = [references]
    else:
        names = list(references or [])
    out = []
    for item in names:
        name, _, kind = str(item).partition(":")
        kind = kind or ("trough" if name == "lora_b_cosine" else "peak")
        if name == exclude:
            continue
        if name not in ds or ds[name].ndim != 1:
            avail = [str(v) for v in ds.data_vars if ds[v].ndim == 1 and ds[v].dims[0] in ("train_step", "weight_step", "eval_step")]
            raise RunDataError(f"reference signal {name!r} is not a per-step variable of the run; available: {avail}.")
        out.append((name, kind, False if name in _LINEAR_SIGNALS else None))
    return out

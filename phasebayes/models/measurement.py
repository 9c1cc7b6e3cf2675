"""The judge as a noisy, biased measurement of the human-scale order parameter.

Without it, :class:`~phasebayes.ChangePointModel` treats judge scores as the truth. With
``ChangePointModel(ds, measurement=JudgeMeasurement(ratings))`` the transition curve is on the **human
scale** — the expected human rating of an answer at (step, prompt), the scale the ratings define — and

* human ratings of the rated subset are Beta observations of that curve (their own concentration
  ``human_concentration``: rater noise plus answer-to-answer spread);
* the judge's expected score in a cell is a monotone calibration ``g`` of the human-scale mean,
  ``link="logit"``: ``logit g(m) = judge_offset + judge_slope · logit m`` (default; contains the
  identity, bends bounded scores the way over- or under-confident judges do), or ``link="linear"``:
  ``g(m) = judge_offset + judge_slope · m`` on the unit scale; judge scores scatter around ``g(m)``
  with the model's Beta concentration (the judge's noise).

The calibration's bias and slope are learned jointly from the rated cells (where both the human
curve and the judge scores are seen) and carried into τ and the levels, which are then reported on the
human scale: the midpoint τ is where the *human-scale* mean is halfway. Order parameters without
ratings keep the identity calibration.

What is identifiable: with a judge that is linear on the score scale the halfway step is the same on
both scales, so τ does not move — only the levels change scale. A judge that is nonlinear on the score
scale (``logit`` calibration with slope ≠ 1) puts its own halfway step elsewhere, by about
``width · logit(fraction)``; the measurement model moves τ back to the human-scale midpoint.
Assumptions: the judge's calibration is the same at every step and prompt; a cell's judge mean is
``g`` of its human mean (exact for a linear ``g``; for the logit form it ignores the spread of answers
within a cell); the judge scores and human ratings of the same rated answers are treated as
independent given the cell (a rated answer's two measurements are in truth correlated; with a few
hundred ratings among thousands of judged answers this is a small overstatement of information).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import special, stats

from ..errors import ModelSpecError
from .families import NUMPY_MATH, CellStats, cell_loglik, get_family, sufficient_statistics

__all__ = ["JudgeMeasurement", "simulate_judged_run"]

LINKS = ("logit", "linear")
_EPS = 1e-6


def _logit(x, pt=None):
    if pt is not None:
        return pt.log(x) - pt.log1p(-x)  # inside the PyMC graph
    return special.logit(x)


@dataclass
class JudgeMeasurement:
    """Human ratings of some answers of a run, to learn how the judge relates to the human scale.

    ``ratings``: one row per human rating with columns ``order_parameter``, ``step``, ``prompt`` and
    ``value`` (on the order parameter's scale, e.g. 0–100; several raters of one answer are several
    rows). ``link``: ``"logit"`` or ``"linear"`` (see the module docstring). ``priors``: overrides of
    ``offset_sd`` (1.0 for logit, 0.3 for linear, unit scale), ``slope_log_sd`` (1.0 for logit: slope
    within ×/÷ 2.7 of 1 at one sd; 0.5 for linear) and the human concentration's log-mean/log-sd (log 5, 1.5).
    """

    ratings: pd.DataFrame
    link: str = "logit"
    priors: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        if self.link not in LINKS:
            raise ModelSpecError(f"measurement link must be one of {LINKS}, got {self.link!r}.")
        need = {"order_parameter", "step", "prompt", "value"}
        missing = need - set(self.ratings.columns)
        if missing:
            raise ModelSpecError(f"measurement ratings lack column(s) {sorted(missing)}; need {sorted(need)}.")
        r = self.ratings[list(need)].copy()
        r["value"] = pd.to_numeric(r["value"], errors="coerce")
        r = r[np.isfinite(r["value"])]
        if r.empty:
            raise ModelSpecError("the measurement model needs at least one human rating; rate answers with `phasebayes label`.")
        r["order_parameter"] = r["order_parameter"].astype(str)
        r["prompt"] = r["prompt"].astype(str)
        r["step"] = r["step"].astype(int)
        self.ratings = r.reset_index(drop=True)
        default = {"offset_sd": 1.0 if self.link == "logit" else 0.3, "slope_log_sd": 1.0 if self.link == "logit" else 0.5,
                   "human_phi_log_mean": float(np.log(5.0)), "human_phi_log_sd": 1.5}
        bad = set(self.priors) - set(default)
        if bad:
            raise ModelSpecError(f"unknown measurement prior key(s) {sorted(bad)}; known: {sorted(default)}.")
        self.priors = {**default, **self.priors}

    # ------------------------------------------------------------------ persistence (stored in ModelConfig)
    def to_dict(self) -> dict[str, Any]:
        return {"link": self.link, "priors": self.priors,
                "ratings": {c: self.ratings[c].tolist() for c in ("order_parameter", "step", "prompt", "value")}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "JudgeMeasurement":
        return cls(pd.DataFrame(d["ratings"]), link=d.get("link", "logit"), priors=dict(d.get("priors", {})))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    # ------------------------------------------------------------------ binding to a model
    def bind(self, model) -> "BoundMeasurement":
        """Check the ratings against ``model`` (a ChangePointModel) and precompute per-cell statistics."""
        return BoundMeasurement(self, model)


class BoundMeasurement:
    """A :class:`JudgeMeasurement` tied to one model's grid: what the model's hook calls."""

    def __init__(self, spec: JudgeMeasurement, model):
        from ..dataset import order_parameter_scale

        self.spec = spec
        ops = list(model.order_parameters)
        unknown = sorted(set(spec.ratings["order_parameter"]) - set(ops))
        if unknown:
            raise ModelSpecError(f"ratings name order parameter(s) {unknown} that the model does not have ({ops}).")
        rated = sorted(set(spec.ratings["order_parameter"]), key=ops.index)
        if model.config.transition == "step":
            raise ModelSpecError("the judge measurement model needs transition='sigmoid' (the step model's levels are "
                                 "marginalised over a grid); refit with transition='sigmoid'.")
        for op in rated:
            if not get_family(model.config.likelihood[op]).judge_error_model:
                raise ModelSpecError(f"the judge measurement model needs bounded judge scores (likelihood 'beta'); "
                                     f"'{op}' uses {model.config.likelihood[op]!r}.")
        step_ix = {int(s): j for j, s in enumerate(model.steps.astype(int))}
        prompt_ix = {p: j for j, p in enumerate(model.prompts)}
        r = spec.ratings
        bad_steps = sorted(set(r["step"]) - set(step_ix))
        bad_prompts = sorted(set(r["prompt"]) - set(prompt_ix))
        if bad_steps or bad_prompts:
            raise ModelSpecError(f"ratings refer to steps {bad_steps[:5]} / prompts {bad_prompts[:5]} that are not in the run; "
                                 "rate answers of this run (ratings of another run cannot be used).")
        self.rated = rated
        self.k_index = np.array([ops.index(o) for o in rated])  # model order-parameter index of each rated op
        K, T, P = len(ops), len(model.steps), len(model.prompts)
        cells: dict[tuple[int, int, int], list[float]] = {}
        for op, s, p, v in zip(r["order_parameter"], r["step"], r["prompt"], r["value"]):
            lo, hi = order_parameter_scale(model.ds, op)
            if not (lo <= v <= hi):
                raise ModelSpecError(f"a rating of '{op}' ({v}) lies outside its scale {lo:g}..{hi:g}.")
            cells.setdefault((ops.index(op), step_ix[int(s)], prompt_ix[p]), []).append((v - lo) / (hi - lo))
        n_max = max(len(v) for v in cells.values())
        obs = np.full((K, T, P, n_max), np.nan)
        for (k, t, p), vals in cells.items():
            obs[k, t, p, : len(vals)] = vals
        self.obs = obs  # (K, T, P, N): human ratings on the unit scale (ratings at 0 or 1: see Beta.statistics)
        self.stats: CellStats = sufficient_statistics("beta", obs)
        self.n_ratings = {o: int(np.isfinite(obs[k]).sum()) for o, k in zip(rated, self.k_index)}

    # ------------------------------------------------------------------ calibration curve
    def _g(self, m, a, b, pt=None):
        if self.spec.link == "logit":
            z = a + b * _logit(m, pt)
            return pt.sigmoid(z) if pt is not None else special.expit(z)
        x = a + b * m
        return pt.clip(x, _EPS, 1 - _EPS) if pt is not None else np.clip(x, _EPS, 1 - _EPS)

    def _group_params(self, a, b, ix, lib):
        """Offset/slope per order parameter of a family group (identity where unrated)."""
        ix = list(ix)
        sel = [ix.index(k) for k in self.k_index if k in ix]
        which = [j for j, k in enumerate(self.k_index) if k in ix]
        A = lib.zeros(len(ix)) if lib is not np else np.zeros(a.shape[:-1] + (len(ix),))
        B = lib.ones(len(ix)) if lib is not np else np.ones(b.shape[:-1] + (len(ix),))
        if lib is np:
            A[..., sel] = a[..., which]
            B[..., sel] = b[..., which]
            return A, B
        A = lib.set_subtensor(A[sel], a[which])
        B = lib.set_subtensor(B[sel], b[which])
        return A, B

    def judge_mean_pymc(self, mu, ix):
        """Inside a PyMC model: add the calibration and the human-rating likelihood; return ``g(mu)``.

        ``mu``: human-scale mean of the family group, unit scale, shape (k, T or 1, P).
        """
        import pymc as pm
        import pytensor.tensor as pt

        from .families import pytensor_math

        p = self.spec.priors
        model = pm.modelcontext(None)
        model.add_coord("rated_op", self.rated)
        # standardised coordinates: the sampler's start (jittered by ±1 on the unconstrained scale) stays
        # within one prior sd of the identity calibration; a raw linear offset jittered by ±1 could start
        # where the clipped calibration is flat and leave a chain stuck there
        a_z = pm.Normal("judge_offset_z", 0.0, 1.0, dims="rated_op")
        b_z = pm.Normal("judge_slope_z", 0.0, 1.0, dims="rated_op")
        a = pm.Deterministic("judge_offset", p["offset_sd"] * a_z, dims="rated_op")
        b = pm.Deterministic("judge_slope", pt.exp(p["slope_log_sd"] * b_z), dims="rated_op")
        phi_h = pm.LogNormal("human_concentration", p["human_phi_log_mean"], p["human_phi_log_sd"], dims="rated_op")
        T = self.obs.shape[1]
        full = mu + pt.zeros((1, T, 1))  # (k,T,P) also for the no-transition model
        m_rated = pt.clip(full[[list(ix).index(k) for k in self.k_index]], _EPS, 1 - _EPS)
        st = self.stats.take(self.k_index)
        pm.Potential("human_ratings", pt.sum(cell_loglik("beta", st, m_rated, phi_h[:, None, None], pytensor_math())))
        A, B = self._group_params(a, b, ix, pt)
        return self._g(pt.clip(mu, _EPS, 1 - _EPS), A[:, None, None], B[:, None, None], pt)

    def calibration(self, post: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Offset and slope per draw and rated order parameter, (D, rated) each (from the standardised draws if needed)."""
        if "judge_offset" in post:
            return post["judge_offset"], post["judge_slope"]
        p = self.spec.priors
        return p["offset_sd"] * post["judge_offset_z"], np.exp(p["slope_log_sd"] * post["judge_slope_z"])

    def judge_mean(self, post: dict[str, np.ndarray], mu: np.ndarray, ix) -> np.ndarray:
        """Numpy mirror: ``g(mu)`` per draw, ``mu`` of shape (D, k, T, P) for the group ``ix``."""
        A, B = self._group_params(*self.calibration(post), ix, np)
        return self._g(np.clip(mu, _EPS, 1 - _EPS), A[:, :, None, None], B[:, :, None, None])

    def human_loglik(self, post: dict[str, np.ndarray], mu_all: np.ndarray) -> np.ndarray:
        """Log-likelihood of the human ratings per draw and rated cell: (D, rated, T, P)."""
        m = np.clip(mu_all[:, self.k_index], _EPS, 1 - _EPS)
        st = self.stats.take(self.k_index)
        return cell_loglik("beta", st, m, post["human_concentration"][:, :, None, None], NUMPY_MATH)


def simulate_judged_run(
    *,
    n_ops: int = 4,
    n_steps: int = 12,
    n_prompts: int = 4,
    n_samples: int = 8,
    n_rated: int = 60,
    link: str = "logit",
    judge_offset: float | tuple[float, float] = (0.6, 1.2),
    judge_slope: float | tuple[float, float] = (1.6, 2.2),
    answer_concentration: float = 200.0,
    judge_concentration: float = 30.0,
    rater_sd: float = 5.0,
    rater_concentration: float | None = None,
    score_decimals: int | None = 1,
    seed: int = 0,
):
    """A run judged by a deliberately biased, noisy judge, with human ratings of a subset and the truth.

    Per order parameter (independent): human-scale curve ``m(t)`` from ``before`` to ``after`` (0–100),
    τ uniform in the middle half of the run, width 0.6–1.5 checkpoint spacings; each answer has a
    human-scale value ``h ~ Beta(m · c, (1 − m) · c)`` (``c = answer_concentration``); the judge scores
    ``j ~ Beta(g(h) · φ, (1 − g(h)) · φ)`` with ``g`` the ``link`` calibration (offset, slope drawn from
    the given ranges; ``φ = judge_concentration``); a person rates ``n_rated`` answers (spread evenly
    over steps, random prompts and samples) as ``h`` + Normal(0, ``rater_sd``), clipped to 0–100.
    With ``rater_concentration`` the rating is ``100 · Beta(h · c, (1 − h) · c)`` instead (``c`` = that
    concentration; the noise the measurement model assumes). Judge scores are rounded to ``score_decimals`` decimals on the 0–100 scale (None: not rounded).

    Returns ``(ds, ratings, truth)``: the run dataset (judge scores), a ratings table for
    :class:`JudgeMeasurement` and a DataFrame per order parameter with the human-scale ``tau``,
    ``before``, ``after``, the judge-scale midpoint ``tau_judge`` and the judge's offset and slope.
    """
    from ..dataset import from_dataframe

    rng = np.random.default_rng(seed)
    steps = np.arange(n_steps) * 100
    spacing = 100.0
    rows, ratings, truth = [], [], {}

    def draw(x):
        return float(rng.uniform(*x)) if isinstance(x, tuple) else float(x)

    for k in range(n_ops):
        op = f"op{k}"
        tau = float(rng.uniform(steps[-1] * 0.3, steps[-1] * 0.7))
        width = float(rng.uniform(0.6, 1.5)) * spacing
        before, after = (float(rng.uniform(70, 85)), float(rng.uniform(20, 35)))
        if rng.random() < 0.5:
            before, after = after, before
        a, b = draw(judge_offset), draw(judge_slope)
        if link == "linear" and not isinstance(judge_offset, tuple):
            a = judge_offset
        g = ((lambda h: special.expit(a + b * special.logit(h))) if link == "logit"
             else (lambda h: np.clip(a + b * h, 0.01, 0.99)))
        m = (before + (after - before) * special.expit((steps - tau) / width)) / 100.0
        h = rng.beta(m[:, None, None] * answer_concentration, (1 - m[:, None, None]) * answer_concentration,
                     size=(n_steps, n_prompts, n_samples))
        gh = np.clip(g(np.clip(h, 1e-4, 1 - 1e-4)), 1e-4, 1 - 1e-4)
        j = rng.beta(gh * judge_concentration, (1 - gh) * judge_concentration)
        for t in range(n_steps):
            for p in range(n_prompts):
                for s in range(n_samples):
                    score = 100 * float(j[t, p, s])
                    rows.append((int(steps[t]), f"p{p}", s, op, score if score_decimals is None else round(score, score_decimals)))
        per_step = np.bincount(np.arange(n_rated) % n_steps, minlength=n_steps)
        for t in range(n_steps):
            cells = rng.choice(n_prompts * n_samples, size=min(per_step[t], n_prompts * n_samples), replace=False)
            for c in cells:
                p, s = divmod(int(c), n_samples)
                if rater_concentration is None:
                    v = float(np.clip(100 * h[t, p, s] + rng.normal(0, rater_sd), 0, 100))
                else:  # the noise the model assumes: Beta around the answer's human-scale value
                    v = 100 * float(rng.beta(h[t, p, s] * rater_concentration, (1 - h[t, p, s]) * rater_concentration))
                ratings.append((op, int(steps[t]), f"p{p}", s, round(v)))
        # judge-scale midpoint: where the expected judge score E[g(h)] is halfway between its two plateaus
        q = (np.arange(200) + 0.5) / 200

        def judge_curve(mm):
            hq = stats.beta.ppf(q[None, :], mm[:, None] * answer_concentration, (1 - mm[:, None]) * answer_concentration)
            return np.clip(g(np.clip(hq, 1e-4, 1 - 1e-4)), 1e-4, 1 - 1e-4).mean(1)

        fine = np.linspace(tau - 12 * width, tau + 12 * width, 4001)
        jf = judge_curve((before + (after - before) / (1 + np.exp(-(fine - tau) / width))) / 100.0)
        tau_judge = float(fine[np.argmin(np.abs(jf - (jf[0] + jf[-1]) / 2))])
        truth[op] = {"tau": tau, "width": width, "before": before, "after": after, "tau_judge": tau_judge,
                     "judge_offset": a, "judge_slope": b}
    ds = from_dataframe(pd.DataFrame(rows, columns=["step", "prompt", "sample", "order_parameter", "score"]))
    rt = pd.DataFrame(ratings, columns=["order_parameter", "step", "prompt", "sample", "value"])
    tt = pd.DataFrame.from_dict(truth, orient="index")
    tt.index.name = "order_parameter"
    return ds, rt, tt

"""The built-in likelihood families (beta, binomial, normal, poisson, negative binomial, ordinal).

Each is one :class:`~phasebayes.models.family_base.Family`; the registry is in
:mod:`phasebayes.models.families`.
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ..errors import ModelSpecError
from .family_base import NUMPY_MATH, CellStats, Family, half_resolution, integer_scale, require_counts


def _zero(obs):
    return np.zeros(obs.shape[:-1])


class Beta(Family):
    """Bounded scores rescaled to (0, 1); mean μ, concentration φ (variance μ(1 − μ)/(1 + φ))."""

    name, link, nuisance, unit_mean = "beta", "logit", "concentration", True
    default_levels = (80.0, 30.0)  # 0–100 judge score
    judge_error_model = True

    def prepare(self, y, scale, *, threshold=None, below=True):
        """Rescale ``[lower, upper]`` to [0, 1] (scores of exactly 0 or 100 allowed: see :meth:`statistics`)."""
        lo, hi = scale
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ModelSpecError(
                "likelihood 'beta' needs a bounded scale; declare it in from_dataframe(scales=...) "
                "or use likelihood='normal' / 'negative_binomial' for unbounded scores."
            )
        return np.clip((y - lo) / (hi - lo), 0.0, 1.0)

    def statistics(self, obs, categories=None):
        """``s1`` = Σ log y, ``s2`` = Σ log(1 − y) over scores inside (0, 1); scores at a bound are counted apart.

        A judge's 0–100 scores are rounded, and a score of exactly 0 or 100 has no Beta density: it
        enters as the probability of the rounding interval at the bound, P(y ≤ c) or P(y ≥ 1 − c), with
        ``c`` half the scores' resolution (:func:`half_resolution`, per order parameter). The usual
        alternative, squeezing every score into (0, 1) by ``(y (N − 1) + 1/2) / N`` (Smithson & Verkuilen
        2006), adds ``1/(2N)`` to every distance from a bound: near a saturated level (judge means above
        ≈ 0.95) that shifts the fitted mean by 0.05–0.1 on the logit scale and inflates the concentration
        by a quarter or more, which made τ intervals of the judge measurement model too narrow.
        """
        finite = np.isfinite(obs)
        lower, upper = finite & (obs <= 0.0), finite & (obs >= 1.0)
        inner = finite & ~lower & ~upper
        safe = np.where(inner, obs, 0.5)
        s1 = np.where(inner, np.log(safe), 0.0).sum(-1)
        s2 = np.where(inner, np.log1p(-safe), 0.0).sum(-1)
        stats = CellStats(inner.sum(-1).astype(float), s1, s2, _zero(obs))
        if lower.any() or upper.any():
            stats.at_lower, stats.at_upper = lower.sum(-1).astype(float), upper.sum(-1).astype(float)
            stats.bound_width = np.array([half_resolution(o) for o in obs.reshape(obs.shape[0], -1)])
        return stats

    def loglik(self, stats, mu, nuisance, m=NUMPY_MATH):
        a, b = mu * nuisance, (1.0 - mu) * nuisance
        ll = stats.n * (m.gammaln(nuisance) - m.gammaln(a) - m.gammaln(b)) + (a - 1.0) * stats.s1 + (b - 1.0) * stats.s2
        if stats.bound_width is None:
            return ll
        return ll + self._bound_loglik(stats, a, b, m)

    @staticmethod
    def _bound_loglik(stats, a, b, m):
        """Σ log P(rounding interval at the bound) per cell, ``(..., K, T, P)``: P(y ≤ c) = I_c(a, b) for
        scores at 0, P(y ≥ 1 − c) = I_c(b, a) at 1. Evaluated only in the cells that have such scores (the
        incomplete beta function and its gradient are far dearer than the density)."""
        zero = np.zeros(stats.n.shape)
        a, b = a + zero, b + zero  # (..., K, T, P)
        flat = (*a.shape[: a.ndim - zero.ndim], -1)
        c = np.broadcast_to(stats.bound_width.reshape((-1,) + (1,) * (zero.ndim - 1)), zero.shape).ravel()
        out = (a * 0.0).reshape(flat)
        for count, p, q in ((stats.at_lower, a, b), (stats.at_upper, b, a)):
            idx = np.flatnonzero(count)
            if idx.size:  # the tiny floor keeps the log finite far in a tail
                term = count.ravel()[idx] * m.log(m.betainc(p.reshape(flat)[..., idx], q.reshape(flat)[..., idx], c[idx]) + 1e-300)
                out = m.inc_at(out, idx, term)
        return out.reshape(a.shape)

    def nuisance_prior(self, pm, priors, data_sd, dims):
        return pm.LogNormal(self.nuisance, mu=priors["beta_phi_log_mean"], sigma=priors["beta_phi_log_sd"], dims=dims)

    def to_score(self, mean, lo, hi, n):
        return lo + (hi - lo) * mean

    def score_unit(self, options):
        return 100.0

    def sim_scale(self, options):
        return (0.0, 100.0)

    def draw(self, rng, mu, nuisance, trials=None):
        return rng.beta(mu * nuisance, (1 - mu) * nuisance)

    def sim_scores(self, x, options, integer_scores=True):
        y = 100.0 * x
        return np.round(y) if integer_scores else y


class Binomial(Family):
    """0/1 indicators (or ``score < threshold``) with success probability μ."""

    name, link, unit_mean = "binomial", "logit", True
    default_levels = (0.1, 0.6)  # probability of the indicator
    binary = True

    def prepare(self, y, scale, *, threshold=None, below=True):
        """The indicator ``y < threshold`` (``below=True``) or ``y > threshold``; else 0/1 scores required."""
        finite = np.isfinite(y)
        if threshold is not None:
            ind = (y < threshold) if below else (y > threshold)
            return np.where(finite, ind.astype(float), np.nan)
        if not np.all(np.isin(np.unique(y[finite]), [0.0, 1.0])):
            raise ModelSpecError(
                "likelihood 'binomial' needs 0/1 scores or a threshold, e.g. "
                "ChangePointModel(ds, likelihood='binomial', threshold=30) for 'score < 30'."
            )
        return y

    def statistics(self, obs, categories=None):
        """``s1`` = number of successes."""
        finite = np.isfinite(obs)
        return self.from_sums(finite.sum(-1).astype(float), np.where(finite, obs, 0.0).sum(-1), None)

    def from_sums(self, n, s1, s2):
        return CellStats(n, s1, np.zeros_like(n), np.zeros_like(n))

    def loglik(self, stats, mu, nuisance, m=NUMPY_MATH):
        return stats.s1 * m.log(mu) + (stats.n - stats.s1) * m.log1p(-mu)

    def sim_scale(self, options):
        return (0.0, 1.0)

    def draw(self, rng, mu, nuisance, trials=None):
        return (rng.random(np.shape(mu)) < mu).astype(float)


class Normal(Family):
    """Continuous scores, mean μ and noise sd σ; levels and their priors in data units."""

    name, nuisance = "normal", "noise_sd"
    default_levels = (0.0, 2.0)

    def statistics(self, obs, categories=None):
        """``s1`` = Σ y, ``s2`` = Σ y²."""
        finite = np.isfinite(obs)
        n = finite.sum(-1).astype(float)
        z = np.where(finite, obs, 0.0)
        return self.from_sums(n, z.sum(-1), (z * z).sum(-1))

    def from_sums(self, n, s1, s2):
        return CellStats(n, s1, s2, -0.5 * n * np.log(2 * np.pi))

    def loglik(self, stats, mu, nuisance, m=NUMPY_MATH):
        n, s1, s2 = stats.n, stats.s1, stats.s2
        return stats.const - n * m.log(nuisance) - (s2 - 2.0 * mu * s1 + n * mu * mu) / (2.0 * nuisance * nuisance)

    def level_prior(self, priors, data_mean, data_sd):
        return float(data_mean), priors["level_sd_normal"] * float(data_sd)

    def prompt_level_scale(self, priors, data_sd):
        return float(data_sd)

    def run_level_scale(self, priors, data_sd):
        return data_sd  # identity link: levels are in score units

    def nuisance_prior(self, pm, priors, data_sd, dims):
        return pm.HalfNormal(self.nuisance, sigma=2.0 * np.asarray(data_sd), dims=dims)

    def draw(self, rng, mu, nuisance, trials=None):
        return rng.normal(mu, nuisance * np.ones(np.shape(mu)))


class Poisson(Family):
    """Non-negative integer counts with rate μ."""

    name, link = "poisson", "log"
    default_levels = (20.0, 60.0)  # e.g. response length in tokens

    def prepare(self, y, scale, *, threshold=None, below=True):
        return require_counts(self.name, y)

    def statistics(self, obs, categories=None):
        """``s1`` = Σ y; ``const`` = −Σ log y!."""
        finite = np.isfinite(obs)
        z = np.where(finite, obs, 0.0)
        const = -np.where(finite, special.gammaln(z + 1), 0.0).sum(-1)
        return CellStats(finite.sum(-1).astype(float), z.sum(-1), _zero(obs), const)

    def loglik(self, stats, mu, nuisance, m=NUMPY_MATH):
        return stats.const + stats.s1 * m.log(mu) - stats.n * mu

    def level_prior(self, priors, data_mean, data_sd):
        return float(np.log(data_mean + 0.5)), priors["level_sd_link"]

    def draw(self, rng, mu, nuisance, trials=None):
        return rng.poisson(mu).astype(float)


class NegativeBinomial(Poisson):
    """Over-dispersed counts: mean μ, dispersion α (variance μ + μ²/α).

    The term Σ log Γ(y + α) − n log Γ(α) does not depend on the cell's mean: the model adds it once per
    order parameter from the distinct values and their counts (:meth:`shared_loglik`), pointwise checks
    per cell (:meth:`cell_shared_loglik`).
    """

    name, nuisance = "negative_binomial", "dispersion"

    def statistics(self, obs, categories=None):
        """Poisson's sums plus each order parameter's distinct values and their counts."""
        st = super().statistics(obs)
        finite = np.isfinite(obs)
        uniq = [np.unique(obs[i][finite[i]], return_counts=True) for i in range(obs.shape[0])]
        v_max = max(len(u[0]) for u in uniq)
        st.values, st.value_counts = np.zeros((obs.shape[0], v_max)), np.zeros((obs.shape[0], v_max))
        for i, (v, c) in enumerate(uniq):
            st.values[i, : len(v)], st.value_counts[i, : len(c)] = v, c
        return st

    def loglik(self, stats, mu, nuisance, m=NUMPY_MATH):
        a = nuisance
        return stats.const + stats.n * a * (m.log(a) - m.log(a + mu)) + stats.s1 * (m.log(mu) - m.log(a + mu))

    def shared_loglik(self, stats, nuisance, m=NUMPY_MATH):
        """Σ log Γ(y + α) − log Γ(α) per order parameter, ``(K,)``, from the distinct values (``nuisance`` (K,))."""
        c = stats.value_counts
        return (c * m.gammaln(stats.values + nuisance[:, None])).sum(-1) - c.sum(-1) * m.gammaln(nuisance)

    def cell_shared_loglik(self, obs, nuisance):
        """Per-cell Σ log Γ(y + α) − n log Γ(α): ``obs`` (K, T, P, N), ``nuisance`` (D, K) -> (D, K, T, P)."""
        d, k = nuisance.shape
        out = np.zeros((d, *obs.shape[:3]))
        for i in range(k):
            o = obs[i]
            finite = np.isfinite(o)
            vals = np.unique(o[finite])
            idx = np.searchsorted(vals, np.where(finite, o, vals[0]))
            counts = np.zeros((*o.shape[:2], len(vals)))
            np.add.at(counts, (*np.indices(o.shape)[:2], idx), finite.astype(float))
            a = nuisance[:, i : i + 1]
            out[:, i] = np.einsum("tpv,dv->dtp", counts, special.gammaln(vals[None, :] + a) - special.gammaln(a))
        return out

    def nuisance_prior(self, pm, priors, data_sd, dims):
        return pm.LogNormal(self.nuisance, mu=priors["nb_alpha_log_mean"], sigma=priors["nb_alpha_log_sd"], dims=dims)

    def draw(self, rng, mu, nuisance, trials=None):
        return rng.poisson(rng.gamma(nuisance * np.ones(np.shape(mu)), mu / nuisance)).astype(float)


class Ordinal(Family):
    """Likert scores: cumulative-logit likelihood with cut points (:mod:`phasebayes.models.ordinal`)."""

    name, bounded_integer, has_cut_points = "ordinal", True, True
    default_levels = (4.0, 2.0)  # expected Likert score (1-5 by default)

    def prepare(self, y, scale, *, threshold=None, below=True):
        """Integer scores on ``[lower, upper]`` -> category indices ``0 .. upper − lower`` (Likert 1-5 -> 0..4)."""
        x = integer_scale(self.name, y, scale)
        if scale[1] - scale[0] < 2:
            raise ModelSpecError("likelihood 'ordinal' needs at least 3 categories; use 'binomial' for 0/1 scores.")
        return x

    def statistics(self, obs, categories=None):
        """``counts``: scores per category, ``(K, T, P, C)``; ``categories`` (K,) default: largest index + 1."""
        finite = np.isfinite(obs)
        ncat = (np.asarray(categories, dtype=int) if categories is not None
                else np.array([int(np.nanmax(obs[i])) + 1 for i in range(obs.shape[0])]))
        idx = np.where(finite, obs, -1).astype(int)
        cat_counts = (idx[..., None] == np.arange(int(ncat.max()))).sum(-2).astype(float)
        z = _zero(obs)
        return CellStats(finite.sum(-1).astype(float), z, z, z, counts=cat_counts, n_categories=ncat)

    def loglik(self, stats, mu, nuisance, m=NUMPY_MATH):
        raise ModelSpecError("the ordinal family's likelihood needs cut points: use phasebayes.models.ordinal.")

    def level_prior(self, priors, data_mean, data_sd):
        return 0.0, priors["level_sd_ordinal"]

    def to_score(self, mean, lo, hi, n):
        return lo + mean  # category index -> score

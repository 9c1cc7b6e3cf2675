"""Numpy mirror of the change-point model: mean curves, pointwise log-likelihood, step conditionals.

Mixed into :class:`~phasebayes.models.changepoint.ChangePointModel`; every method takes flattened
posterior draws (``post[name]`` with a leading draw axis).
"""

from __future__ import annotations

import numpy as np

from .families import NUMPY_MATH, get_family
from .links import _logistic
from .ordinal import expected_category, ordinal_cell_probs, ordinal_loglik


class _NumpyMirror:
    """Post-hoc computations on posterior draws (the model's formulas on numpy)."""

    def mean_curves(self, post: dict[str, np.ndarray], steps: np.ndarray | None = None, tau_index: np.ndarray | None = None):
        """Expected score on the observation scale for each draw: ``(D, K, T, P)``.

        ``post`` holds flattened draws of the model's variables; ``steps`` defaults to the grid.
        For the step model ``tau_index`` (D, K) gives the first post-transition grid index.
        """
        K, P = len(self.order_parameters), len(self.prompts)
        t = self.steps if steps is None else np.asarray(steps, dtype=float)
        u = (t - self.t0) / self.span
        lb, la = self._link_levels(post)
        D = lb.shape[0]
        out = np.empty((D, K, len(t), P))
        for fam, ix in self.groups.items():
            A = self._level_mean(fam, ix, lb[:, ix], post)[:, :, None, :]
            if self.config.transition == "none":
                out[:, ix] = np.broadcast_to(A, (D, len(ix), len(t), P))
                continue
            B = self._level_mean(fam, ix, la[:, ix], post)[:, :, None, :]
            out[:, ix] = A + (B - A) * self._transition_weights(post, ix, t, tau_index)
        return out

    def _transition_weights(self, post, ix, t, tau_index=None) -> np.ndarray:
        """Weight of the after level, s, per draw: ``(D, k, len(t), P)``."""
        if self.config.transition == "sigmoid":
            u = (np.asarray(t, dtype=float) - self.t0) / self.span
            tau = self._tau_prompt_unit(post)[:, ix]
            w = post["width_unit"][:, ix]
            return _logistic((u[None, None, :, None] - tau[:, :, None, :]) / w[:, :, None, None])
        tau_step = self.steps[tau_index[:, ix]]  # (D,k)
        s = (np.asarray(t)[None, None, :, None] >= tau_step[:, :, None, None]).astype(float)
        return np.broadcast_to(s, (*s.shape[:3], len(self.prompts)))

    def _level_mean(self, fam: str, ix, link: np.ndarray, post) -> np.ndarray:
        """Mean on the observation scale of levels given on the link scale, ``link`` (D, k, P)."""
        if not get_family(fam).has_cut_points:
            return get_family(fam).inv_link(link)
        return np.stack([expected_category(link[:, j], post[f"cutpoints_{k}"][:, None, :])
                         for j, k in enumerate(ix)], axis=1)

    def _link_levels(self, post):
        K, P = len(self.order_parameters), len(self.prompts)
        partial = self.config.pooling == "partial" and P > 1
        if partial and "before_prompt_link" in post:  # centred parametrisation
            lb = post["before_prompt_link"]
        else:
            lb = (post["level_before_link"] * self.before_free)[:, :, None] + (
                post["sigma_before_link"][:, :, None] * post["z_before"] if partial else 0.0
            )
        lb = np.broadcast_to(lb, (lb.shape[0], K, P))
        if self.config.transition == "none":
            return lb, None
        if partial and "after_prompt_link" in post:
            la = post["after_prompt_link"]
        else:
            la = post["level_after_link"][:, :, None] + (
                post["sigma_after_link"][:, :, None] * post["z_after"] if partial else 0.0
            )
        return lb, np.broadcast_to(la, lb.shape)

    def _tau_prompt_unit(self, post):
        P = len(self.prompts)
        if self.config.pooling == "partial" and P > 1:
            if "tau_prompt_unit" in post:
                return post["tau_prompt_unit"]
            return post["tau_unit"][:, :, None] + post["sigma_tau_unit"][:, :, None] * post["z_tau"]
        return np.repeat(post["tau_unit"][:, :, None], P, axis=2)

    def _nuisance_draws(self, post, fam, ix):
        name = get_family(fam).nuisance
        return None if name is None else post[name][:, :, None, None]

    def pointwise_loglik(self, post: dict[str, np.ndarray], tau_index: np.ndarray | None = None) -> np.ndarray:
        """Log-likelihood of each cell (order parameter, step, prompt) per draw: ``(D, K, T, P)``.

        Computed from sufficient statistics (plus, for negative binomial, per-cell value counts). For
        the step model it is conditional on the sampled grid position ``tau_index``.
        """
        mu = self.mean_curves(post, tau_index=tau_index)
        out = np.empty_like(mu)
        for fam, ix in self.groups.items():
            if get_family(fam).has_cut_points:
                out[:, ix] = self._ordinal_cells(post, ix, tau_index, lambda p, c: ordinal_loglik(c, p))
                continue
            F = get_family(fam)
            m = F.clip(self._judge_mean(mu[:, ix], fam, ix, post))
            nuis = self._nuisance_draws(post, fam, ix)
            ll = F.loglik(self.stats[fam], m, nuis, NUMPY_MATH)
            if nuis is not None:
                ll = ll + F.cell_shared_loglik(self.obs[ix], nuis[:, :, 0, 0])
            out[:, ix] = ll
        return out

    def step_conditional(self, post: dict[str, np.ndarray]) -> np.ndarray:
        """Step model: p(tau = t_j | parameters, data) per draw, ``(D, K, T)`` (zero at j = 0)."""
        K, T = len(self.order_parameters), len(self.steps)
        lb, la = self._link_levels(post)
        D = lb.shape[0]
        logp = np.full((D, K, T), -np.inf)
        for fam, ix in self.groups.items():
            if get_family(fam).has_cut_points:
                ll = lambda p, c: ordinal_loglik(c, p).sum(-1)  # noqa: E731
                pre = np.stack([self._ordinal_cells(post, ix, None, ll, after=a) for a in (False, True)])
                pre, post_ll = pre[0], pre[1]
            else:
                F, nuis = get_family(fam), self._nuisance_draws(post, fam, ix)
                A = F.clip(F.inv_link(lb[:, ix])[:, :, None, :])
                B = F.clip(F.inv_link(la[:, ix])[:, :, None, :])
                pre = F.loglik(self.stats[fam], A, nuis, NUMPY_MATH).sum(-1)  # (D,k,T)
                post_ll = F.loglik(self.stats[fam], B, nuis, NUMPY_MATH).sum(-1)
            cum_pre = np.cumsum(pre, axis=-1)[..., :-1]
            suffix = np.cumsum(post_ll[..., ::-1], axis=-1)[..., ::-1][..., 1:]
            logp[:, ix, 1:] = self.step_log_prior() + cum_pre + suffix
        logp -= logp.max(-1, keepdims=True)
        prob = np.exp(logp)
        return prob / prob.sum(-1, keepdims=True)

    def _ordinal_cells(self, post, ix, tau_index, fn, after: bool | None = None) -> np.ndarray:
        """``fn(probs (D, T, P, C), counts (T, P, C))`` per ordinal order parameter, stacked on axis 1.

        ``after`` None: the fitted mixture; False/True: the before/after level alone (step model).
        """
        lb, la = self._link_levels(post)
        st = self.stats["ordinal"]
        out = []
        for j, k in enumerate(ix):
            c = int(self.n_cat[k])
            if after is None:
                s = None if self.config.transition == "none" else self._transition_weights(post, [k], self.steps, tau_index)[:, 0]
            else:
                s = np.full((lb.shape[0], len(self.steps), lb.shape[2]), float(after))
            probs = ordinal_cell_probs(self, post, k, lb, la, s)
            out.append(fn(probs, st.counts[j, :, :, :c]))
        return np.stack(out, axis=1)

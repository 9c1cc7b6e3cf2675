"""Synthetic runs whose *output distributions* are known exactly (tests, calibration, benchmarks).

:func:`phasebayes.simulate_run` draws judged scores only. The dissimilarity estimators of
:mod:`phasebayes.dissimilarity` also need the log-probability of every response under every checkpoint,
and their checks need the true divergences. :func:`simulate_outputs` draws a run in which

* every response ``x`` is drawn from a distribution ``P(x | t, prompt)`` known in closed form;
* ``logp[step, prompt, sample, ref_step] = log P(x | ref_step)`` exactly (plus a per-response constant
  that does not depend on the checkpoint, e.g. ``-5000`` to mimic long responses: it cancels in every
  likelihood ratio and must not change any estimate);
* every order parameter is a known function (channel) of ``x``, so its distribution is known exactly;
* :class:`OutputTruth` computes the true dissimilarity curves and the true fractions ρ_k.

Two families:

``"categorical"``
    ``x = (a, b)``: ``a ∈ {0..n_a-1}`` changes with the step through a logistic transition of its
    logits (per prompt: own transition step and own before/after logits), ``b ∈ {0, 1}`` is
    independent of ``a`` with a fixed distribution. Order parameters (judge-like scores on 0–100, each
    value in its own default bin of width 10):

    - ``identity``: ``5 + 10·(2a + b)`` — a bijection of ``x`` (ρ = 1 exactly);
    - ``alignment``: 15 if ``a < n_a/2`` else 85 — a coarse function of the changing part (0 < ρ < 1);
    - ``parity``: 25 if ``a`` is even else 75 — another coarse function;
    - ``irrelevant``: 35 if ``b == 0`` else 65 — depends only on the constant part (ρ = 0 exactly);
    - ``weak`` (only with ``weak_flip=q``): ``alignment`` seen through a noisy judge that reports the
      other value with probability ``q`` (a stochastic channel: small ρ as q → ½).

``"gaussian"``
    ``x ~ Normal(μ_p(t), 1)`` with ``μ_p(t)`` a logistic transition from 0 to ``shift``; log-densities
    instead of log-probabilities. Order parameter ``sign``: 100 if ``x > 0`` else 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from .dataset import assemble_run
from .stats.divergence import discrete_divergence
from .errors import ModelSpecError

__all__ = ["simulate_outputs", "OutputTruth", "discrete_divergence", "window_mixture_index"]

def window_mixture_index(n_steps: int, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Left/right window membership per boundary, truncated at the edges.

    Returns ``(left, right)``, boolean arrays of shape ``(n_steps - 1, n_steps)``: ``left[i, j]`` is
    True when grid point ``j`` is in σ_L of boundary ``i`` (between grid points ``i`` and ``i+1``).
    """
    i = np.arange(n_steps - 1)[:, None]
    j = np.arange(n_steps)[None, :]
    left = (j <= i) & (j >= i - window + 1)
    right = (j >= i + 1) & (j <= i + window)
    return left, right


@dataclass
class OutputTruth:
    """Exact output distributions of a run drawn by :func:`simulate_outputs`.

    Attributes
    ----------
    family
        ``"categorical"`` or ``"gaussian"``.
    steps
        Checkpoint steps, shape ``(n_steps,)``.
    probs
        Categorical family: ``P(x | step, prompt)``, shape ``(n_steps, n_prompts, n_categories)``.
    channels
        Order parameter name → channel matrix ``C[x, o]`` = Pr(score value o | x), shape
        ``(n_categories, n_values)`` (deterministic maps are 0/1 rows).
    means
        Gaussian family: μ per (step, prompt), shape ``(n_steps, n_prompts)``.
    """

    family: str
    steps: np.ndarray
    probs: np.ndarray | None = None
    channels: dict[str, np.ndarray] = field(default_factory=dict)
    means: np.ndarray | None = None
    tau: np.ndarray | None = None

    @property
    def order_parameters(self) -> list[str]:
        """Names of the order parameters, in dataset order."""
        return list(self.channels)

    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        lo = float(self.means.min()) - 12.0
        hi = float(self.means.max()) + 12.0
        x = np.linspace(lo, hi, 40001)
        dens = np.exp(-0.5 * (x[None, None, :] - self.means[:, :, None]) ** 2) / np.sqrt(2 * np.pi)
        return x, dens

    def dissimilarity(self, window: int, measure: str = "linear") -> dict[str, np.ndarray]:
        """True curves: ``{"total": (n_boundaries, n_prompts), <order parameter>: ..., "joint": ...}``.

        Values are per prompt; average over the prompt axis for the prompt-averaged curve. ``joint``
        is the divergence of the vector of all order parameters (their channels are applied
        independently given ``x``). Gaussian family: computed by quadrature on a fine grid.
        """
        left, right = window_mixture_index(len(self.steps), window)
        wl = left / left.sum(1, keepdims=True)
        wr = right / right.sum(1, keepdims=True)
        if self.family == "gaussian":
            x, dens = self._grid()
            dx = x[1] - x[0]
            pl = np.einsum("bj,jpx->bpx", wl, dens) * dx
            pr = np.einsum("bj,jpx->bpx", wr, dens) * dx
        else:
            pl = np.einsum("bj,jpx->bpx", wl, self.probs)
            pr = np.einsum("bj,jpx->bpx", wr, self.probs)
        out = {"total": discrete_divergence(pl, pr, measure)}
        if self.family == "gaussian":
            for name, thr in self.channels.items():
                cdf = (x > 0).astype(float) if thr is None else thr(x)
                ol = np.stack([(pl * (1 - cdf)).sum(-1), (pl * cdf).sum(-1)], -1)
                orr = np.stack([(pr * (1 - cdf)).sum(-1), (pr * cdf).sum(-1)], -1)
                out[name] = discrete_divergence(ol, orr, measure)
            return out
        for name, chan in self.channels.items():
            out[name] = discrete_divergence(pl @ chan, pr @ chan, measure)
        if len(self.channels) > 1:
            joint = None
            for chan in self.channels.values():
                joint = chan if joint is None else np.einsum("xa,xb->xab", joint, chan).reshape(chan.shape[0], -1)
            out["joint"] = discrete_divergence(pl @ joint, pr @ joint, measure)
        return out

    def fractions(self, window: int, measure: str = "linear", boundary: int | None = None) -> dict[str, dict[str, float]]:
        """True fractions at one boundary (default: the peak of the prompt-averaged total curve).

        Returns ``{name: {"ratio_of_means": ρ of prompt-averaged curves, "mean_of_ratios": mean over
        prompts of per-prompt ρ}}`` for every order parameter and ``joint``.
        """
        curves = self.dissimilarity(window, measure)
        total = curves["total"]
        b = int(np.argmax(total.mean(1))) if boundary is None else int(boundary)
        out = {}
        for name, cur in curves.items():
            if name == "total":
                continue
            out[name] = {
                "ratio_of_means": float(cur[b].mean() / total[b].mean()),
                "mean_of_ratios": float(np.mean(cur[b] / total[b])),
            }
        return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def simulate_outputs(
    n_steps: int = 30,
    n_prompts: int = 4,
    n_samples: int = 50,
    *,
    family: str = "categorical",
    step_spacing: int = 10,
    tau: float | None = None,
    tau_spread: float = 0.0,
    width: float | None = None,
    strength: float = 2.5,
    shift: float = 2.0,
    n_a: int = 5,
    p_b: float = 0.3,
    logp_offset: float = 0.0,
    logp_offset_sd: float = 0.0,
    embedding_dim: int | None = None,
    embedding_noise: float = 1.0,
    responses: bool = False,
    weak_flip: float | None = None,
    seed: int | None = None,
) -> tuple[xr.Dataset, OutputTruth]:
    """Draw a run dataset with exact log-probabilities and known output distributions.

    Parameters
    ----------
    n_steps, n_prompts, n_samples
        Grid size: checkpoints ``0, step_spacing, ...``; prompts ``p0, p1, ...``; samples per cell.
    family
        ``"categorical"`` or ``"gaussian"`` (see module docstring).
    tau, tau_spread, width
        Transition step (default: middle of the grid), the SD of per-prompt transition steps around it
        (training-step units) and the logistic width (default: 1.5 grid spacings).
    strength
        Categorical: scale of the random before/after logits of ``a`` (larger = bigger change).
    shift
        Gaussian: size of the mean shift (in SDs).
    n_a, p_b
        Categorical: number of values of the changing part ``a`` (``2·n_a ≤ 10`` so every value of
        ``identity`` has its own default bin) and ``Pr(b = 1)``.
    logp_offset, logp_offset_sd
        A per-response constant added to every ``logp`` of that response (mean and SD), the same under
        every checkpoint, e.g. ``-5000`` to mimic long responses. It cancels in every likelihood ratio.
    embedding_dim
        If given, add ``embedding`` (step, prompt, sample, embedding_dim): a fixed random projection of
        the one-hot of ``x`` (categorical) or of ``x`` itself (gaussian) plus N(0, embedding_noise²)
        noise — a stand-in for sentence embeddings in fast tests.
    responses
        If True, add a ``response`` text per sample describing ``x`` (for embedding-model tests).
    weak_flip
        Categorical: add the order parameter ``weak`` (``alignment`` flipped with this probability).
    seed
        Random seed.

    Returns
    -------
    ``(ds, truth)``: a run dataset (``score``, ``logp`` with ``ref_step`` = every checkpoint, optional
    ``embedding``/``response``) and the :class:`OutputTruth`.
    """
    if family not in ("categorical", "gaussian"):
        raise ModelSpecError(f"unknown family {family!r}; use 'categorical' or 'gaussian'.")
    if n_steps < 3 or n_prompts < 1 or n_samples < 1:
        raise ModelSpecError("simulate_outputs needs n_steps >= 3, n_prompts >= 1 and n_samples >= 1.")
    if family == "categorical" and not 1 <= n_a <= 5:
        raise ModelSpecError("n_a must be between 1 and 5 (2·n_a score values must fit 10 default bins).")
    rng = np.random.default_rng(seed)
    steps = np.arange(n_steps, dtype=np.int64) * int(step_spacing)
    tau = float(steps[n_steps // 2] - step_spacing / 2) if tau is None else float(tau)
    width = 1.5 * step_spacing if width is None else float(width)
    tau_p = tau + tau_spread * rng.standard_normal(n_prompts)
    s = _sigmoid((steps[:, None] - tau_p[None, :]) / width)  # (n_steps, n_prompts)
    offsets = logp_offset + logp_offset_sd * rng.standard_normal((n_steps, n_prompts, n_samples))

    if family == "categorical":
        before = strength * rng.standard_normal((n_prompts, n_a))
        after = strength * rng.standard_normal((n_prompts, n_a))
        logits = before[None] * (1 - s[..., None]) + after[None] * s[..., None]
        log_pa = logits - np.logaddexp.reduce(logits, axis=-1, keepdims=True)  # (n_steps, P, n_a)
        log_pb = np.log(np.array([1 - p_b, p_b]))
        log_px = (log_pa[..., :, None] + log_pb).reshape(n_steps, n_prompts, 2 * n_a)  # x = 2a + b
        probs = np.exp(log_px)
        # draw x per (step, prompt, sample) by inverse CDF
        cdf = np.cumsum(probs, axis=-1)
        u = rng.random((n_steps, n_prompts, n_samples, 1))
        x = np.minimum((u > cdf[:, :, None, :]).sum(-1), 2 * n_a - 1)  # (n_steps, P, S)
        # logp[j, p, s, k] = log P(x_{jps} | t_k, p)
        lp = np.take_along_axis(
            np.broadcast_to(log_px.transpose(1, 0, 2)[None, :, None, :, :], (n_steps, n_prompts, n_samples, n_steps, 2 * n_a)),
            np.broadcast_to(x[:, :, :, None, None], (n_steps, n_prompts, n_samples, n_steps, 1)),
            axis=-1,
        )[..., 0]
        a = x // 2
        b = x % 2
        values = np.arange(2 * n_a)
        chan_scores = {
            "identity": 5.0 + 10.0 * values,
            "alignment": np.where(values // 2 < n_a / 2, 15.0, 85.0),
            "parity": np.where((values // 2) % 2 == 0, 25.0, 75.0),
            "irrelevant": np.where(values % 2 == 0, 35.0, 65.0),
        }
        channels = {}
        for name, sc in chan_scores.items():
            uniq = np.unique(sc)
            channels[name] = (sc[:, None] == uniq[None, :]).astype(float)
        score = np.stack([chan_scores[name][x] for name in chan_scores])
        if weak_flip is not None:
            if not 0.0 <= weak_flip <= 0.5:
                raise ModelSpecError(f"weak_flip must be in [0, 0.5], got {weak_flip}.")
            high = chan_scores["alignment"] == 85.0  # (n_values,)
            flip = rng.random(x.shape) < weak_flip
            weak = np.where(high[x] ^ flip, 85.0, 15.0)
            score = np.concatenate([score, weak[None]])
            channels["weak"] = np.stack([np.where(high, weak_flip, 1 - weak_flip), np.where(high, 1 - weak_flip, weak_flip)], -1)
            chan_scores["weak"] = None
        truth = OutputTruth("categorical", steps, probs=probs, channels=channels, tau=tau_p)
        text = np.array([f"answer {ai} in style {'B' if bi else 'A'}" for ai, bi in zip(a.ravel(), b.ravel())], dtype=object)
        onehot = np.eye(2 * n_a)[x]
    else:
        mu = shift * s  # (n_steps, P)
        x = mu[:, :, None] + rng.standard_normal((n_steps, n_prompts, n_samples))
        lp = -0.5 * (x[..., None] - mu.T[None, :, None, :]) ** 2 - 0.5 * np.log(2 * np.pi)
        score = np.where(x > 0, 100.0, 0.0)[None]
        chan_scores = {"sign": None}
        truth = OutputTruth("gaussian", steps, channels={"sign": None}, means=mu, tau=tau_p)
        text = np.array([f"value {v:.2f}" for v in x.ravel()], dtype=object)
        onehot = x[..., None]
    lp = lp + offsets[..., None]

    ds = assemble_run(
        score,
        order_parameters=list(chan_scores),
        steps=steps,
        prompts=[f"p{i}" for i in range(n_prompts)],
        samples=np.arange(n_samples),
    )
    ds["logp"] = (("step", "prompt", "sample", "ref_step"), lp)
    ds = ds.assign_coords(ref_step=("ref_step", steps.copy()))
    if embedding_dim is not None:
        proj = rng.standard_normal((onehot.shape[-1], int(embedding_dim)))
        emb = onehot @ proj + embedding_noise * rng.standard_normal(x.shape + (int(embedding_dim),))
        ds["embedding"] = (("step", "prompt", "sample", "embedding_dim"), emb)
    if responses:
        ds["response"] = (("step", "prompt", "sample"), text.reshape(x.shape))
    ds.attrs["simulated"] = f"simulate_outputs(family={family!r}, seed={seed!r})"
    return ds, truth

"""The model of one binary split of a histogram, across prompts and the two windows of a boundary.

At a split, prompt ``p`` has ``k_L`` of its ``n_L`` left-window samples (and ``k_R`` of ``n_R`` on the
right) in the first of two parts. With ``b`` the run's share of the first part:

- the prompt's centre ``m_p ~ Beta(α b, α (1 − b))`` (α: how much prompts differ from each other);
- its two windows are in one of three states:

  * *unchanged*: one share for both windows, ``π_L = π_R = π ~ Beta(β m_p, β (1 − m_p))``;
  * *on its own*: ``π_L, π_R ~ Beta(β m_p, β (1 − m_p))`` independently (a change in a direction of the
    prompt's own; β: how far a window's share strays from the centre). Each share has the same prior in
    both states, so comparing them tests only whether the windows share it (a two-sample test);
  * *with the population*: as *on its own* but around the centre shifted by the population's change,
    ``logit m_{L,R} = logit m_p ∓ δ/2``, δ the log-odds shift of the pooled counts (so prompts that move
    together share their strength);

- (state, α, β) is one of a grid of components whose weights are shared by all prompts (prior a
  symmetric Dirichlet of total concentration 1, i.e. Dirichlet(1/K, …, 1/K) over the K = 84 components;
  drawn by importance sampling around their EM estimate). The prior is sparse on purpose: Dirichlet(1, …, 1)
  would be worth 84 pseudo-prompts against a dozen real ones and pull the weights to uniform — a third of
  every prompt's mass on "unchanged" and most on strongly shrinking β — which biased fractions of
  0.5–1 down by about 0.3 at 4 answers per prompt (``benchmarks/bench_decomposition_calibration.py``).

Every prompt's likelihood is integrated over its centre numerically (a fixed grid in logit space), so
priors are proper. For the posterior draws δ is fixed at the pooled estimate (empirical Bayes); for the
Bayes factor of "every prompt unchanged" it is integrated over its prior, Normal(0, 2²) in log-odds.
"""

from __future__ import annotations

import numpy as np
from scipy.special import betaln, expit, logsumexp, softmax

__all__ = ["ALPHA_GRID", "BETA_GRID", "split_draws", "split_log_bf"]

ALPHA_GRID = np.array([2.0, 8.0, 32.0, 128.0])
"""Prior sample sizes of a prompt's centre around the run's share (prompt heterogeneity)."""
BETA_GRID = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
"""Prior sample sizes of the windows' shares around the prompt's centre (smaller = larger changes)."""
_U = np.linspace(-10.0, 10.0, 81)  # quadrature grid of logit m
_DELTA = np.linspace(-8.0, 8.0, 33)  # quadrature grid of the population log-odds shift (Bayes factor)
_LOG_DU = np.log(_U[1] - _U[0])


def _log_bb(k: np.ndarray, n: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log beta-binomial probability of one ordered sequence with ``k`` of ``n`` in the first part."""
    return betaln(a + k, b + n - k) - betaln(a, b)


def _log_centre_prior(b: float) -> np.ndarray:
    """log Beta(m | α b, α (1 − b)) · dm on the quadrature grid, per α: ``(A, Q)``."""
    m = expit(_U)
    a = ALPHA_GRID[:, None] * b
    c = ALPHA_GRID[:, None] * (1.0 - b)
    return (a * np.log(m) + c * np.log1p(-m) - betaln(a, c)) + _LOG_DU  # the Jacobian dm = m (1 − m) du


def _terms(kl, nl, kr, nr, b: float, delta: float) -> dict[str, np.ndarray]:
    """log p(data_p, m | component) on the quadrature grid: ``own``/``pop``/``same`` each ``(A, B, P, Q)``."""
    lp = _log_centre_prior(b)[:, None, None, :]  # (A, 1, 1, Q)
    beta = BETA_GRID[None, :, None, None]
    k = [x[None, None, :, None] for x in (kl, nl, kr, nr)]
    m = expit(_U)
    out = {"same": lp + _log_bb(k[0] + k[2], k[1] + k[3], beta * m, beta * (1 - m))}
    out["own"] = lp + _log_bb(k[0], k[1], beta * m, beta * (1 - m)) + _log_bb(k[2], k[3], beta * m, beta * (1 - m))
    ml, mr = expit(_U - delta / 2), expit(_U + delta / 2)
    out["pop"] = lp + _log_bb(k[0], k[1], beta * ml, beta * (1 - ml)) + _log_bb(k[2], k[3], beta * mr, beta * (1 - mr))
    return out


def _component_loglik(t: dict[str, np.ndarray]) -> np.ndarray:
    """log p(data_p | component) ``(P, n_components)``; components: pop, own, same (A·B each)."""
    parts = [logsumexp(t[s], axis=-1) for s in ("pop", "own", "same")]  # (A, B|1, P)
    return np.concatenate([x.reshape(-1, x.shape[-1]) for x in parts], axis=0).T


def _shift(kl, nl, kr, nr) -> float:
    """Population log-odds shift δ of the pooled counts (posterior means under Beta(½, ½))."""
    gl = (kl.sum() + 0.5) / (nl.sum() + 1.0)
    gr = (kr.sum() + 0.5) / (nr.sum() + 1.0)
    return float(np.log(gr / (1 - gr)) - np.log(gl / (1 - gl)))


def split_log_bf(kl, nl, kr, nr, b: float, rng: np.random.Generator, n_theta: int = 300) -> float:
    """log Bayes factor of "every prompt unchanged" against the three-state model at one split.

    (α, β) uniform on their grids per prompt; the state probabilities ``θ ~ Dirichlet(1, 1, 1)`` and the
    population shift ``δ ~ Normal(0, 2²)`` (log-odds) integrated numerically, so the shared direction
    adds evidence only as far as it is not fitted to chance.
    """
    if not ((nl > 0) & (nr > 0)).any():
        return 0.0
    norm_ab = np.log(len(ALPHA_GRID) * len(BETA_GRID))
    t = _terms(kl, nl, kr, nr, b, 0.0)
    same = logsumexp(logsumexp(t["same"], axis=-1), axis=(0, 1)) - norm_ab  # (P,)
    own = logsumexp(logsumexp(t["own"], axis=-1), axis=(0, 1)) - norm_ab
    log_pd = -0.5 * (_DELTA / 2.0) ** 2
    log_pd = log_pd - logsumexp(log_pd)
    pop = np.stack([logsumexp(logsumexp(_terms(kl, nl, kr, nr, b, d)["pop"], axis=-1), axis=(0, 1)) - norm_ab
                    for d in _DELTA])  # (n_delta, P)
    theta = np.log(rng.dirichlet(np.ones(3), size=n_theta))  # (n_theta, 3)
    per_prompt = np.logaddexp(np.logaddexp(theta[None, :, None, 0] + pop[:, None, :], theta[None, :, None, 1] + own),
                              theta[None, :, None, 2] + same)  # (n_delta, n_theta, P)
    log_h1 = logsumexp(per_prompt.sum(-1) + log_pd[:, None]) - np.log(n_theta)
    return float(same.sum() - log_h1)


WEIGHT_PRIOR_TOTAL = 1.0
"""Total concentration of the symmetric Dirichlet prior of the component weights (see the module notes)."""


def _weight_draws(L: np.ndarray, n_draws: int, rng: np.random.Generator, n_proposals: int = 2000) -> np.ndarray:
    """Posterior draws ``(n_draws, n_components)`` of the component weights (prior Dirichlet(a0, …, a0),
    ``a0 = WEIGHT_PRIOR_TOTAL / n_components``).

    Importance sampling with a Dirichlet proposal around the EM estimate: a point estimate of the
    weights at the edge of a grid would over-shrink prompts whose change a few samples can barely show.
    """
    L = L - L.max(-1, keepdims=True)
    lik = np.exp(L)
    m = L.shape[1]
    w = np.full(m, 1.0 / m)
    for _ in range(100):
        resp = lik * w
        resp /= resp.sum(-1, keepdims=True)
        w = (resp.sum(0) + 1e-2) / (resp.sum() + m * 1e-2)
    a0 = WEIGHT_PRIOR_TOTAL / m
    alpha_q = a0 + L.shape[0] * w
    prop = rng.dirichlet(alpha_q, size=n_proposals)
    log_prop = np.log(np.maximum(prop, 1e-300))
    log_w = np.log(np.maximum(prop @ lik.T, 1e-300)).sum(-1) + ((a0 - alpha_q) * log_prop).sum(-1)
    return prop[rng.choice(n_proposals, size=n_draws, p=softmax(log_w))]


def split_draws(kl, nl, kr, nr, b: float, n_draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Posterior draws of the first part's share in the two windows, ``(π_L, π_R)`` each ``(n_draws, P)``.

    ``kl, nl, kr, nr`` are ``(P,)`` counts; ``b`` the run's share of the first part (in (0, 1)).
    """
    P = len(kl)
    A, B = len(ALPHA_GRID), len(BETA_GRID)
    delta = _shift(kl, nl, kr, nr)
    t = _terms(kl, nl, kr, nr, b, delta)
    L = _component_loglik(t)  # (P, 3AB)
    w = _weight_draws(L, n_draws, rng)  # (n, n_comp)
    comp = np.argmax(np.log(np.maximum(w, 1e-300))[:, None, :] + L[None] + rng.gumbel(size=(n_draws, P, L.shape[1])), -1)
    state, ia, ib = comp // (A * B), (comp % (A * B)) // B, comp % B  # state: pop, own, same
    # the centre m on its grid, given the component
    grid = np.stack([t["pop"], t["own"], t["same"]])  # (3, A, B, P, Q)
    logpost = grid[state, ia, ib, np.arange(P)[None, :]]  # (n, P, Q)
    iq = np.argmax(logpost + rng.gumbel(size=logpost.shape), axis=-1)
    u = _U[iq]
    beta = BETA_GRID[ib]
    ml = expit(np.where(state == 0, u - delta / 2, u))
    mr = expit(np.where(state == 0, u + delta / 2, u))
    pl = rng.beta(beta * ml + kl, beta * (1 - ml) + nl - kl)
    pr = rng.beta(beta * mr + kr, beta * (1 - mr) + nr - kr)
    # unchanged: one share for both windows, from the data of both
    m = expit(u)
    same = rng.beta(beta * m + kl + kr, beta * (1 - m) + nl - kl + nr - kr)
    pl = np.where(state == 2, same, pl)
    pr = np.where(state == 2, same, pr)
    return pl, pr

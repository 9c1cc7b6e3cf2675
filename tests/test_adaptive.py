"""Adaptive evaluation: the exact grid posterior, the loop against a simulator (recovery, budget, target,
resumption after a kill, bad input) and calibration of tau under the adaptive design."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit

import phasebayes as pb
from phasebayes.errors import ArgumentError
from phasebayes.models import grid_step

STEPS = np.arange(0, 600, 10)  # 60 checkpoints
PROMPTS = [f"p{i}" for i in range(6)]


class Simulator(pb.SimulatedSampler):
    """The package's simulated sampler on this file's prompts, optionally killed after ``fail_after`` calls."""

    def __init__(self, taus: dict[str, float], width: float = 8.0, seed: int = 0, levels=(80.0, 30.0),
                 fail_after: int | None = None, prompt_tau_sd: float = 0.0):
        super().__init__(taus, PROMPTS, width=width, levels=levels, seed=seed, prompt_tau_sd=prompt_tau_sd)
        self.taus, self.fail_after = self.tau, fail_after

    def __call__(self, step: int, prompt: str, n: int) -> dict[str, np.ndarray]:
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("simulated kill")
        return super().__call__(step, prompt, n)


def test_grid_posterior_equals_numerical_integration_of_the_levels():
    """The closed-form marginal over (a, b) equals brute-force integration on a fine (a, b) grid."""
    rng = np.random.default_rng(1)
    steps = np.arange(0, 100, 10)
    scores = 70 - 40 * expit((steps[:, None] - 47) / 6) + rng.normal(0, 8, (10, 5))
    sums = grid_step.regression_sums(steps, scores)
    grid = grid_step.Grid(np.linspace(20, 80, 7), np.array([3.0, 10.0, 25.0]))
    prior_sd = 60.0
    logp, levels = grid_step.log_posterior(grid, sums, prior_sd=prior_sd)
    a, b = np.meshgrid(np.linspace(-150, 250, 801), np.linspace(-150, 250, 801), indexing="ij")
    da = (a[1, 0] - a[0, 0]) ** 2
    prior_mean = sums.s1.sum() / sums.n.sum()
    brute = np.empty(logp.shape)
    for i, tau in enumerate(grid.tau):
        for j, w in enumerate(grid.width):
            s = expit((steps - tau) / w)
            mu = a[..., None] + (b - a)[..., None] * s  # (A, B, T)
            ll = -0.5 * ((sums.s2 - 2 * mu * sums.s1 + sums.n * mu**2) / sums.var).sum(-1)
            lp = ll - 0.5 * ((a - prior_mean) ** 2 + (b - prior_mean) ** 2) / prior_sd**2
            brute[i, j] = np.log(np.exp(lp - lp.max()).sum() * da) + lp.max()
    # the Bayes factor against one constant level (used by live monitoring), by the same brute force
    a1 = np.linspace(-150, 250, 4001)
    ll0 = -0.5 * ((sums.s2 - 2 * a1[:, None] * sums.s1 + sums.n * a1[:, None] ** 2) / sums.var).sum(-1)
    lp0 = ll0 - 0.5 * (a1 - prior_mean) ** 2 / prior_sd**2
    log_null = np.log(np.exp(lp0 - lp0.max()).sum() * (a1[1] - a1[0])) + lp0.max() - 0.5 * np.log(2 * np.pi * prior_sd**2)
    log_change = np.log(np.mean(np.exp(brute - brute.max()))) + brute.max() - np.log(2 * np.pi * prior_sd**2)
    assert grid_step.log_bayes_factor(grid, sums, prior_sd=prior_sd) == pytest.approx(log_change - log_null, abs=1e-4)
    brute = np.exp(brute - brute.max())
    np.testing.assert_allclose(np.exp(logp), brute / brute.sum(), atol=1e-6)
    best = np.unravel_index(np.argmax(logp), logp.shape)
    assert grid.tau[best[0]] == 50.0 and abs(levels[best][0] - 70) < 6 and abs(levels[best][1] - 30) < 6


def test_loop_recovers_tau_asks_only_existing_cells_and_keeps_its_history():
    sim = Simulator({"alignment": 180.0, "coherence": 410.0})
    ds, res = pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=480, final_fit=False, progress=False)
    assert {s for s, _, _ in sim.calls} <= set(STEPS.tolist()) and {p for _, p, _ in sim.calls} <= set(PROMPTS)
    assert sum(n for *_, n in sim.calls) == 480 == ds.attrs["adaptive_answers"]
    table = res.transition_steps()
    for op, tau in sim.taus.items():
        row = table.loc[op]
        assert row["lower"] <= tau <= row["upper"] and row["upper"] - row["lower"] < 25, (op, row)
    history = json.loads(ds.attrs["adaptive_design"])
    assert history[0]["why"].startswith("initial design") and len(history[0]["steps"]) == 5
    assert all(h["why"].startswith("largest expected") for h in history[1:])
    # the adaptive rounds concentrate near the transitions, not on the flat stretches
    later = np.concatenate([h["steps"] for h in history[1:]])
    near = np.minimum(np.abs(later - 180), np.abs(later - 410))
    assert np.mean(near <= 40) >= 0.7, later
    rounds = ds["design_round"].sel(step=history[1]["steps"]).values
    assert (rounds == 1).all() and int(ds["design_round"].sel(step=0)) == 0
    assert np.isfinite(ds["score"].values).sum() == 480 * 2  # every answer of both order parameters kept


def test_budget_is_never_exceeded_even_when_it_is_not_a_multiple_of_a_round():
    sim = Simulator({"x": 300.0})
    ds, _ = pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=283, final_fit=False, progress=False)
    used = sum(n for *_, n in sim.calls)
    assert 283 - len(PROMPTS) < used <= 283
    assert json.loads(ds.attrs["adaptive_design"])[-1]["stop"] == "budget spent"


def test_a_time_budget_stops_the_loop(monkeypatch):
    import phasebayes.adaptive as adaptive

    sim, clock = Simulator({"x": 300.0}), [0.0]

    def slow(step, prompt, n):  # each call "takes" 1 s of a fake clock
        clock[0] += 1.0
        return sim(step, prompt, n)

    monkeypatch.setattr(adaptive.time, "monotonic", lambda: clock[0])
    ds, _ = pb.evaluate_adaptively(slow, STEPS, PROMPTS, budget=2000, max_seconds=50, final_fit=False, progress=False)
    history = json.loads(ds.attrs["adaptive_design"])
    assert history[-1]["stop"] == "time budget spent (50 s)"
    assert len(sim.calls) == 30 + 12 * 2  # the first design (30 calls) and 2 rounds of 12: then 54 s > 50 s


def test_target_width_stops_early():
    sim = Simulator({"x": 333.0})
    ds, res = pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=2000, target_width=12.0, final_fit=False,
                                     progress=False)
    history = json.loads(ds.attrs["adaptive_design"])
    assert history[-1]["stop"] == "target width reached" and history[-1]["width94"]["x"] <= 12.0
    assert sum(n for *_, n in sim.calls) < 1000
    assert len(history) > 2 and history[-2]["width94"]["x"] > 12.0  # it did not stop before reaching the target


def test_no_transition_leaves_tau_uncertain():
    sim = Simulator({"x": 300.0}, levels=(50.0, 50.0))
    _, res = pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=360, final_fit=False, progress=False)
    row = res.transition_steps().loc["x"]
    assert row["upper"] - row["lower"] > 0.4 * (STEPS[-1] - STEPS[0])


def test_resumes_after_a_kill_without_asking_twice(tmp_path):
    state = tmp_path / "journal.jsonl"
    full = Simulator({"x": 250.0}, seed=3)
    ds_full, _ = pb.evaluate_adaptively(full, STEPS, PROMPTS, budget=360, final_fit=False, progress=False,
                                        state_path=tmp_path / "reference.jsonl")
    killed = Simulator({"x": 250.0}, seed=3, fail_after=40)
    with pytest.raises(KeyboardInterrupt):
        pb.evaluate_adaptively(killed, STEPS, PROMPTS, budget=360, final_fit=False, progress=False, state_path=state)
    with state.open("a") as fh:  # a kill in the middle of writing a line
        fh.write('{"round": 9, "step"')
    resumed = Simulator({"x": 250.0}, seed=3)
    resumed.rng = killed.rng  # the simulator's stream continues where the killed run stopped
    ds, _ = pb.evaluate_adaptively(resumed, STEPS, PROMPTS, budget=360, final_fit=False, progress=False,
                                   state_path=state)
    assert len(killed.calls) == 40 and len(killed.calls) + len(resumed.calls) == len(full.calls)
    assert killed.calls + resumed.calls == full.calls  # nothing asked twice, nothing skipped
    np.testing.assert_array_equal(ds["score"].values, ds_full["score"].values)
    assert len(state.read_text().splitlines()) == len(full.calls)


def test_bad_input_gets_clear_errors():
    sim = Simulator({"x": 300.0})
    with pytest.raises(ArgumentError, match="at least 3 checkpoint steps"):
        pb.evaluate_adaptively(sim, [0, 10], PROMPTS, progress=False)
    with pytest.raises(ArgumentError, match="cannot pay for the first design"):
        pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=50, progress=False)
    with pytest.raises(ArgumentError, match="exactly n scores"):
        pb.evaluate_adaptively(lambda s, p, n: {"x": np.zeros(n + 1)}, STEPS, PROMPTS, progress=False)
    with pytest.raises(ArgumentError, match="must include"):
        pb.evaluate_adaptively(sim, STEPS, PROMPTS, order_parameters=["y"], progress=False)


@pytest.mark.parametrize("prompt_tau_sd", [0.0, 20.0], ids=["prompts-together", "prompts-apart"])
def test_calibration_of_tau_under_the_adaptive_design(prompt_tau_sd):
    """94 % HDIs of the working posterior cover the true tau at the nominal rate under adaptive selection,
    when prompts share tau and when they move apart (population tau; prompt taus scatter around it)."""
    hits, widths = [], []
    for r in range(24):
        tau = float(np.random.default_rng(100 + r).uniform(120, 480))
        sim = Simulator({"x": tau}, seed=r, prompt_tau_sd=prompt_tau_sd)
        _, res = pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=288, final_fit=False, progress=False, seed=r)
        row = res.transition_steps().loc["x"]
        hits.append(row["lower"] <= tau <= row["upper"])
        widths.append(row["upper"] - row["lower"])
    # binomial(24, 0.94): P(fewer than 19 hits) = 1.4 %
    assert sum(hits) >= 19, (sum(hits), widths)
    assert np.median(widths) < (30 if prompt_tau_sd == 0 else 80)


def test_final_fit_is_the_full_change_point_model():
    sim = Simulator({"x": 300.0}, width=10.0)
    steps = np.arange(0, 600, 20)
    ds, res = pb.evaluate_adaptively(sim, steps, PROMPTS[:4], budget=192, progress=False,
                                     fit_kwargs={"fit": {"draws": 300, "tune": 400, "chains": 2}})
    assert type(res).__name__ == "ChangePointResult"
    row = res.transition_steps().loc["x"]
    assert row["lower"] <= 300 <= row["upper"] and row["upper"] - row["lower"] < 80
    assert set(ds["step"].values.tolist()) <= set(steps.tolist()) and "design_round" in ds


def test_stops_at_the_floor_that_the_prompts_spread_sets():
    """When prompts' tau differ widely, more answers cannot narrow the population tau: the loop says so and stops."""
    sim = Simulator({"x": 300.0}, prompt_tau_sd=60.0, seed=2)
    with pytest.warns(pb.DiagnosticsWarning, match="add prompts"):
        ds, _ = pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=2000, target_width=5.0, final_fit=False,
                                       progress=False)
    history = json.loads(ds.attrs["adaptive_design"])
    assert history[-1]["stop"].startswith("target width below the floor")
    assert ds.attrs["adaptive_answers"] < 2000


class PricedBatchSimulator(Simulator):
    """A sampler with ``sample_many`` (one call per round) that reports a judge cost of 1 cent per answer."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.rounds: list[list] = []
        self.cost_usd = 0.0

    def sample_many(self, requests):
        self.rounds.append(list(requests))
        out = [super(PricedBatchSimulator, self).__call__(r.step, r.prompt, r.n) for r in requests]
        self.cost_usd += 0.01 * sum(r.n for r in requests)
        return out


def test_a_batch_sampler_gets_whole_rounds_and_the_same_answers():
    """``sample_many`` receives each round at once (with the index of each request's first answer) and the
    loop's answers, design and posterior equal those of the one-call-at-a-time sampler with the same stream."""
    plain, batched = Simulator({"x": 250.0}, seed=5), PricedBatchSimulator({"x": 250.0}, seed=5)
    ds_a, res_a = pb.evaluate_adaptively(plain, STEPS, PROMPTS, budget=240, final_fit=False, progress=False)
    ds_b, res_b = pb.evaluate_adaptively(batched, STEPS, PROMPTS, budget=240, final_fit=False, progress=False)
    np.testing.assert_array_equal(ds_a["score"].values, ds_b["score"].values)
    assert len(batched.rounds) == len(res_b.history) and [len(r) for r in batched.rounds][0] == 5 * len(PROMPTS)
    seen: dict = {}
    for rnd in batched.rounds:  # first = answers of that (step, prompt) asked before
        for r in rnd:
            assert r.first == seen.get((r.step, r.prompt), 0)
            seen[(r.step, r.prompt)] = r.first + r.n


def test_judge_cost_budget_stops_before_it_is_exceeded(tmp_path):
    sim = PricedBatchSimulator({"x": 250.0}, seed=2)
    ds, res = pb.evaluate_adaptively(sim, STEPS, PROMPTS, budget=2000, max_cost_usd=2.5, final_fit=False,
                                     progress=False, state_path=tmp_path / "j.jsonl")
    assert sim.cost_usd <= 2.5 and sim.cost_usd > 2.5 - 0.01 * 2 * 4 * len(PROMPTS)  # next round would pass it
    assert "judge cost budget spent" in res.history[-1]["stop"]
    assert res.history[-1]["cost_usd"] == pytest.approx(sim.cost_usd)
    journal = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert sum(r["cost_usd"] for r in journal) == pytest.approx(sim.cost_usd)
    with pytest.raises(ArgumentError, match="reports its judge cost"):
        pb.evaluate_adaptively(Simulator({"x": 250.0}), STEPS, PROMPTS, max_cost_usd=1.0, progress=False)

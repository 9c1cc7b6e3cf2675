"""Calibration of the judge measurement model on simulated runs judged by a deliberately biased judge.

Each replicate is one ``simulate_judged_run`` (12 checkpoints 100 steps apart × 4 prompts × 8 answers,
``--ops`` independent order parameters, 60 human ratings per order parameter), fitted twice with complete
pooling: taking the judge scores as the truth ("naive") and with ``JudgeMeasurement`` ("measurement").
Judge kinds:

* ``logit``: a judge that bends the scale, ``logit g = a + b · logit h``, a ∈ [0.6, 1.2], b ∈ [1.6, 2.2];
  fitted with ``link="logit"``;
* ``linear``: a hedging judge linear on the score scale, ``g = a + b · h``, a ∈ [0.15, 0.3],
  b ∈ [0.6, 0.8]; fitted with ``link="linear"``.

Coverage of the 50/80/90/94 % HDIs of the true human-scale τ and of both levels is tabulated with
the binomial standard error at the nominal probability, plus the worst R-hat of each fit.

    python benchmarks/bench_measurement_calibration.py --reps 13 --out /tmp/meas.csv     # >= 100 transitions per kind
    python benchmarks/bench_measurement_calibration.py --table-from /tmp/meas.csv
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from phasebayes.models.changepoint import ChangePointModel
from phasebayes.models.measurement import JudgeMeasurement, simulate_judged_run
from phasebayes.storage import atomic_path

PROBS = (0.5, 0.8, 0.9, 0.94)
KINDS = {
    "logit": {"link": "logit", "judge_offset": (0.6, 1.2), "judge_slope": (1.6, 2.2)},
    "linear": {"link": "linear", "judge_offset": (0.15, 0.3), "judge_slope": (0.6, 0.8)},
}


def _rhat(res, names: list[str], op: str) -> float:
    """Worst R-hat of the named quantities of one order parameter."""
    table = res.diagnostics()
    r = [table.loc[f"{n}[{op}]", "r_hat"] for n in names if f"{n}[{op}]" in table.index]
    if res.model.measurement is not None and op in res.model.measurement.rated:
        import arviz as az

        for n in ("judge_offset", "judge_slope"):
            r.append(float(az.rhat(res.posterior[n].sel(rated_op=op).values)))
    return float(np.nanmax(r))


def one_replicate(kind: str, seed: int, n_ops: int, draws: int, **sim) -> list[dict]:
    """Simulate one run, fit the naive and the measurement model, return one row per (model, transition)."""
    spec = KINDS[kind]
    ds, ratings, truth = simulate_judged_run(n_ops=n_ops, seed=seed, **spec, **sim)
    rows = []
    for model in ("naive", "measurement"):
        meas = JudgeMeasurement(ratings, link=spec["link"]) if model == "measurement" else None
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ChangePointModel(ds, pooling="complete", measurement=meas).fit(
                draws=draws, tune=draws, chains=2, random_seed=seed, progressbar=False, warn=False)
        secs = time.perf_counter() - t0
        ts = {p: res.transition_steps(ci_prob=p) for p in PROBS}
        lv = {p: res.levels(ci_prob=p) for p in PROBS}
        for op, tr in truth.iterrows():
            row = {"kind": kind, "seed": seed, "model": model, "order_parameter": op, "tau_true": tr["tau"],
                   "tau_judge": tr["tau_judge"], "tau_median": ts[0.9].loc[op, "median"],
                   "tau_width90": ts[0.9].loc[op, "upper"] - ts[0.9].loc[op, "lower"],
                   "before_true": tr["before"], "after_true": tr["after"],
                   "before_median": lv[0.9].loc[(op, "before"), "median"], "after_median": lv[0.9].loc[(op, "after"), "median"],
                   "r_hat": _rhat(res, ["tau", "width", "before", "after"], op),
                   "divergences": res.n_divergences, "seconds": secs}
            for p in PROBS:
                t = ts[p].loc[op]
                row[f"tau{int(p * 100)}"] = bool(t["lower"] <= tr["tau"] <= t["upper"])
                for q in ("before", "after"):
                    lq = lv[p].loc[(op, q)]
                    row[f"{q}{int(p * 100)}"] = bool(lq["lower"] <= tr[q] <= lq["upper"])
            rows.append(row)
    return rows


def coverage_table(df: pd.DataFrame) -> pd.DataFrame:
    """Coverage of τ and of the levels per (judge kind, model), with counts, errors and the worst R-hat."""
    out = []
    for (kind, model), g in df.groupby(["kind", "model"], sort=False):
        row = {"kind": kind, "model": model, "transitions": len(g)}
        for p in PROBS:
            row[f"tau{int(p * 100)}"] = g[f"tau{int(p * 100)}"].mean()
        for p in PROBS:
            row[f"lev{int(p * 100)}"] = pd.concat([g[f"before{int(p * 100)}"], g[f"after{int(p * 100)}"]]).mean()
        row["tau_abs_err"] = (g["tau_median"] - g["tau_true"]).abs().mean()
        row["tau_width90"] = g["tau_width90"].mean()
        row["lev_abs_err"] = pd.concat([(g["before_median"] - g["before_true"]).abs(),
                                        (g["after_median"] - g["after_true"]).abs()]).mean()
        row["rhat_max"] = g["r_hat"].max()
        row["rhat>1.01"] = int((g["r_hat"] > 1.01).sum())
        out.append(row)
    return pd.DataFrame(out).set_index(["kind", "model"])


def print_table(df: pd.DataFrame) -> None:
    """Print the coverage table and the binomial SE of a calibrated interval at each probability."""
    table = coverage_table(df)
    pd.set_option("display.width", 200)
    print(table.round(3).to_string())
    for kind, g in df[df["model"] == "measurement"].groupby("kind"):
        n = len(g)
        se = ", ".join(f"{int(p * 100)}%: ±{np.sqrt(p * (1 - p) / n):.3f} (τ) ±{np.sqrt(p * (1 - p) / (2 * n)):.3f} (levels)"
                       for p in PROBS)
        print(f"{kind}: binomial SE of a calibrated interval over {n} transitions — {se}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=13, help="simulated runs per judge kind")
    ap.add_argument("--ops", type=int, default=8, help="transitions (order parameters) per run")
    ap.add_argument("--kinds", default="logit,linear")
    ap.add_argument("--draws", type=int, default=400, help="draws and tuning steps per chain (2 chains)")
    ap.add_argument("--seed0", type=int, default=7000)
    ap.add_argument("--out", default=None, help="CSV of per-transition rows; rewritten after every run, resumed if present")
    ap.add_argument("--table-from", nargs="*", default=None, help="only tabulate rows saved by earlier --out runs")
    args = ap.parse_args()
    if args.table_from:
        print_table(pd.concat([pd.read_csv(f) for f in args.table_from]))
        return
    done = pd.read_csv(args.out) if args.out and Path(args.out).exists() else pd.DataFrame(columns=["kind", "seed"])
    rows = done.to_dict("records")
    for kind in args.kinds.split(","):
        t0 = time.perf_counter()
        for r in range(args.reps):
            seed = args.seed0 + 1000 * list(KINDS).index(kind) + r
            if ((done["kind"] == kind) & (done["seed"] == seed)).any():
                continue
            rows.extend(one_replicate(kind, seed, args.ops, args.draws))
            if args.out:  # after every run, atomically, so an interrupted study keeps what it finished
                with atomic_path(args.out, overwrite=True) as tmp:
                    pd.DataFrame(rows).to_csv(tmp, index=False)
            print(f"{kind} seed {seed}: done ({time.perf_counter() - t0:.0f} s)", flush=True)
    print_table(pd.DataFrame(rows))


if __name__ == "__main__":
    main()

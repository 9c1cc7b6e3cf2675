"""Benchmark: the run file at study scale, previous single-group layout vs the current layout.

Synthetic runs of 10 k, 100 k and 1 M answers (steps × 20–50 prompts × 50–100 samples, one order
parameter with a transition, answer lengths log-normal with mean ≈ 425 characters and a tail of
8,000-character answers, ``logp`` filled within ±3 checkpoints of the diagonal, NaN elsewhere), each
saved twice in the same run:

- ``old``: the previous layout, everything in the root group (``xarray.Dataset.to_netcdf``), opened as
  the previous ``open_run`` did (``xarray.open_dataset(...).load()``, fixed-width strings to object);
- ``new``: :func:`phasebayes.save_run` / :func:`phasebayes.open_run` (texts in ``/texts``, lazy).

Each case runs in its own subprocess and reports wall time and peak RSS (``VmHWM``; the peak after
the imports is printed too). A watchdog kills a case whose RSS passes ``--cap-gb`` (default 6 GB) and
reports it as "> cap". Cases: ``open`` (open the run), ``fit`` (open + ChangePointModel sigmoid,
1 chain × 100 draws after 100 tuning steps), ``texts`` (open + iterate over every answer text),
``window`` (open + read one 7 × 7 checkpoint window of ``logp``).

    nice -n 10 .venv/bin/python benchmarks/bench_storage.py [--sizes 10k,100k,1M] [--cases open,fit,texts,window]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SIZES = {"10k": (20, 10, 50), "100k": (100, 20, 50), "1M": (200, 50, 100)}  # step, prompt, sample
WORDS = ("the model answer phase transition gradient of to and data ünïcode 数据 step loss a is "
         "because therefore however fine-tuning checkpoint sample prompt behaviour").split()


def build(size: str, folder: Path) -> tuple[Path, Path]:
    """Write the synthetic run of ``size`` in both layouts (once; reused on a rerun)."""
    import xarray as xr

    import phasebayes as pb
    from phasebayes.dataset import _encodable

    old, new = folder / f"run-{size}-old.nc", folder / f"run-{size}-new.nc"
    if old.exists() and new.exists():
        return old, new
    S, P, N = SIZES[size]
    rng = np.random.default_rng(0)
    steps = np.arange(S) * 10
    tau = steps[S // 2]
    mean = 20 + 60 / (1 + np.exp(-(steps - tau) / (2 * 10)))
    score = np.clip(rng.normal(mean[:, None, None], 12, size=(S, P, N)), 0, 100)[None]
    pool = " ".join(rng.choice(WORDS, size=3_000_000))
    n = S * P * N
    length = np.minimum(rng.lognormal(np.log(300), 0.8, size=n).astype(int), 8000)
    length[rng.choice(n, max(1, n // 5000), replace=False)] = 8000
    start = rng.integers(0, len(pool) - 8001, size=n)
    text = np.empty(n, dtype=object)
    text[:] = [pool[a: a + b] for a, b in zip(start, length)]
    text[rng.choice(n, max(1, n // 1000), replace=False)] = ""
    logp = np.full((S, P, N, S), np.nan)
    for i in range(S):
        for j in range(max(0, i - 3), min(S, i + 4)):
            logp[i, :, :, j] = rng.normal(-300, 50, size=(P, N))
    ds = pb.dataset.assemble_run(score, order_parameters=["behaviour"], steps=steps,
                                 prompts=[f"p{i:03d}" for i in range(P)], samples=np.arange(N))
    ds["response"] = (("step", "prompt", "sample"), text.reshape(S, P, N))
    ds["n_tokens"] = (("step", "prompt", "sample"), (length // 4).reshape(S, P, N))
    ds = ds.assign_coords(ref_step=steps)
    ds["logp"] = (("step", "prompt", "sample", "ref_step"), logp)
    print(f"[{size}] {n:,} answers, mean {length.mean():.0f} chars, max {length.max()}", flush=True)
    t = time.perf_counter()
    _encodable(ds).to_netcdf(old, engine="netcdf4")  # the previous layout: one group, vlen strings
    print(f"[{size}] old layout written in {time.perf_counter() - t:.1f} s ({old.stat().st_size / 1e6:.0f} MB)", flush=True)
    del ds, logp, text  # free the build arrays; the new file is written from the old one (streamed)
    t = time.perf_counter()
    pb.migrate_run(old, new)
    print(f"[{size}] new layout written (migrate_run) in {time.perf_counter() - t:.1f} s "
          f"({new.stat().st_size / 1e6:.0f} MB)", flush=True)
    return old, new


def _open_old(path: Path):
    """What the previous ``open_run`` did."""
    import xarray as xr

    with xr.open_dataset(path, engine="netcdf4") as handle:
        ds = handle.load()
    for name in list(ds.variables):
        if ds[name].dtype.kind == "U":
            ds[name] = ds[name].astype(object)
    return ds


def _hwm_mb() -> float:
    """Peak RSS of this process (VmHWM; unlike ru_maxrss it does not inherit the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case(kind: str, layout: str, path: str) -> dict:
    """One measurement in this process; returns timings (s) and RSS (MB)."""
    import phasebayes as pb

    base = _hwm_mb()
    t0 = time.perf_counter()
    ds = _open_old(Path(path)) if layout == "old" else pb.open_run(path)
    out = {"open_s": time.perf_counter() - t0}
    t1 = time.perf_counter()
    if kind == "fit":
        from phasebayes.models.changepoint import ChangePointModel

        res = ChangePointModel(ds, likelihood="beta", transition="sigmoid").fit(
            draws=100, tune=100, chains=1, cores=1, random_seed=0, progressbar=False, warn=False)
        out["tau_mean"] = float(res.transition_steps()["mean"].iloc[0])
    elif kind == "texts":
        chars = 0
        if layout == "old":
            for t in ds["response"].values.ravel():
                chars += len(t)
        else:
            for block in pb.iter_responses(ds):
                chars += sum(len(t) for t in block.values.ravel() if t is not None)
        out["chars"] = chars
    elif kind == "window":
        i = ds.sizes["step"] // 2
        win = ds["logp"].isel(step=slice(i - 3, i + 4), ref_step=slice(i - 3, i + 4)).values
        out["window_finite"] = int(np.isfinite(win).sum())
    out["work_s"] = time.perf_counter() - t1
    out["rss_imports_mb"] = base
    out["peak_rss_mb"] = _hwm_mb()
    return out


def run_case(kind: str, layout: str, path: Path, cap_gb: float) -> dict:
    """Run :func:`case` in a subprocess under an RSS watchdog."""
    import psutil

    cmd = [sys.executable, __file__, "--child", kind, layout, str(path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ps, peak, t0 = psutil.Process(proc.pid), 0.0, time.perf_counter()
    while proc.poll() is None:
        try:
            peak = max(peak, ps.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            break
        if peak > cap_gb * 1024:
            proc.kill()
            proc.wait()
            return {"killed": True, "peak_rss_mb": peak, "open_s": time.perf_counter() - t0}
        time.sleep(0.05)
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        errors = [ln for ln in stderr.splitlines() if "Error" in ln]
        return {"error": (errors or stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1].strip()}
    return json.loads(stdout.strip().splitlines()[-1])


def _fmt(r: dict, key: str, unit: str) -> str:
    if "error" in r:
        return "error"
    if r.get("killed"):
        return f"> cap ({r['peak_rss_mb'] / 1024:.1f} GB)" if key == "peak_rss_mb" else "killed"
    v = r[key]
    return f"{v / 1024:.2f} GB" if unit == "GB" else f"{v:.2f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10k,100k,1M")
    ap.add_argument("--cases", default="open,fit,texts,window")
    ap.add_argument("--folder", default="/tmp/phasebayes-bench-storage")
    ap.add_argument("--cap-gb", type=float, default=6.0)
    ap.add_argument("--child", nargs=3, metavar=("KIND", "LAYOUT", "PATH"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(case(*args.child)))
        return
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes.split(","):
        old, new = build(size, folder)
        for kind in args.cases.split(","):
            r_old = run_case(kind, "old", old, args.cap_gb)
            r_new = run_case(kind, "new", new, args.cap_gb)
            rows.append((size, kind, r_old, r_new))
            ok = all("error" not in r and not r.get("killed") for r in (r_old, r_new))
            ratio_rss = f"{r_old['peak_rss_mb'] / r_new['peak_rss_mb']:.1f}x" if ok else "-"
            ratio_t = f"{(r_old['open_s'] + r_old['work_s']) / (r_new['open_s'] + r_new['work_s']):.1f}x" if ok else "-"
            work = f" work old {r_old.get('work_s', float('nan')):.2f} s / new {r_new.get('work_s', float('nan')):.2f} s" if ok else ""
            print(f"{size:>5} {kind:<6} old: open {_fmt(r_old, 'open_s', 's')}, peak {_fmt(r_old, 'peak_rss_mb', 'GB')} | "
                  f"new: open {_fmt(r_new, 'open_s', 's')}, peak {_fmt(r_new, 'peak_rss_mb', 'GB')} "
                  f"(imports {r_new.get('rss_imports_mb', 0) / 1024:.2f} GB) | ratio old/new: RSS {ratio_rss}, "
                  f"time {ratio_t}{work}", flush=True)
            for r in (r_old, r_new):
                if "error" in r:
                    print(f"      error: {r['error']}", flush=True)
    print(json.dumps([{"size": s, "case": k, "old": o, "new": n} for s, k, o, n in rows]))


if __name__ == "__main__":
    main()

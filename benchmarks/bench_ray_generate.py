"""Benchmark: the generate stage (sampling + cross-checkpoint log-probs) serial vs on 1 and 2 local Ray workers.

Settings: the ``quick`` preset (SmolLM2-135M-Instruct, 5 LoRA checkpoints, 8 prompts x 3 samples x <= 32
tokens, logp window ±1), each worker with 1 torch thread, a local ``ray.init()``. The baseline is the
serial :func:`phasebayes.llm.generate` in this process (also 1 thread). Prints the wall time of each run
(Ray start-up and worker model loading included, as a user sees it), the ratios, and checks that all three
runs wrote identical samples and log-probabilities.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_ray_generate.py [--checkpoints DIR] [--workers 2]

``--checkpoints`` reuses a finished quick-preset training run (else one is trained first, ~1-2 min).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoints", type=Path, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--train-steps", type=int, default=16, help="steps of the training run made first (5 checkpoints)")
    args = ap.parse_args()
    import ray
    import torch

    from phasebayes.llm import generate, preset, train
    from phasebayes.llm.scale import ScaleConfig

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tcfg, gcfg, prompts = preset("quick", Path(tmp))
        gcfg.show_progress, gcfg.num_threads = False, 1
        ckpt = args.checkpoints
        if ckpt is None:
            tcfg.show_progress, tcfg.max_steps, tcfg.save_every = False, args.train_steps, max(1, args.train_steps // 4)
            ckpt = train(tcfg).output_dir
        runs = {}
        t = time.perf_counter()
        runs["serial"] = generate(ckpt, prompts, Path(tmp) / "serial", gcfg)
        times = {"serial": time.perf_counter() - t}
        for w in sorted({1, args.workers}):
            t = time.perf_counter()
            ray.init(num_cpus=w, include_dashboard=False, log_to_driver=False)
            runs[f"ray{w}"] = generate(ckpt, prompts, Path(tmp) / f"ray{w}", gcfg, scale=ScaleConfig(workers=w))
            ray.shutdown()
            times[f"ray{w}"] = time.perf_counter() - t
    ref = runs["serial"]
    for name, ds in runs.items():
        same = np.array_equal(ds["token_ids"].values, ref["token_ids"].values) and np.array_equal(
            ds["logp"].values, ref["logp"].values, equal_nan=True)
        print(f"{name:7s} {times[name]:7.1f} s   identical to serial: {same}")
    w = args.workers
    print(f"ratio ray1 / serial (wall time): {times['ray1'] / times['serial']:.2f}")
    if w > 1:
        print(f"speed-up ray{w} vs ray1: {times['ray1'] / times[f'ray{w}']:.2f}")
    n_seq = ref.sizes["step"] * ref.sizes["prompt"] * ref.sizes["sample"]
    print(f"{ref.sizes['step']} checkpoints x {ref.sizes['prompt']} prompts x {ref.sizes['sample']} samples = {n_seq} "
          f"samples, {int(ref['n_tokens'].sum())} tokens, {int(ref['logp'].notnull().sum())} scored sequences")


if __name__ == "__main__":
    main()

"""Benchmark: the cost of prefix log-probabilities (``logp_prefix``) in the logp stage, in one run.

Baseline: the logp stage with ``logp_prefix_tokens=()`` (the sequence log-probabilities only, as before
prefixes existed). Measured: the same stage with prefix lengths (default 8, 16, 32). Both rerun
:func:`phasebayes.llm.generate` on the same samples after deleting the logp shards (sampling is skipped:
its shards are kept), so each timing is the teacher-forced scoring of every sample under its 2K + 1
neighbouring checkpoints, writing the shards and consolidating ``run.nc``. Runs alternate between the two
settings; medians of wall time and of process CPU time (less disturbed by other processes on a
shared machine) are reported. Goal: ratio ~1.0 (the prefixes are a cumulative sum of per-token
log-probabilities the stage computes anyway).

Model: the tiny in-process test model (:func:`phasebayes.llm.testing.build_tiny_model`), 4 full-weight
checkpoints; on a shared CPU timings are noisy, compare the ratio.

Usage: ``python benchmarks/bench_logp_prefix.py [--threads 1] [--reps 3] [--hidden 64] [--tokens 48]``
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per setting")
    ap.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny model")
    ap.add_argument("--tokens", type=int, default=48, help="max_new_tokens")
    ap.add_argument("--samples", type=int, default=8, help="samples per prompt and checkpoint")
    ap.add_argument("--prefixes", type=int, nargs="+", default=[8, 16, 32], help="prefix lengths")
    args = ap.parse_args()

    import numpy as np
    import torch

    from phasebayes.llm.logprob import prefix_logprobs
    from phasebayes.llm.sampling import GenerateConfig, generate
    from phasebayes.llm.testing import build_tiny_model

    torch.set_num_threads(args.threads)
    prompts = [{"id": f"p{i}", "text": t} for i, t in enumerate(
        ["what is the capital of france", "how do i cook rice", "is it ok to lie sometimes", "tell me about the weather"])]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for step in range(4):
            build_tiny_model(root / "ckpts" / f"checkpoint-{step}", seed=step, hidden_size=args.hidden)

        def cfg(prefixes) -> GenerateConfig:
            return GenerateConfig(n_samples=args.samples, max_new_tokens=args.tokens, batch_size=32, logp_window=1,
                                  logp_prefix_tokens=tuple(prefixes), show_progress=False)

        ds = generate(root / "ckpts", prompts, root / "gen", cfg(args.prefixes))
        n_tok = int((ds["token_ids"].values >= 0).sum())
        n_scored = int(np.isfinite(ds["logp"].values).sum())
        print(f"tiny Llama (hidden {args.hidden}, 2 layers), {args.threads} thread(s); 4 checkpoints x {len(prompts)} prompts "
              f"x {args.samples} samples, {n_tok} generated tokens, {n_scored} (sample, checkpoint) scores, window K=1")
        times: dict[str, list[float]] = {"baseline (no prefixes)": [], f"prefixes {args.prefixes}": []}
        cpu: dict[str, list[float]] = {k: [] for k in times}
        settings = [((), "baseline (no prefixes)"), (args.prefixes, f"prefixes {args.prefixes}")]
        for _ in range(args.reps):
            for prefixes, label in settings:
                shutil.rmtree(root / "gen" / "logp")
                (root / "gen" / "run.nc").unlink()
                t0, c0 = time.perf_counter(), time.process_time()
                generate(root / "ckpts", prompts, root / "gen", cfg(prefixes))
                times[label].append(time.perf_counter() - t0)
                cpu[label].append(time.process_time() - c0)
        for kind, table in (("wall", times), ("CPU ", cpu)):
            med = {k: statistics.median(v) for k, v in table.items()}
            base = med["baseline (no prefixes)"]
            for label, t in med.items():
                print(f"  logp stage {kind}, {label:<24} median {t:7.3f} s  ratio {t / base:5.3f}  "
                      f"(runs: {', '.join(f'{x:.2f}' for x in table[label])})")
        base = statistics.median(cpu["baseline (no prefixes)"])
        # the prefix arithmetic alone, on per-token arrays of the same lengths
        rng = np.random.default_rng(0)
        lengths = (ds["token_ids"].values >= 0).sum(-1).ravel()
        per_token = [rng.normal(-2, 1, int(n)) for n in lengths] * 3  # each sample is scored ~3 times (K = 1)
        t0 = time.perf_counter()
        prefix_logprobs(per_token, args.prefixes)
        t_cum = time.perf_counter() - t0
        print(f"  cumulative sums alone for {len(per_token)} sequences: {t_cum * 1e3:.2f} ms "
              f"({t_cum / base * 100:.2f}% of the baseline stage's CPU time)")


if __name__ == "__main__":
    main()

"""Benchmark the LLM stage on SmolLM2-135M-Instruct (the embedded default), in one run.

Measures
1. checkpoint switching: adapter hot-swap on one loaded model vs reloading base model + adapter from
   disk per checkpoint (target: hot-swap >= 5x faster);
2. generation: batched vs one-at-a-time sampling, in useful (non-padding) tokens per second
   (target: batched >= 3x);
3. log-probability scoring (teacher forcing) throughput in tokens and sequences per second.

The adapters are random rank-8 LoRA adapters on all linear layers (no training needed). Timings on a
shared machine are noisy: other processes compete for the same cores; compare ratios, not absolutes.
Under contention use ``--threads 1``: a 2-thread torch process sharing 2 cores with other busy processes
can slow down by an order of magnitude (threads wait for each other at every parallel region).

Usage: ``python benchmarks/bench_llm.py [--threads 2] [--quick]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions and shorter generations")
    ap.add_argument("--gen-batch", type=int, default=0, help="batched generation size (default: all samples at once)")
    args = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    from phasebayes.llm.base_model import ensure_default_model, load_base_model
    from phasebayes.llm.chat_data import prompt_token_ids, read_prompts
    from phasebayes.llm.checkpoints import CheckpointSwitcher, find_checkpoints
    from phasebayes.llm.sampling import GenerateConfig, _clean_generation_config, _sample_checkpoint
    from phasebayes.llm.logprob import sequence_logprobs

    torch.set_num_threads(args.threads)
    base_path = ensure_default_model()
    repo = Path(__file__).resolve().parents[1]
    prompts = read_prompts(repo / "data" / "prompts" / "eval.jsonl")
    n_ckpt = 4
    print(f"SmolLM2-135M-Instruct, {args.threads} threads, device cpu (shared machine: timings are noisy)")

    with tempfile.TemporaryDirectory() as tmp:
        # --- random adapters standing in for a checkpoint trajectory
        t0 = time.perf_counter()
        model, tok = load_base_model(base_path)
        t_load_base = time.perf_counter() - t0
        torch.manual_seed(0)
        peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
        for s in range(1, n_ckpt + 1):
            with torch.no_grad():
                for name, p in peft.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.02)
            peft.save_pretrained(f"{tmp}/checkpoint-{s * 10}")
        del peft, model
        ckpts = [c for c in find_checkpoints(tmp) if c.step > 0]

        # --- 1. switching
        model, tok = load_base_model(base_path)
        eos = _clean_generation_config(model, tok)
        switcher = CheckpointSwitcher(model, ckpts, cache_size=0)  # read each adapter from disk on every switch
        order = [c.step for c in ckpts] * (1 if args.quick else 3)
        switcher.activate(order[-1])
        t0 = time.perf_counter()
        for s in order:
            switcher.activate(s)
        t_swap = (time.perf_counter() - t0) / len(order)
        cached = CheckpointSwitcher(load_base_model(base_path)[0], ckpts)  # adapters kept in memory after first use
        for s in order[:n_ckpt]:
            cached.activate(s)
        t0 = time.perf_counter()
        for s in order:
            cached.activate(s)
        t_swap_mem = (time.perf_counter() - t0) / len(order)
        del cached
        from peft import PeftModel

        reload_steps = order[: n_ckpt if args.quick else 2 * n_ckpt]
        t0 = time.perf_counter()
        for s in reload_steps:
            m, _ = load_base_model(base_path)
            m = PeftModel.from_pretrained(m, str(Path(tmp) / f"checkpoint-{s}")).eval()
            del m
        t_reload = (time.perf_counter() - t0) / len(reload_steps)
        print("\n[1] checkpoint switching")
        print(f"  base model load                 {t_load_base:7.2f} s")
        print(f"  reload base + adapter per ckpt  {t_reload:7.3f} s / switch")
        print(f"  adapter hot-swap (from disk)    {t_swap:7.3f} s / switch   speed-up {t_reload / t_swap:6.1f} x (target >= 5x)")
        print(f"  adapter hot-swap (in memory)    {t_swap_mem:7.3f} s / switch   speed-up {t_reload / t_swap_mem:6.1f} x")

        # --- 2. batched vs one-at-a-time generation
        m = switcher.activate(ckpts[0].step)
        n_prompts, n_samples = (4, 2) if args.quick else (4, 4)
        max_new = 32 if args.quick else 48
        p_ids = [prompt_token_ids(tok, p["text"]) for p in prompts[:n_prompts]]

        class _Bar:
            def update(self, n: int) -> None:  # minimal progress sink
                pass

        rates = {}
        for bs in (1, args.gen_batch or n_prompts * n_samples):
            # one-at-a-time on a quarter of the work (it is slow); batched on all of it
            ids_here = p_ids[: max(1, n_prompts // 4)] if bs == 1 else p_ids
            cfg = GenerateConfig(n_samples=n_samples, max_new_tokens=max_new, batch_size=bs, show_progress=False)
            t0 = time.perf_counter()
            rec = _sample_checkpoint(m, tok, ids_here, cfg, 0, eos, _Bar())
            dt = time.perf_counter() - t0
            ntok = sum(len(t) for row in rec["token_ids"] for t in row)
            rates[bs] = (ntok / dt, ntok, dt)
        print("\n[2] generation (useful tokens / s; sampling at T=1)")
        for bs, (r, ntok, dt) in rates.items():
            print(f"  batch {bs:3d}: {ntok:5d} tokens in {dt:6.1f} s = {r:7.1f} tok/s")
        big = max(rates)
        print(f"  speed-up                        {rates[big][0] / rates[1][0]:7.1f} x   (target >= 3x)")

        # --- 3. logp scoring throughput
        prompts_flat = [p_ids[p] for p in range(n_prompts) for _ in range(n_samples)]
        resp_flat = [t for row in rec["token_ids"] for t in row]
        reps = 1 if args.quick else 3
        t0 = time.perf_counter()
        for _ in range(reps):
            sequence_logprobs(m, prompts_flat, resp_flat, pad_token_id=tok.pad_token_id, batch_size=16)
        dt = (time.perf_counter() - t0) / reps
        resp_tok = sum(len(r) for r in resp_flat)
        all_tok = resp_tok + sum(len(p) for p in prompts_flat)
        print("\n[3] logp scoring (teacher forcing, batch 16)")
        print(f"  {len(resp_flat)} sequences, {resp_tok} response tokens ({all_tok} incl. prompts) in {dt:.2f} s")
        print(f"  {len(resp_flat) / dt:7.1f} sequences/s, {resp_tok / dt:7.1f} response tok/s, {all_tok / dt:7.1f} tok/s")


if __name__ == "__main__":
    main()

"""Benchmark: the TRL training path (``phasebayes.llm.train``) vs a hand-written PyTorch LoRA loop (run by hand).

Settings: the ``demo`` preset (SmolLM2-135M-Instruct, LoRA r=8 on all linear layers, batch 4, lr 1e-3,
24 steps, a checkpoint every 3 steps) on the project's narrow set, 1 torch thread. The baseline is the
loop a careful user would write (and that phasebayes used before it moved to TRL): the same tokenised
examples and assistant-token mask, AdamW, a constant LR, clipping at 1.0 with the pre-clipping norm
logged, adapter + optimiser/scheduler/RNG state saved at the same steps. Prints steps/s of each (training
steps only; and the whole call: loading, steps, checkpoints, as wall and as CPU time, the latter robust
when other jobs share the cores), the ratios TRL / loop, and both loss
curves with the mean loss over the first and the last 6 steps (the data order differs — the loop uses
its own seeded permutation, TRL the trainer's seeded sampler — so the curves agree only up to the noise
of which examples fall in which step).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_train.py [--steps 24] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def hand_loop(tcfg, out: Path) -> tuple[list[float], float, float]:
    """The baseline: a plain PyTorch LoRA loop; returns (loss per step, seconds of the optimiser steps alone,
    seconds of the whole call: model loading, tokenising, steps and checkpoint saving)."""
    t_call = time.perf_counter()
    cpu_call = time.process_time()
    import torch
    from peft import LoraConfig, get_peft_model

    from phasebayes.llm.base_model import load_base_model
    from phasebayes.llm.chat_data import read_chat_jsonl, tokenize_dataset

    torch.manual_seed(tcfg.seed)
    model, tok = load_base_model(tcfg.base_model, device="cpu")
    ex = tokenize_dataset(tok, read_chat_jsonl(tcfg.data), max_length=tcfg.max_length)
    torch.manual_seed(tcfg.seed)
    model = get_peft_model(model, LoraConfig(r=tcfg.lora_rank, lora_alpha=tcfg.lora_alpha, lora_dropout=0.0,
                                             target_modules="all-linear", bias="none", task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=tcfg.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0)
    per_epoch = int(np.ceil(len(ex) / tcfg.batch_size))
    losses = []
    model.train()
    step_s = 0.0
    for step in range(1, tcfg.max_steps + 1):
        epoch, pos = divmod(step - 1, per_epoch)
        order = np.random.default_rng([tcfg.seed, epoch]).permutation(len(ex))
        batch = [ex[i] for i in order[pos * tcfg.batch_size : (pos + 1) * tcfg.batch_size]]
        width = max(len(e.input_ids) for e in batch)
        ids = torch.full((len(batch), width), tok.pad_token_id)
        att = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, e in enumerate(batch):
            ids[i, : len(e.input_ids)] = torch.tensor(e.input_ids)
            att[i, : len(e.input_ids)] = 1
            mask[i, : len(e.input_ids)] = torch.tensor(e.loss_mask, dtype=torch.bool)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
        m = mask[:, 1:]
        loss = torch.nn.functional.cross_entropy(logits[m], ids[:, 1:][m])
        loss.backward()
        float(torch.nn.utils.clip_grad_norm_(params, 1.0))
        opt.step()
        sched.step()
        losses.append(float(loss))
        step_s += time.perf_counter() - t0
        if step % tcfg.save_every == 0 or step == tcfg.max_steps:
            d = out / f"checkpoint-{step}"
            model.save_pretrained(str(d))
            torch.save({"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": torch.get_rng_state()},
                       d / "training_state.pt")
    hand_loop.cpu_s = time.process_time() - cpu_call
    return losses, step_s, time.perf_counter() - t_call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    from phasebayes.llm import preset, read_training_log, train

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tcfg, _, _ = preset("demo", Path(tmp) / "trl")
        tcfg.max_steps, tcfg.show_progress = args.steps, False
        loop_losses, loop_s, loop_call = hand_loop(tcfg, Path(tmp) / "loop")
        cpu0 = time.process_time()
        res = train(tcfg)
        trl_cpu = time.process_time() - cpu0
        log = read_training_log(tcfg.output_dir)
        trl_s = float(log["seconds"].sum())  # the trainer's optimiser steps (callback timing)
        trl_losses = list(log["loss"])
    n = args.steps
    print(json.dumps({"steps": n, "threads": args.threads,
                      "loop_steps_per_s": round(n / loop_s, 3), "trl_steps_per_s": round(n / trl_s, 3),
                      "loop_call_s": round(loop_call, 1), "trl_call_s": round(res.seconds, 1),
                      "loop_call_cpu_s": round(hand_loop.cpu_s, 1), "trl_call_cpu_s": round(trl_cpu, 1)}, indent=1))
    print(f"ratio TRL / hand loop, steps/s of the optimiser steps: {loop_s / trl_s:.2f}")
    print(f"ratio TRL / hand loop, whole call (load + steps + checkpoints): {loop_call / res.seconds:.2f}")
    print(f"ratio TRL / hand loop, CPU time of the whole call (robust on a loaded machine): {hand_loop.cpu_s / trl_cpu:.2f}")
    k = min(6, n // 2)
    print(f"loss first {k} steps: loop {np.mean(loop_losses[:k]):.3f}  TRL {np.mean(trl_losses[:k]):.3f}")
    print(f"loss last {k} steps:  loop {np.mean(loop_losses[-k:]):.3f}  TRL {np.mean(trl_losses[-k:]):.3f}")
    print("loop:", " ".join(f"{x:.2f}" for x in loop_losses))
    print("TRL: ", " ".join(f"{x:.2f}" for x in trl_losses))


if __name__ == "__main__":
    main()

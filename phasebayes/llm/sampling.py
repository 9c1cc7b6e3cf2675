"""Sample responses at every checkpoint and score them under neighbouring checkpoints (the ``logp`` array).

:func:`generate` runs two passes over the checkpoint grid with one base model in memory and adapters
hot-swapped (:class:`~phasebayes.llm.checkpoints.CheckpointSwitcher`):

1. **sampling** — for each checkpoint, ``n_samples`` responses per prompt (chat template applied,
   temperature ``T``, top-p 1, no top-k), batched; the token ids, text, token count and stop reason
   (``"eos"`` / ``"length"``) of each are written to ``samples/step-{step}.json``;
2. **scoring** — for each reference checkpoint, the teacher-forced log-probability of every sample of
   the checkpoints within ±``logp_window`` grid positions, written to ``logp/ref-{step}.npz``.

Every shard is written atomically, so a crash loses at most the checkpoint in flight and a rerun with
the same arguments resumes. The shards are then consolidated into the run dataset (``docs/storage.md``),
``run.nc`` in the output folder, which is also returned.
Settings: :mod:`.generate_config`; inputs and the resume fingerprint: :mod:`.generate_inputs`; the
shard layout and consolidation: :mod:`.consolidate`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from ..errors import ConfigError
from ..storage import atomic_path, atomic_write_text
from .checkpoints import BASE_KIND, Checkpoint, CheckpointSwitcher, find_checkpoints
from .consolidate import _MANIFEST, RUN_FILE, STOP_REASONS, _logp_path, _sample_path, consolidate
from .generate_config import _RESUME_FREE, GenerateConfig
from .generate_inputs import _as_prompts, _base_model_spec, _fingerprint
from .prefix_logp import prefix_lengths, prefix_shard_arrays, shard_lacks_prefixes

__all__ = ["GenerateConfig", "generate", "consolidate", "RUN_FILE", "STOP_REASONS"]


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0])


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _sample_checkpoint(
    model: Any,
    tokenizer: Any,
    prompt_ids: list[list[int]],
    cfg: GenerateConfig,
    step: int,
    eos_ids: list[int],
    bar: Any,
) -> dict[str, Any]:
    """Draw ``n_samples`` responses per prompt from the active checkpoint; return the shard record."""
    import torch
    from transformers import GenerationConfig

    pad = int(tokenizer.pad_token_id)
    gen_cfg = GenerationConfig(
        do_sample=True,
        temperature=float(cfg.temperature),
        top_p=1.0,
        top_k=0,
        min_p=None,
        repetition_penalty=1.0,
        num_beams=1,
        max_new_tokens=int(cfg.max_new_tokens),
        eos_token_id=eos_ids,
        pad_token_id=pad,
    )
    rows = [(p, n) for p in range(len(prompt_ids)) for n in range(cfg.n_samples)]
    P, N = len(prompt_ids), cfg.n_samples
    token_ids: list[list[list[int]]] = [[[] for _ in range(N)] for _ in range(P)]
    stop = [["" for _ in range(N)] for _ in range(P)]
    torch.manual_seed(_step_seed(cfg.seed, step))
    device = next(model.parameters()).device
    eos_set = set(eos_ids)
    for start in range(0, len(rows), cfg.batch_size):
        chunk = rows[start : start + cfg.batch_size]
        width = max(len(prompt_ids[p]) for p, _ in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        att = torch.zeros((len(chunk), width), dtype=torch.long)
        for r, (p, _) in enumerate(chunk):
            seq = prompt_ids[p]
            ids[r, width - len(seq) :] = torch.tensor(seq)
            att[r, width - len(seq) :] = 1
        with torch.inference_mode():
            out = model.generate(input_ids=ids.to(device), attention_mask=att.to(device), generation_config=gen_cfg)
        new = out[:, width:].cpu().tolist()
        for r, (p, n) in enumerate(chunk):
            seq = new[r]
            cut = next((j for j, t in enumerate(seq) if t in eos_set), None)
            if cut is None:
                token_ids[p][n] = seq[: cfg.max_new_tokens]
                stop[p][n] = "length"
            else:
                token_ids[p][n] = seq[: cut + 1]
                stop[p][n] = "eos"
        bar.update(len(chunk))
    texts, n_tokens = [], []
    for p in range(P):
        texts.append([])
        n_tokens.append([])
        for n in range(N):
            ids_pn = token_ids[p][n]
            content = ids_pn[:-1] if stop[p][n] == "eos" else ids_pn
            texts[p].append(tokenizer.decode(content, skip_special_tokens=True))
            n_tokens[p].append(len(content))
    return {"step": int(step), "token_ids": token_ids, "text": texts, "stop_reason": stop, "n_tokens": n_tokens}


def _clean_generation_config(model: Any, tokenizer: Any) -> list[int]:
    """Replace the model's generation defaults by neutral ones; return the EOS token ids."""
    from transformers import GenerationConfig

    eos: list[int] = []
    gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for e in ([gc_eos] if isinstance(gc_eos, int) else list(gc_eos or [])) + [tokenizer.eos_token_id]:
        if e is not None and int(e) not in eos:
            eos.append(int(e))
    if not eos:
        raise ConfigError("the model has no EOS token id; generation could not stop.")
    model.generation_config = GenerationConfig(
        eos_token_id=eos, pad_token_id=int(tokenizer.pad_token_id), bos_token_id=getattr(tokenizer, "bos_token_id", None)
    )
    return eos



class _NoBar:
    def update(self, n: int) -> None:
        pass


class ShardWorker:
    """One loaded base model that writes the sample and logp shards of given checkpoints into ``output_dir``.

    The serial :func:`generate` uses one; with a ``[scale]`` section every Ray actor owns one
    (:mod:`phasebayes.llm.scale`). A shard depends only on the settings and its checkpoint step (seeds
    are per step), so which worker writes it does not change it.
    """

    def __init__(self, base_path: str, checkpoints: list[Checkpoint], prompts: list[dict[str, str]],
                 config: GenerateConfig, output_dir: str | os.PathLike) -> None:
        from .base_model import load_base_model
        from .chat_data import prompt_token_ids

        self.cfg, self.prompts, self.out = config, prompts, Path(output_dir)
        self.steps = [c.step for c in checkpoints]
        self.model, self.tokenizer = load_base_model(base_path, dtype=config.dtype, device=config.device)
        self.eos_ids = _clean_generation_config(self.model, self.tokenizer)
        self.switcher = CheckpointSwitcher(self.model, checkpoints)
        self.p_ids = [prompt_token_ids(self.tokenizer, p["text"], system_prompt=config.system_prompt) for p in prompts]
        self._shards: dict[int, dict[str, Any]] = {}

    def window(self, step: int) -> list[int]:
        """The checkpoint steps whose samples are scored under ``step`` (±K grid positions)."""
        K = len(self.steps) if self.cfg.logp_window is None else int(self.cfg.logp_window)
        r = self.steps.index(step)
        return self.steps[max(0, r - K) : r + K + 1]

    def n_scored(self, step: int) -> int:
        """Sequences scored for reference checkpoint ``step``."""
        return len(self.window(step)) * len(self.prompts) * self.cfg.n_samples

    def sample(self, step: int, bar: Any = None) -> int:
        """Sample checkpoint ``step`` and write its shard atomically; returns the number of samples."""
        t0 = time.perf_counter()
        m = self.switcher.activate(step)
        rec = _sample_checkpoint(m, self.tokenizer, self.p_ids, self.cfg, step, self.eos_ids, bar or _NoBar())
        rec["prompts"] = [p["id"] for p in self.prompts]
        rec["eos_token_ids"] = self.eos_ids
        rec["seconds"] = time.perf_counter() - t0
        atomic_write_text(_sample_path(self.out, step), json.dumps(rec), overwrite=True)
        return len(self.prompts) * self.cfg.n_samples

    def score(self, step: int) -> int:
        """Score the samples of the window around ``step`` under checkpoint ``step``; write its logp shard."""
        from .logprob import token_logprobs

        window = self.window(step)
        for w in window:
            if w not in self._shards:
                self._shards[w] = json.loads(_sample_path(self.out, w).read_text())
        m = self.switcher.activate(step)
        prompts_flat, resp_flat = [], []
        for w in window:
            for p in range(len(self.prompts)):
                for n in range(self.cfg.n_samples):
                    prompts_flat.append(self.p_ids[p])
                    resp_flat.append(self._shards[w]["token_ids"][p][n])
        per_token = token_logprobs(
            m,
            prompts_flat,
            resp_flat,
            temperature=self.cfg.temperature,
            pad_token_id=int(self.tokenizer.pad_token_id),
            batch_size=self.cfg.logp_batch_size,
            max_batch_tokens=self.cfg.max_batch_tokens,
        )
        lp = np.array([float(t.sum()) for t in per_token], dtype=np.float64)  # = sequence_logprobs
        shape = (len(window), len(self.prompts), self.cfg.n_samples)
        prefixes = prefix_lengths(self.cfg.logp_prefix_tokens, self.cfg.logp)
        _save_npz(_logp_path(self.out, step), steps=np.array(window, dtype=np.int64), logp=lp.reshape(shape),
                  **prefix_shard_arrays(per_token, prefixes, shape))
        return len(resp_flat)


def generate(
    checkpoints: str | os.PathLike | Sequence[Checkpoint],
    prompts: str | os.PathLike | Sequence[dict[str, str]],
    output_dir: str | os.PathLike,
    config: GenerateConfig | None = None,
    *,
    base_model: str | os.PathLike | None = None,
    steps: Sequence[int] | None = None,
    training_log: pd.DataFrame | str | os.PathLike | None = None,
    overwrite: bool = False,
    scale: Any = None,
) -> xr.Dataset:
    """Sample every checkpoint, score the samples under neighbouring checkpoints, build the run dataset.

    Parameters
    ----------
    checkpoints
        A folder of checkpoints named by step (``checkpoint-100``, ``step_100``, ...; see
        :func:`~phasebayes.llm.checkpoints.find_checkpoints`) — ours or anyone's — or a list of them.
    prompts
        A prompt-set JSONL file (``id``, ``text``) or a list of ``{"id", "text"}`` dicts.
    output_dir
        Folder for the shards and the consolidated ``run.nc`` (see module doc).
    config
        :class:`GenerateConfig` (defaults if None).
    base_model
        Base model spec (local folder or the embedded default's name); default: the adapters'
        ``base_model_name_or_path``, else the embedded SmolLM2-135M-Instruct.
    steps
        Use only these checkpoint steps (default: all found).
    training_log
        A training-log table, a ``train_log.jsonl`` path, or None to use ``train_log.jsonl`` from the
        checkpoint folder when present; it becomes the ``train_step`` variables.
    overwrite
        Discard existing shards made with different settings instead of raising :class:`ConfigError`.
    scale
        A :class:`~phasebayes.llm.scale.ScaleConfig` to spread the shards over Ray actors (each owning
        one model); ``None`` (default) runs everything in this process. Same shards either way.

    Returns
    -------
    The run dataset (also saved as ``output_dir/run.nc``) with variables ``response``, ``n_tokens``,
    ``stop_reason``, ``token_ids`` (padded with -1 along ``token``), ``logp``, ``logp_prefix`` (prefix
    lengths ``config.logp_prefix_tokens`` along ``prefix_tokens``; see :mod:`.prefix_logp`) and the training log.

    Cost (SmolLM2-135M on a shared 2-core CPU, 1 thread): sampling ≈ 14 tokens/s one at a time and
    ≈ 85 tokens/s in batches of 16; scoring ≈ 300 response tokens/s per reference checkpoint, and each
    sample is scored under up to 2K + 1 checkpoints.
    """
    import torch
    from tqdm.auto import tqdm

    cfg = config or GenerateConfig()
    cfg.validate()
    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    ckpt_dir: Path | None = None
    if isinstance(checkpoints, (str, os.PathLike)):
        ckpt_dir = Path(checkpoints)
        ckpts = find_checkpoints(ckpt_dir, include_base=cfg.include_base)
    else:
        ckpts = sorted(checkpoints, key=lambda c: c.step)
    if steps is not None:
        wanted = {int(s) for s in steps}
        missing = wanted - {c.step for c in ckpts}
        if missing:
            raise ConfigError(f"no checkpoint for step(s) {sorted(missing)}; available: {[c.step for c in ckpts]}.")
        ckpts = [c for c in ckpts if c.step in wanted]
    if len(ckpts) < 3:
        raise ConfigError(f"need at least 3 checkpoints to locate a transition, found {[c.step for c in ckpts]}.")
    prompt_list = _as_prompts(prompts)

    from .base_model import load_tokenizer, resolve_model_path

    spec = _base_model_spec(ckpts, base_model, ckpt_dir)

    base_path = str(resolve_model_path(spec))

    out = Path(output_dir)
    fp = _fingerprint(cfg, ckpts, prompt_list, base_path)
    man = out / _MANIFEST
    if man.exists():
        old = json.loads(man.read_text())
        if old != json.loads(json.dumps(fp, default=str)):
            if not overwrite:
                raise ConfigError(
                    f"{out} holds samples made with different settings (checkpoints, prompts, base model or config); "
                    "use another output_dir or overwrite=True to discard them."
                )
            for sub in ("samples", "logp"):
                shutil.rmtree(out / sub, ignore_errors=True)
            (out / RUN_FILE).unlink(missing_ok=True)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    (out / "logp").mkdir(parents=True, exist_ok=True)
    atomic_write_text(man, json.dumps(fp, indent=1, default=str), overwrite=True)

    step_list = [c.step for c in ckpts]
    todo_gen = [s for s in step_list if not _sample_path(out, s).exists()]
    prefixes = prefix_lengths(cfg.logp_prefix_tokens, cfg.logp)
    todo_logp = [s for s in step_list
                 if cfg.logp and (not _logp_path(out, s).exists() or shard_lacks_prefixes(_logp_path(out, s), prefixes))]

    tokenizer = None
    if todo_gen or todo_logp:
        if scale is not None:
            from .scale import run_on_ray

            run_on_ray(dict(base_path=base_path, checkpoints=ckpts, prompts=prompt_list, config=cfg, output_dir=out),
                       todo_gen, todo_logp, scale)
        else:
            worker = ShardWorker(base_path, ckpts, prompt_list, cfg, out)
            tokenizer = worker.tokenizer
            if todo_gen:  # pass 1: sampling, one shard per checkpoint
                bar = tqdm(total=len(todo_gen) * len(prompt_list) * cfg.n_samples, desc="generate", unit="sample",
                           disable=not cfg.show_progress)
                for s in todo_gen:
                    worker.sample(s, bar)
                bar.close()
            if todo_logp:  # pass 2: cross-checkpoint log-probabilities, one shard per reference checkpoint
                bar = tqdm(total=sum(worker.n_scored(s) for s in todo_logp), desc="logp", unit="seq",
                           disable=not cfg.show_progress)
                for s in todo_logp:
                    bar.update(worker.score(s))
                bar.close()

    log = training_log
    if log is None and ckpt_dir is not None and (ckpt_dir / "train_log.jsonl").exists():
        log = ckpt_dir / "train_log.jsonl"
    if log is None and ckpt_dir is not None:  # transformers / TRL runs: trainer_state.json, TensorBoard events
        from ..readers.trainer_state import find_trainer_states

        if find_trainer_states(ckpt_dir) or any(ckpt_dir.rglob("events.out.tfevents.*")):
            log = ckpt_dir
    attrs = {
        "base_model": base_path,
        "checkpoint_dir": str(ckpt_dir) if ckpt_dir else "",
        "checkpoint_kind": next((c.kind for c in ckpts if c.kind != BASE_KIND), BASE_KIND),
        "adapter_config": next((c.adapter_config for c in ckpts if c.kind == "lora"), None),
        "generation": {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _RESUME_FREE},
        "seed": int(cfg.seed),
        "temperature": float(cfg.temperature),
    }
    if ckpt_dir is not None and (ckpt_dir / "train_config.json").exists():
        attrs["train_config"] = json.loads((ckpt_dir / "train_config.json").read_text())
    if tokenizer is None:
        tokenizer = load_tokenizer(base_path)
    attrs["chat_template_sha256"] = hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest()
    return consolidate(out, training_log=log, attrs=attrs, prefix_tokens=prefixes)


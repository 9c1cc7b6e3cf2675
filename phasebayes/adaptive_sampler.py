"""The real pipeline as an adaptive-evaluation sampler: generate answers at saved checkpoints, judge them.

:class:`CheckpointSampler` is the ``sample(step, prompt, n)`` of :func:`phasebayes.evaluate_adaptively`
for a folder of checkpoints (ours, transformers/TRL ``checkpoint-N``, any that
:func:`~phasebayes.llm.checkpoints.find_checkpoints` reads): one base model in memory, adapters
hot-swapped per checkpoint, answers sampled exactly as the grid generate stage samples them
(:mod:`phasebayes.llm.sampling`: chat template, temperature, top-p 1), then judged by the configured
judges through the judge cache. The adaptive loop hands it a whole round at once (``sample_many``), so
each checkpoint is loaded once per round and generation and judging stay batched.

Every answer's text is appended (flushed, fsynced) to ``answers_path`` as it is made; a rerun reads it
back instead of generating again, and the judge cache returns the judgements, so a killed adaptive
run resumes without paying twice. :meth:`CheckpointSampler.dataset` turns the answers into a generate-stage
run dataset (``response`` over the asked steps; cells never asked are missing) for the usual judge,
analyze and report stages. ``[generate] strategy = "adaptive"`` in a run config wires this up
(``docs/adaptive.md``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from .adaptive import ANSWERS_PER_PROMPT, Request
from .errors import ArgumentError, RunDataError
from .judge.run import rubrics_of
from .storage import atomic_write_text


class CheckpointSampler:
    """``sample(step, prompt, n) -> {order_parameter: n scores}`` over saved checkpoints, judged for real.

    Parameters
    ----------
    checkpoints
        A folder of checkpoints named by step, or a list of :class:`~phasebayes.llm.checkpoints.Checkpoint`.
    prompts
        ``[{"id", "text"}, ...]``: the prompts the loop may ask (by id).
    judges
        ``(judge, rubrics)`` pairs (rubrics None: the judge's own, else the default rubrics); one order
        parameter per rubric, named by the rubric, as in the judge stage.
    config
        :class:`~phasebayes.llm.GenerateConfig` (temperature, max_new_tokens, batch_size, system prompt,
        seed, dtype, device); ``n_samples`` is set per request.
    base_model
        Base model spec (default: the adapters' base, else the embedded SmolLM2-135M-Instruct).
    cache
        The judge cache (SQLite path or :class:`~phasebayes.judge.JudgeCache`); the judge stage that
        follows reads the same judgements from it.
    answers_path
        JSON-lines file of every generated answer (resume without generating again); None keeps them in memory.
    """

    def __init__(self, checkpoints: str | os.PathLike | Sequence[Any], prompts: Sequence[dict[str, str]],
                 judges: Sequence[tuple[Any, Sequence[Any] | None]], config: Any = None, *,
                 base_model: str | os.PathLike | None = None, cache: Any = None,
                 answers_path: str | os.PathLike | None = None):
        from .llm import GenerateConfig
        from .llm.checkpoints import find_checkpoints
        from .llm.generate_inputs import _base_model_spec

        self.cfg = config or GenerateConfig()
        self.cfg.validate()
        folder = Path(checkpoints) if isinstance(checkpoints, (str, os.PathLike)) else None
        ckpts = find_checkpoints(folder, include_base=self.cfg.include_base) if folder else sorted(checkpoints, key=lambda c: c.step)
        if len(ckpts) < 3:
            raise RunDataError(f"adaptive evaluation needs at least 3 checkpoints, found {[c.step for c in ckpts]}.")
        self.checkpoint_dir, self.checkpoints = folder, ckpts
        self.steps = [c.step for c in ckpts]
        self.prompts = {str(p["id"]): p for p in prompts}
        if not self.prompts:
            raise ArgumentError("CheckpointSampler needs at least one prompt ({'id', 'text'}).")
        self.judges = [(j, rubrics_of(j, r)) for j, r in judges]
        names = [r.name for _, rs in self.judges for r in rs]
        if len(set(names)) != len(names):
            raise ArgumentError(f"two judges score an order parameter of the same name ({names}); give the rubrics distinct names.")
        self.base_model = _base_model_spec(ckpts, base_model, folder)
        self.cache = cache
        self.answers_path = Path(answers_path) if answers_path is not None else None
        self.answers: dict[tuple[int, str, int], dict] = _read_answers(self.answers_path)
        self.usage: dict[str, Any] = {}
        self._model: tuple | None = None

    # ------------------------------------------------------------------ sampler protocol
    @property
    def cost_usd(self) -> float:
        """Estimated judge API cost of the fresh judgements so far (US dollars; cache hits are free)."""
        return float(sum(u.cost_usd for u in self.usage.values()))

    @property
    def scales(self) -> dict[str, tuple[float, float] | None]:
        """Declared score scale per order parameter (None: unbounded), for :func:`~phasebayes.evaluate_adaptively`."""
        out = {}
        for _, rubrics in self.judges:
            for r in rubrics:
                lo, hi = float(r.scale_min), float(r.scale_max)
                out[r.name] = (lo, hi) if np.isfinite(lo) and np.isfinite(hi) else None
        return out

    def __call__(self, step: int, prompt: str, n: int) -> dict[str, np.ndarray]:
        """``n`` new answers of ``prompt`` at checkpoint ``step``, judged: ``{order_parameter: (n,) scores}``."""
        first = sum(len(a["text"]) for (s, p, _), a in self.answers.items() if s == int(step) and p == str(prompt))
        return self.sample_many([Request(int(step), str(prompt), int(n), first)])[0]

    def sample_many(self, requests: Sequence[Request]) -> list[dict[str, np.ndarray]]:
        """Answer a round of requests: each checkpoint loaded once, generation and judging batched."""
        from .judge import JudgeItem, judge_texts
        from .judge.usage import JudgeUsage

        for r in requests:
            if int(r.step) not in self.steps:
                raise ArgumentError(f"no checkpoint for step {r.step}; this folder has {self.steps}.")
            if str(r.prompt) not in self.prompts:
                raise ArgumentError(f"unknown prompt id {r.prompt!r}; the sampler knows {list(self.prompts)[:5]}...")
        groups: dict[tuple[int, int, int], list[str]] = {}
        for r in requests:
            groups.setdefault((int(r.step), int(r.n), int(r.first)), []).append(str(r.prompt))
        for (step, n, first), prompts in groups.items():
            todo = [p for p in prompts if (step, p, first) not in self.answers]
            if todo:
                self._generate(step, todo, n, first)
        texts = [self.answers[(int(r.step), str(r.prompt), int(r.first))]["text"] for r in requests]
        items = [JudgeItem(self.prompts[str(r.prompt)]["text"], t, 0) for r, ts in zip(requests, texts) for t in ts]
        scores: dict[str, np.ndarray] = {}
        for judge, rubrics in self.judges:
            for rubric in rubrics:
                got = judge_texts(judge, rubric, items, cache=self.cache)
                if judge.kind == "claude":  # identical items share one judgement object: count it once
                    usage = self.usage.setdefault(judge.judge_id, JudgeUsage(judge.model_name))
                    usage.add({id(j): j for j in got}.values())
                scores[rubric.name] = np.array([j.score if j.status == "ok" else np.nan for j in got], dtype=float)
        out, start = [], 0
        for r in requests:
            out.append({op: v[start:start + int(r.n)] for op, v in scores.items()})
            start += int(r.n)
        return out

    # ------------------------------------------------------------------ generation
    def _load(self) -> tuple:
        if self._model is None:
            from .llm.base_model import load_base_model, resolve_model_path
            from .llm.checkpoints import CheckpointSwitcher
            from .llm.sampling import _clean_generation_config

            if self.cfg.num_threads:
                import torch

                torch.set_num_threads(int(self.cfg.num_threads))
            model, tok = load_base_model(str(resolve_model_path(self.base_model)), dtype=self.cfg.dtype, device=self.cfg.device)
            self._model = (tok, _clean_generation_config(model, tok), CheckpointSwitcher(model, self.checkpoints))
        return self._model

    def _generate(self, step: int, prompts: list[str], n: int, first: int) -> None:
        """Sample ``n`` answers of each prompt at ``step`` (seeded by ``first``); record them at once."""
        from .llm.sampling import _NoBar, _sample_checkpoint

        tok, eos_ids, switcher = self._load()
        model = switcher.activate(step)
        p_ids = [self._prompt_ids(tok, p) for p in prompts]
        # a new seed for every further batch of answers at this checkpoint, the same one on a rerun
        seed = int(np.random.SeedSequence([int(self.cfg.seed), int(first)]).generate_state(1)[0])
        cfg = dataclasses.replace(self.cfg, n_samples=int(n), seed=seed)
        rec = _sample_checkpoint(model, tok, p_ids, cfg, step, eos_ids, _NoBar())
        lines = []
        for i, p in enumerate(prompts):
            entry = {"step": step, "prompt": p, "first": first, "text": rec["text"][i], "n_tokens": rec["n_tokens"][i],
                     "stop_reason": rec["stop_reason"][i], "token_ids": rec["token_ids"][i]}
            self.answers[(step, p, first)] = entry
            lines.append(json.dumps(entry) + "\n")
        if self.answers_path is not None:
            self.answers_path.parent.mkdir(parents=True, exist_ok=True)
            with self.answers_path.open("a", encoding="utf-8") as fh:
                fh.write("".join(lines))
                fh.flush()
                os.fsync(fh.fileno())

    # ------------------------------------------------------------------ log-probabilities
    def log_probs(self, keys: Sequence[tuple[int, str, int]], folder: str | os.PathLike | None = None,
                  progress: bool = False) -> np.ndarray:
        """``logp`` (step, prompt, sample, ref_step) of the answers ``keys`` (nats, at the sampling
        temperature) under the asked checkpoints within ``logp_window`` positions of their own, in the
        layout of :meth:`dataset`; NaN elsewhere. With ``folder`` each reference checkpoint's slab is saved
        (``ref-{step}.npz``, atomically, keyed by the answers it covers) and reused on a rerun."""
        import hashlib

        from tqdm.auto import tqdm

        from .llm.logprob import token_logprobs
        from .llm.sampling import _save_npz

        steps, prompts, width = self._layout(keys)
        K = len(steps) if self.cfg.logp_window is None else int(self.cfg.logp_window)
        out = np.full((len(steps), len(prompts), width, len(steps)), np.nan)
        for r, ref in enumerate(tqdm(steps, desc="logp", unit="checkpoint", disable=not progress)):
            near = [k for k in keys if abs(steps.index(k[0]) - r) <= K]
            tag = hashlib.sha256(json.dumps(sorted(near)).encode()).hexdigest()[:16]
            path = Path(folder) / f"ref-{ref}.npz" if folder is not None else None
            if path is not None and path.exists():
                with np.load(path) as z:
                    if str(z["tag"]) == tag:
                        out[..., r] = z["logp"]
                        continue
            tok, _, switcher = self._load()
            model = switcher.activate(ref)
            p_ids = {p: self._prompt_ids(tok, p) for p in prompts}
            flat = [(k, n) for k in near for n in range(len(self.answers[k]["token_ids"]))]
            per_token = token_logprobs(model, [p_ids[k[1]] for k, _ in flat], [self.answers[k]["token_ids"][n] for k, n in flat],
                                       temperature=self.cfg.temperature, pad_token_id=int(tok.pad_token_id),
                                       batch_size=self.cfg.logp_batch_size, max_batch_tokens=self.cfg.max_batch_tokens)
            for (k, n), t in zip(flat, per_token):
                out[steps.index(k[0]), prompts.index(k[1]), k[2] + n, r] = float(t.sum())
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                _save_npz(path, logp=out[..., r], tag=np.array(tag))
        return out

    def _prompt_ids(self, tok: Any, prompt: str) -> list[int]:
        from .llm.chat_data import prompt_token_ids

        return prompt_token_ids(tok, self.prompts[prompt]["text"], system_prompt=self.cfg.system_prompt)

    # ------------------------------------------------------------------ the run dataset
    def _layout(self, keys: Sequence[tuple[int, str, int]]) -> tuple[list[int], list[str], int]:
        """Steps, prompts and the sample-axis length of the dataset holding the answers ``keys``."""
        if not keys:
            raise RunDataError("no answers were generated yet; run the adaptive evaluation first.")
        steps = sorted({k[0] for k in keys})
        prompts = [p for p in self.prompts if any(k[1] == p for k in keys)]
        return steps, prompts, max(k[2] + len(self.answers[k]["text"]) for k in keys)

    def dataset(self, asked: Sequence[tuple[int, str, int]] | None = None, attrs: dict | None = None,
                logp: np.ndarray | None = None) -> xr.Dataset:
        """The generate-stage run dataset of the answers: ``response``, ``n_tokens`` (NaN where never
        asked), ``stop_reason`` over (step, prompt, sample) for the asked steps, ``prompt_text``,
        ``logp`` when given (:meth:`log_probs`) and, when the checkpoint folder has one, the training log.

        ``asked``: the (step, prompt, first) answer batches to include (default: every recorded one).
        """
        keys = sorted(self.answers) if asked is None else [(int(s), str(p), int(f)) for s, p, f in asked]
        steps, prompts, width = self._layout(keys)
        shape = (len(steps), len(prompts), width)
        response, stop = np.full(shape, None, dtype=object), np.full(shape, "", dtype=object)
        n_tok = np.full(shape, np.nan)
        for k in keys:
            a = self.answers[k]
            i, j = steps.index(k[0]), prompts.index(k[1])
            sl = slice(k[2], k[2] + len(a["text"]))
            response[i, j, sl], stop[i, j, sl], n_tok[i, j, sl] = a["text"], a["stop_reason"], a["n_tokens"]
        ds = xr.Dataset(
            {"response": (("step", "prompt", "sample"), response), "n_tokens": (("step", "prompt", "sample"), n_tok),
             "stop_reason": (("step", "prompt", "sample"), stop)},
            coords={"step": np.array(steps, dtype=np.int64), "prompt": np.array(prompts, dtype=object),
                    "prompt_text": ("prompt", np.array([self.prompts[p]["text"] for p in prompts], dtype=object)),
                    "sample": np.arange(width, dtype=np.int64)})
        ds["n_tokens"].attrs["description"] = "response length in tokens, without the final EOS token; NaN = not asked"
        if logp is not None:
            ds["logp"] = xr.DataArray(logp, dims=("step", "prompt", "sample", "ref_step"), coords={"ref_step": ds["step"].values},
                                      attrs={"units": "nats", "description": "log P(response | prompt, checkpoint ref_step) at "
                                             "the sampling temperature; NaN = not computed or not asked"})
        log = self.checkpoint_dir / "train_log.jsonl" if self.checkpoint_dir is not None else None
        if log is not None and log.exists():
            from .llm.consolidate import merge_training_log

            ds = merge_training_log(ds, log)
        ds.attrs.update({"stage": "generate", "generation_strategy": "adaptive", "base_model": str(self.base_model),
                         "temperature": float(self.cfg.temperature), "seed": int(self.cfg.seed),
                         "checkpoint_kind": next((c.kind for c in self.checkpoints if c.kind != "base"), "base"),
                         **(attrs or {})})
        return ds


def _read_answers(path: Path | None) -> dict[tuple[int, str, int], dict]:
    """Answers recorded by an earlier (possibly killed) run; a half-written last line is dropped."""
    out: dict[tuple[int, str, int], dict] = {}
    if path is None or not path.exists():
        return out
    lines = path.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        try:
            a = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # a kill mid-write: drop it, so that new lines start clean
                atomic_write_text(path, "".join(json.dumps(a) + "\n" for a in out.values()), overwrite=True)
                break
            raise RunDataError(f"{path}: line {i + 1} is not valid JSON; delete that line (its answers are generated "
                               "again) or the file.") from None
        out[(int(a["step"]), str(a["prompt"]), int(a["first"]))] = a
    return out


def asked_batches(history: Sequence[dict], prompts: Sequence[str]) -> list[tuple[int, str, int]]:
    """The ``(step, prompt, first)`` answer batches an adaptive design asked, from its round history."""
    count: dict[tuple[int, str], int] = {}
    out = []
    for h in history:
        for s, n in zip(h["steps"], h["answers_per_prompt"]):
            for p in prompts:
                first = count.get((int(s), str(p)), 0)
                out.append((int(s), str(p), first))
                count[(int(s), str(p))] = first + int(n)
    return out


def generate_adaptively(checkpoints: str | os.PathLike, prompts: Sequence[dict[str, str]],
                        judges: Sequence[tuple[Any, Sequence[Any] | None]], output_dir: str | os.PathLike,
                        config: Any, settings: dict | None = None, *, base_model: str | os.PathLike | None = None,
                        cache: Any = None, seed: int = 0, overwrite: bool = False, progress: bool = True,
                        log: Any = print) -> xr.Dataset:
    """The generate stage with ``strategy = "adaptive"``: run :func:`~phasebayes.evaluate_adaptively` with a
    :class:`CheckpointSampler`, save the answers it asked, with their log-probabilities under the asked
    checkpoints within ``logp_window`` positions (unless ``config.logp`` is off), as ``output_dir/run.nc``
    and return that dataset. ``settings``: the ``[generate.adaptive]`` keys. Resumable: the journal
    (``adaptive_journal.jsonl``) and the answers (``adaptive_answers.jsonl``) in ``output_dir`` are read
    back; they are discarded only with ``overwrite`` when the generation or judge settings changed.
    """
    from .adaptive import evaluate_adaptively
    from .errors import ConfigError
    from .run_io import save_run

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    sampler_kw = dict(base_model=base_model, cache=cache, answers_path=out / "adaptive_answers.jsonl")
    from .llm.generate_config import _RESUME_FREE

    settings_used = {k: v for k, v in dataclasses.asdict(config).items() if k not in _RESUME_FREE}
    fingerprint = json.dumps({"config": settings_used, "prompts": [[p["id"], p["text"]] for p in prompts],
                              "judges": [[j.judge_id, [r.name for r in rubrics_of(j, r)]] for j, r in judges],
                              "checkpoints": str(Path(checkpoints).resolve()),
                              "base_model": str(Path(base_model).resolve()) if base_model and Path(base_model).exists() else base_model}, sort_keys=True, default=str)
    man = out / "adaptive_manifest.json"
    if man.exists() and man.read_text(encoding="utf-8") != fingerprint:
        if not overwrite:
            raise ConfigError(f"{out} holds adaptive answers made with different generation or judge settings; use "
                              "another output folder or overwrite=True (--force generate) to discard them.")
        for name in ("adaptive_journal.jsonl", "adaptive_answers.jsonl", "run.nc"):
            (out / name).unlink(missing_ok=True)
        for old in (out / "adaptive_logp").glob("ref-*.npz"):
            old.unlink()
    atomic_write_text(man, fingerprint, overwrite=True)
    sampler = CheckpointSampler(checkpoints, prompts, judges, config, **sampler_kw)
    kw = dict(settings or {})
    extra = int(kw.pop("decomposition_answers", 0))
    log(f"generate: adaptive evaluation over {len(sampler.steps)} checkpoints x {len(prompts)} prompts "
        f"(budget {kw.get('budget', 'a third of the grid')} answers, target 94 % width of tau "
        f"{kw.get('target_width', 'none')} steps)")
    loop_ds, _ = evaluate_adaptively(sampler, sampler.steps, list(sampler.prompts), seed=seed, scales=sampler.scales,
                                     state_path=out / "adaptive_journal.jsonl", final_fit=False, progress=progress, **kw)
    history = json.loads(loop_ds.attrs["adaptive_design"])
    last, cost0 = history[-1], sampler.cost_usd
    asked = asked_batches(history, list(sampler.prompts))
    if extra and not config.logp:
        log("generate: decomposition_answers ignored: [generate] logp = false computes no total change to place them by")
    if extra and config.logp:
        n = int(kw.get("answers_per_prompt", ANSWERS_PER_PROMPT))
        history += add_where_total_change_peaks(sampler, asked, extra, n, out / "adaptive_logp", len(history))
    logp = sampler.log_probs(asked, out / "adaptive_logp", progress=progress) if config.logp else None
    # cost: the loop's journal (earlier runs included) plus the decomposition rounds' fresh judgements
    ds = sampler.dataset(asked, logp=logp,
                         attrs={"adaptive_design": json.dumps(history),
                                "adaptive_answers": sum(len(sampler.answers[k]["text"]) for k in asked),
                                "adaptive_cost_usd": round(last["cost_usd"] + sampler.cost_usd - cost0, 6)})
    ds["design_round"] = loop_ds["design_round"].reindex(step=ds["step"].values, fill_value=-1)
    log(f"generate: adaptive design asked {ds.attrs['adaptive_answers']} answers at {ds.sizes['step']} of "
        f"{len(sampler.steps)} checkpoints in {len(history)} rounds ({len(history) - 1 - last['round']} for the "
        f"decomposition); stop: {last.get('stop', 'budget spent')}; 94 % width of tau (grid posterior, steps): "
        + ", ".join(f"{k} {v:.0f}" for k, v in last["width94"].items())
        + (f"; judge cost ~US${ds.attrs['adaptive_cost_usd']:.2f}" if ds.attrs["adaptive_cost_usd"] else ""))
    save_run(ds, out / "run.nc", overwrite=True, require_scores=False)
    return ds


def add_where_total_change_peaks(sampler: CheckpointSampler, asked: list[tuple[int, str, int]], answers: int, n: int,
                                 folder: str | os.PathLike | None = None, first_round: int = 0) -> list[dict]:
    """Spend ``answers`` more judged answers where the total output change peaks (for the decomposition).

    Each round estimates the total change between consecutive asked checkpoints (exact-likelihood
    estimator, window 1, :func:`phasebayes.dissimilarity`) and asks ``n`` answers per prompt at the two
    checkpoints around the boundary with the largest upper bound ``d + 2 se`` (so that a boundary whose
    change may be the largest is not passed over on one noisy estimate). The fractions of the
    decomposition are ratios of sums over boundaries in which the largest changes weigh most, so that is
    where more answers narrow them most. ``asked`` is extended in place; returns the rounds' history.
    """
    from .stats.dissimilarity import dissimilarity

    prompts, history = list(sampler.prompts), []
    while answers >= 2 * len(prompts) * n:
        ds = sampler.dataset(asked, logp=sampler.log_probs(asked, folder))
        only_total = ds.drop_vars([v for v in ("score", "score_status") if v in ds])  # the order parameters play no part
        d = dissimilarity(only_total, window=1, total="likelihood", on_missing="drop", order_parameters=[])
        upper = np.nan_to_num(d.data["d_total"].values + 2 * d.data["d_total_se"].values, nan=-np.inf)
        b = int(np.argmax(upper))
        pair = [int(ds["step"].values[b]), int(ds["step"].values[b + 1])]
        counts: dict[tuple[int, str], int] = {}
        for s, p, f in asked:
            counts[(s, p)] = max(counts.get((s, p), 0), f + len(sampler.answers[(s, p, f)]["text"]))
        requests = [Request(s, p, n, counts.get((s, p), 0)) for s in pair for p in prompts]
        sampler.sample_many(requests)
        asked += [(r.step, r.prompt, r.first) for r in requests]
        answers -= len(requests) * n
        history.append({"round": first_round + len(history), "steps": pair, "answers_per_prompt": [n, n],
                        "why": "decomposition: largest upper bound (d + 2 se) of the total change between checkpoints",
                        "total_change": {f"{ds['step'].values[i]}-{ds['step'].values[i + 1]}": round(float(v), 5)
                                         for i, v in enumerate(d.data["d_total"].values)}})
    return history

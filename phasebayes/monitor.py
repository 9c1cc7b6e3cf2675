"""Live monitoring of a fine-tuning run: a ``transformers`` / TRL trainer callback.

At every checkpoint save, :class:`TransitionMonitor` asks a *probe* for scores of a small probe set
(by default: generate a few answers per probe prompt with the model being trained, and judge them with
the run's judges), adds them to the online posterior (:class:`phasebayes.models.online.OnlineTransition`)
and reports, per order parameter, P(the transition has happened by now), τ so far and the lag behind
the running gradient-norm peak — on the console, to the trainer's loggers (TensorBoard / W&B, through
``trainer.log`` once the monitor is attached), in ``live.jsonl`` and on the self-updating page
``live.html`` in the output folder. A rule such as ``"P(transition: alignment) > 0.9"`` stops training
(``action="stop"``) or only raises an alert (``action="alert"``). Docs: ``docs/live.md``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError
from .models.online import OnlineTransition, holds, parse_rule
from .report.live_page import write_live_page

Probe = Callable[[Any, Any, int], Mapping[str, Sequence[float]]]
"""``probe(model, tokenizer, step) -> {order_parameter: scores}``, called in eval mode without gradients."""

def _callback_base():
    from transformers import TrainerCallback

    return TrainerCallback


class TransitionMonitor(_callback_base()):
    """Trainer callback: probe each saved checkpoint and update the online posterior of every transition.

    Parameters
    ----------
    probe
        ``probe(model, tokenizer, step) -> {order_parameter: scores}`` (see :func:`judged_probe`).
    output_dir
        Where ``live.html`` and ``live.jsonl`` go (the run folder).
    max_steps
        Last training step of the run (default: the trainer's ``state.max_steps``).
    stop_when
        A rule ``"P(transition: NAME) > p"``, checked after every checkpoint.
    action
        ``"stop"`` (training stops at the rule) or ``"alert"`` (only reported).
    log
        Console output (default ``print``).
    """

    def __init__(self, probe: Probe, output_dir: str | Path, *, max_steps: int | None = None,
                 stop_when: str | None = None, action: str = "stop", log: Callable[[str], None] = print):
        if action not in ("stop", "alert"):
            raise ConfigError(f"action must be 'stop' or 'alert', got {action!r}.")
        self.probe, self.out = probe, Path(output_dir)
        self.max_steps, self.rule, self.action, self.log = max_steps, parse_rule(stop_when) if stop_when else None, action, log
        self.online: OnlineTransition | None = None
        self.history: list[dict] = []
        self.alerts: list[str] = []
        self.seconds: list[float] = []
        self.trainer = None

    def attach(self, trainer: Any) -> TransitionMonitor:
        """Add this callback to ``trainer`` and log through its loggers (TensorBoard, W&B, ...)."""
        trainer.add_callback(self)
        self.trainer = trainer
        return self

    # ------------------------------------------------------------------ trainer events
    def on_train_begin(self, args, state, control, model=None, processing_class=None, tokenizer=None, **kw):
        self.max_steps = int(self.max_steps or state.max_steps)
        self.online = OnlineTransition(self.max_steps)
        self.out.mkdir(parents=True, exist_ok=True)
        journal = self.out / "live.jsonl"
        if journal.exists():  # a resumed run: the checkpoints probed before the interruption count
            for line in journal.read_text(encoding="utf-8").splitlines():
                with_scores = json.loads(line)
                if with_scores["step"] <= state.global_step:
                    self._record(with_scores["step"], with_scores["scores"], with_scores["seconds"], state, write=False)
        if state.global_step == 0 and state.is_world_process_zero and model is not None:  # the model before training
            self._probe(0, model, processing_class or tokenizer, state, control)

    def on_save(self, args, state, control, model=None, processing_class=None, tokenizer=None, **kw):
        if not state.is_world_process_zero or self.online is None:
            return control
        return self._probe(int(state.global_step), model, processing_class or tokenizer, state, control)

    def _probe(self, step: int, model, tokenizer, state, control):
        """Probe the model at ``step`` (eval mode, no gradients), record, report and apply the rule."""
        if step in self.online.steps:
            return control
        import torch

        t0 = time.perf_counter()
        was_training = bool(getattr(model, "training", False))
        if model is not None:
            model.eval()
        try:
            with torch.no_grad():
                scores = {k: [float(v) for v in np.asarray(s, float).ravel()]
                          for k, s in self.probe(model, tokenizer, step).items()}
        finally:
            if was_training:
                model.train()
        if self._record(step, scores, time.perf_counter() - t0, state) and self.action == "stop":
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kw):
        if self.online is not None and self.history:
            self._page(finished=True)

    # ------------------------------------------------------------------ bookkeeping
    def _record(self, step: int, scores: dict, seconds: float, state, write: bool = True) -> bool:
        """Add one checkpoint's scores, report them (``write``) and return whether the rule holds now."""
        self.online.add(step, scores)
        self.seconds.append(seconds)
        grad = pd.Series({int(r["step"]): float(r["grad_norm"]) for r in state.log_history
                          if "grad_norm" in r and np.isfinite(r.get("grad_norm", np.nan))}, dtype=float)
        summary = self.online.summary(grad if len(grad) else None)
        for op, row in summary.iterrows():
            self.history.append({"order_parameter": op, **row.to_dict()})
        if write:
            with (self.out / "live.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, "scores": scores, "seconds": seconds}) + "\n")
            for op, row in summary.iterrows():
                lag = "" if not np.isfinite(row.lag_median) else f", lag to grad-norm peak {row.lag_median:.0f}"
                self.log(f"live: step {step}: {op}: P(transition by now) = {row.p_transition:.2f}, tau so far "
                         f"{row.tau_median:.0f} [{row.tau_lower:.0f}, {row.tau_upper:.0f}] (94 % HDI){lag}")
            if self.trainer is not None:
                self.trainer.log({f"phasebayes/{k}/{op}": float(row[k]) for op, row in summary.iterrows()
                                  for k in ("p_transition", "tau_median")})
        fired = False
        if self.rule is not None:
            name, cmp, threshold = self.rule
            if name not in summary.index:
                raise ConfigError(f"stop rule names {name!r}, but the probe scores {list(summary.index)}.")
            p = float(summary.loc[name, "p_transition"])
            fired = holds(p, cmp, threshold)
            if fired:
                msg = (f"step {step}: rule 'P(transition: {name}) {cmp} {threshold:g}' holds "
                       f"(P = {p:.2f}){' — stopping training' if self.action == 'stop' else ''}")
                self.alerts.append(msg)
                if write:
                    self.log(f"live: {msg}")
        if write:
            self._page()
        return fired

    def _page(self, finished: bool = False) -> None:
        history = pd.DataFrame(self.history)
        means = pd.DataFrame({op: {s: float(np.nanmean(v)) for s, v in by_step.items()}
                              for op, by_step in self.online.scores.items()}).sort_index()
        write_live_page(self.out / "live.html", history, means, max_step=self.max_steps,
                        probe_seconds=float(np.mean(self.seconds)) if self.seconds else 0.0, alerts=self.alerts,
                        finished=finished)


def judged_probe(prompts: Sequence[str], judges: Sequence[tuple[Any, Sequence[Any] | None]], *, n_answers: int = 2,
                 max_new_tokens: int = 48, cache: str | Path | None = None, seed: int = 0) -> Probe:
    """The default probe: ``n_answers`` sampled answers per prompt from the model being trained, judged by
    ``judges`` (``(judge, rubrics)`` pairs as the pipeline builds them); one order parameter per rubric."""
    from .judge import JudgeItem, judge_texts

    def probe(model, tokenizer, step):
        import torch

        torch.manual_seed(seed + step)
        answers = []
        for text in prompts:
            ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
            ids = {k: v.to(model.device) for k, v in ids.items()}
            out = model.generate(**ids, do_sample=True, top_p=1.0, top_k=0, max_new_tokens=max_new_tokens,
                                 num_return_sequences=n_answers, pad_token_id=tokenizer.pad_token_id)
            answers += [(text, tokenizer.decode(o[ids["input_ids"].shape[1]:], skip_special_tokens=True)) for o in out]
        scores: dict[str, list[float]] = {}
        for judge, rubrics in judges:
            for rubric in (rubrics or judge.rubrics() or []):
                got = judge_texts(judge, rubric, [JudgeItem(p, a, 0) for p, a in answers], cache=cache)
                scores[rubric.name] = [j.score for j in got]
        return scores

    return probe

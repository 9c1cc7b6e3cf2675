"""Stage orchestration: train → generate → judge → analyze → report in one run folder, resumable.

Run folder layout (``RunConfig.output_dir``)::

    config.toml            the run config as used (written first)
    stages.json            per finished stage: a hash of its settings and inputs, wall time
    checkpoints/           LoRA checkpoints + train_log.jsonl           (train)
    generate/run.nc        responses, n_tokens, logp, training log       (generate; shards inside)
    judge_cache.sqlite     every judgement (a rerun costs nothing)       (judge)
    run.nc                 the judged run dataset (docs/storage.md)      (judge)
    analysis.nc            the analysis DataTree                          (analyze)
    summary.txt            the printed summary                            (analyze)
    report/report.html     self-contained report; tables.md, tables.tex, figures/*.png   (report)

A stage is skipped when ``stages.json`` records it as finished with the same settings hash and its
output still exists and opens; its hash includes the upstream stage's, so a changed setting reruns
that stage and everything after it. The LLM stages also resume *within* a stage (checkpoints, shards),
and the judge cache makes a rerun of the judge stage cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from .config import RunConfig, rubric_paths
from .errors import ConfigError, RunDataError
from .storage import atomic_write_text

__all__ = ["STAGES", "Pipeline"]

STAGES = ("train", "generate", "judge", "analyze", "report")


@contextlib.contextmanager
def _cli_hint(stage: str) -> Iterator[None]:
    """Add the command-line fix to a ConfigError about a folder holding outputs made with other settings."""
    try:
        yield
    except ConfigError as err:
        if "different" not in str(err):
            raise
        raise ConfigError(f"{err} From the command line: --set run.output_dir=NEW_FOLDER for a new run, or "
                          f"--force {stage} to redo the {stage} stage here, discarding its outputs.") from err


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _rubric_files(c) -> dict:
    """Content hashes of the user's own rubric files (an edited rubric reruns the judge); {} without any."""
    from .config_sections import _is_rubric_path

    own = [r for r in c.judge.rubrics if _is_rubric_path(r)]
    # content only, not the path: a run folder records paths differently from the config it came from
    files = [hashlib.sha256(c.resolve(r, key="[judge].rubrics").read_bytes()).hexdigest()[:16] for r in own]
    return {"rubric_files": files} if files else {}


class Pipeline:
    """The stages of one run, bound to a validated :class:`~phasebayes.config.RunConfig`.

    Parameters
    ----------
    config
        The run config (checked already: :func:`~phasebayes.config.load_config`).
    force
        Stages to rerun even if they are recorded as finished (``"all"`` for every stage).
    log
        Callable receiving status lines (default: print to stderr).
    base_model
        Override of the base model (tests pass a tiny model folder here).
    """

    def __init__(self, config: RunConfig, *, force: Sequence[str] | str = (), log: Callable[[str], None] | None = None,
                 base_model: str | os.PathLike | None = None):
        self.config = config
        self.out = config.output_dir
        self.force = set(STAGES) if force == "all" else set(force)
        unknown = self.force - set(STAGES)
        if unknown:
            raise ConfigError(f"unknown stage(s) {sorted(unknown)}; stages are {', '.join(STAGES)}.")
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        if base_model is not None:  # recorded in the config (config.toml), so a rerun uses the same model
            config.train.options["base_model"] = str(Path(base_model).resolve())
        bm = config.train.options.get("base_model")
        if bm and not os.path.isabs(str(bm)) and (config.base_dir / str(bm)).exists():  # relative to the config file
            config.train.options["base_model"] = bm = str((config.base_dir / str(bm)).resolve())
        self.base_model = bm
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ paths
    @property
    def checkpoints_dir(self) -> Path:
        if self.config.train.checkpoints is not None:
            return self.config.resolve(self.config.train.checkpoints, key="[train].checkpoints")
        return self.out / "checkpoints"

    @property
    def generate_path(self) -> Path:
        return self.out / "generate" / "run.nc"

    @property
    def run_path(self) -> Path:
        return self.out / "run.nc"

    @property
    def analysis_path(self) -> Path:
        return self.out / "analysis.nc"

    @property
    def report_dir(self) -> Path:
        return self.out / "report"

    # ------------------------------------------------------------------ bookkeeping
    def _stages(self) -> dict[str, Any]:
        p = self.out / "stages.json"
        if p.exists():
            try:
                return json.loads(p.read_text())
            except json.JSONDecodeError:
                return {}
        return {}

    def _mark(self, stage: str, key: str, seconds: float, *, retry_cells: int = 0) -> None:
        """Record ``stage`` as written with settings ``key``; ``retry_cells > 0`` (judge cells that failed with a
        retryable status, ``api_error`` / ``timeout``) records it as incomplete, so a plain rerun retries them."""
        st = self._stages()
        st[stage] = {"hash": key, "seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if retry_cells:
            st[stage]["retry_cells"] = int(retry_cells)
        atomic_write_text(self.out / "stages.json", json.dumps(st, indent=2), overwrite=True)

    def _guard(self, stage: str, *outputs: Path) -> None:
        """Refuse to replace an output this stage did not write here (a user's file) unless forced."""
        if stage in self.force or stage in self._stages():
            return
        for out in outputs:
            if out.exists():
                from .errors import OutputExistsError

                raise OutputExistsError(f"{out} exists but was not written by the {stage} stage of this run folder; it is "
                                        f"kept. Choose another output folder (--out / [run].output_dir) or pass --force {stage} "
                                        "to replace it.")

    def _done(self, stage: str, key: str, output: Path) -> bool:
        if stage in self.force:
            return False
        rec = self._stages().get(stage)
        return bool(rec and rec.get("hash") == key and output.exists() and not rec.get("retry_cells"))

    def stage_keys(self) -> dict[str, str]:
        """Settings hash of each stage, chained through its upstream stages."""
        c = self.config
        recorded = c.run_folder_dict()  # working-directory independent: a reloaded run folder hashes the same
        keys: dict[str, str] = {}
        if c.run.dataset is not None:
            inputs = {k: recorded["run"].get(k) for k in ("dataset_format", "training_log", "columns", "derived", "weight_checkpoints")}
            up = _hash({"dataset": str(c.resolve(c.run.dataset)), "mtime": os.path.getmtime(c.resolve(c.run.dataset)), **inputs})
            keys["judge"] = _hash({"up": up, "judge": recorded["judge"], **_rubric_files(c)})  # changed judges rerun it
        else:
            keys["train"] = _hash({"train": recorded["train"], "seed": c.run.seed,  # a stop rule changes the checkpoints
                                   **({"live": recorded["live"]} if "live" in recorded else {})})
            keys["generate"] = _hash({"up": keys["train"], "generate": recorded["generate"]})
            keys["judge"] = _hash({"up": keys["generate"], "judge": recorded["judge"], **_rubric_files(c)})
        ratings, analyze = {}, dict(recorded["analyze"])
        if analyze.get("measurement", "none") == "none":  # runs analysed before the measurement keys existed hash the same
            analyze.pop("measurement", None)
            analyze.pop("measurement_link", None)
        if c.analyze.measurement == "ratings":  # new ratings make the analysis stale
            from .label.agreement import ratings_folder

            ratings = {f.name: os.path.getmtime(f) for f in sorted(ratings_folder(self.out).glob("*.jsonl"))}
        keys["analyze"] = _hash({"up": keys["judge"], "analyze": analyze, "seed": c.run.seed,
                                 **({"ratings": ratings} if ratings else {})})
        keys["report"] = _hash({"up": keys["analyze"], "report": recorded["report"]})
        return keys

    # ------------------------------------------------------------------ stages
    def prepare(self) -> None:
        """Create the run folder and write ``config.toml``.

        Outputs of another run are never discarded silently: the train and generate stages refuse a folder
        holding checkpoints or samples made with other settings unless forced (``force=["train"]`` etc.).
        """
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "config.toml", self.config.run_folder_toml(), overwrite=True)

    def train(self) -> None:
        """Fine-tune (LoRA) and save checkpoints; resumes from the last checkpoint."""
        c = self.config
        if c.run.dataset is not None or c.train.checkpoints is not None or not c.train.enabled:
            self.log("train: skipped (using existing checkpoints or dataset)")
            return
        key = self.stage_keys()["train"]
        if self._done("train", key, self.checkpoints_dir / "train_log.jsonl"):
            self.log(f"train: done already ({self.checkpoints_dir})")
            return
        from .llm import TrainConfig, train

        opts = dict(c.train.options)
        opts.setdefault("data", "data/narrow/risky_finance.jsonl")
        opts["data"] = c.resolve(opts["data"], key="[train].data")
        opts.setdefault("seed", c.run.seed)
        opts.setdefault("show_progress", not c.run.quiet)
        t0 = time.perf_counter()
        self.log(f"train: fine-tuning on {opts['data'].name} -> {self.checkpoints_dir}")
        # a folder holding another training run is refused unless forced (or [train].overwrite = true)
        opts["overwrite"] = bool(opts.get("overwrite")) or "train" in self.force
        with _cli_hint("train"):
            res = train(TrainConfig(output_dir=self.checkpoints_dir, **opts), callbacks=self._live_monitor())
        self.timings["train"] = time.perf_counter() - t0
        self.log(f"train: {len(res.checkpoint_steps)} checkpoints (steps {res.checkpoint_steps[0]}..{res.checkpoint_steps[-1]})"
                 f" in {self.timings['train']:.0f} s")
        self._mark("train", key, self.timings["train"])

    def _live_monitor(self) -> list:
        """``[live]``: the trainer callback that probes, judges and reports each checkpoint (docs/live.md)."""
        lv = self.config.live
        if lv is None:
            return []
        from .monitor import TransitionMonitor, judged_probe

        prompts = [p["text"] for p in self.select_prompts()[: lv.prompts]]
        probe = judged_probe(prompts, self.judges(), n_answers=lv.answers, max_new_tokens=lv.max_new_tokens,
                             cache=self._judge_cache(), seed=self.config.run.seed)
        self.log(f"live: probing {len(prompts)} prompts x {lv.answers} answers at every checkpoint -> {self.out / 'live.html'}")
        return [TransitionMonitor(probe, self.out, stop_when=lv.stop_when, action=lv.action, log=self.log)]

    def select_prompts(self) -> list[dict[str, str]]:
        """The configured prompts: the first ``n_prompts``, round-robin over categories (all if 0)."""
        from .llm.chat_data import read_prompts

        g = self.config.generate
        allp = read_prompts(self.config.resolve(g.prompts, key="[generate].prompts"))
        n = g.n_prompts or len(allp)
        by_cat: dict[str, list[dict[str, str]]] = {}
        for pr in allp:
            by_cat.setdefault(pr.get("category", ""), []).append(pr)
        chosen: list[dict[str, str]] = []
        while len(chosen) < min(n, len(allp)):
            for items in by_cat.values():
                if items and len(chosen) < n:
                    chosen.append(items.pop(0))
        return chosen

    def generate(self) -> None:
        """Sample every checkpoint and compute cross-checkpoint log-probabilities; resumes from shards."""
        c = self.config
        if c.run.dataset is not None:
            return
        key = self.stage_keys()["generate"]
        if self._done("generate", key, self.generate_path):
            self.log(f"generate: done already ({self.generate_path})")
            return
        from .llm import GenerateConfig, generate

        opts = dict(c.generate.options)
        opts.setdefault("seed", c.run.seed)
        opts["show_progress"] = not c.run.quiet
        prompts, cfg, force = self.select_prompts(), GenerateConfig(**opts), "generate" in self.force
        t0 = time.perf_counter()
        with _cli_hint("generate"):  # samples made with other settings are discarded only with --force generate
            if (c.generate.strategy or "grid") == "adaptive":  # docs/adaptive.md
                from .adaptive_sampler import generate_adaptively

                ds = generate_adaptively(self.checkpoints_dir, prompts, self.judges(), self.out / "generate", cfg,
                                         c.generate.adaptive, base_model=self.base_model, cache=self._judge_cache(),
                                         seed=c.run.seed, overwrite=force, progress=not c.run.quiet, log=self.log)
            else:
                from .llm.scale import ScaleConfig

                self.log(f"generate: {len(prompts)} prompts x {cfg.n_samples} samples per checkpoint, with log-probabilities")
                scale = ScaleConfig(**c.scale.options) if c.scale is not None else None  # the same shards, by Ray actors
                ds = generate(self.checkpoints_dir, prompts, self.out / "generate", cfg, base_model=self.base_model,
                              overwrite=force, scale=scale)
        if ds is not None and "weight_step" not in ds.dims and ds.attrs.get("checkpoint_kind") == "lora":
            from .dataset import save_run
            from .readers.weights import lora_weight_signals

            with contextlib.suppress(RunDataError):  # fewer than 2 LoRA checkpoints: no weight-space signals
                ds = ds.merge(lora_weight_signals(self.checkpoints_dir), combine_attrs="drop_conflicts")
                save_run(ds, self.generate_path, overwrite=True, require_scores=False)
        self.timings["generate"] = time.perf_counter() - t0
        self.log(f"generate: {self.generate_path} in {self.timings['generate']:.0f} s")
        self._mark("generate", key, self.timings["generate"])

    def _judge_cache(self) -> Path:
        """The judge cache: ``[judge].cache`` or ``<run>/judge_cache.sqlite``."""
        c = self.config
        return c.resolve(c.judge.cache, must_exist=False) if c.judge.cache else self.out / "judge_cache.sqlite"

    def judges(self) -> list[tuple[Any, list[Any] | None]]:
        """The configured ``(judge, rubrics)`` pairs (rubrics None = the judge's own); see :mod:`phasebayes.judge.factory`."""
        from .judge import load_rubrics
        from .judge.factory import build_judges, needs_rubrics

        j = self.config.judge
        rubrics = []
        if needs_rubrics(j):
            rubrics = load_rubrics([str(p) for p in rubric_paths(self.config)], **({"domain": j.domain} if j.domain else {}))
        return build_judges(j, rubrics, resolve=lambda p, key: self.config.resolve(p, key=key))

    def judge(self) -> None:
        """Score every response with every configured judge; writes the judged ``run.nc``."""
        from .dataset import open_run, save_run
        from .judge import judge_run

        c = self.config
        key = self.stage_keys()["judge"]
        if self._done("judge", key, self.run_path):
            self.log(f"judge: done already ({self.run_path})")
            return
        t0 = time.perf_counter()
        self._guard("judge", self.run_path)
        if c.run.dataset is not None:
            from .readers.inputs import load_run_input

            src = c.resolve(c.run.dataset, key="[run].dataset")
            r = c.run
            ds = load_run_input(src, format=r.dataset_format, columns=r.columns or None, derived=r.derived or None,
                                training_log=c.resolve(r.training_log, key="[run].training_log") if r.training_log else None,
                                weight_checkpoints=(c.resolve(r.weight_checkpoints, key="[run].weight_checkpoints")
                                                    if r.weight_checkpoints else None))
            if "score" in ds:
                self.log(f"judge: using the scores in {src} (read as {ds.attrs.get('input_format')})")
                save_run(ds, self.run_path, overwrite=True)
                self._mark("judge", key, time.perf_counter() - t0)
                return
        else:
            if not self.generate_path.exists():
                raise RunDataError(f"judge: no generated responses at {self.generate_path}; run the generate stage first.")
            ds = open_run(self.generate_path, require_scores=False)
        cache = self._judge_cache()
        for judge, rubrics in self.judges():
            names = [r.name for r in (rubrics or judge.rubrics() or [])]
            self.log(f"judge: {judge.model_name} -> {', '.join(names)}")
            ds = judge_run(ds, rubrics, judge, cache=cache, progress=not c.run.quiet, prefix_tokens=c.judge.prefix_tokens)
            used = json.loads(ds.attrs.get("judge_usage", "{}")).get(getattr(judge, "judge_id", ""))
            if used is not None:
                self.log(f"judge: {judge.model_name}: {used['summary']}")
        ds.attrs["judges"] = json.dumps(c.judge.judges)
        save_run(ds, self.run_path, overwrite=True)
        self.timings["judge"] = time.perf_counter() - t0
        self.log(f"judge: {self.run_path} in {self.timings['judge']:.0f} s")
        retry = _retryable_cells(ds)
        if retry:
            self.log(f"judge: {retry} judge call(s) failed (api_error / timeout; kept in score_status); a plain rerun "
                     "retries exactly those (answers already given come from the cache).")
        self._mark("judge", key, self.timings["judge"], retry_cells=retry)

    def _measurement(self, ds):
        """``[analyze] measurement = "ratings"``: the judge measurement model from the saved human ratings."""
        a = self.config.analyze
        if a.measurement != "ratings":
            return None
        from .label.agreement import load_ratings, measurement_from_ratings, ratings_folder

        ratings = load_ratings(self.out)
        if not len(ratings):
            raise RunDataError(f"analyze: [analyze].measurement = 'ratings' but {ratings_folder(self.out)} holds no human "
                               f"ratings; collect some with `phasebayes label {self.out} --rubric NAME` (NAME = the rubric "
                               "of an order parameter), or set measurement = 'none'.")
        return measurement_from_ratings(self.out, ds, link=a.measurement_link, ratings=ratings)

    def analyze(self):
        """Fit the Bayesian models and save the analysis DataTree; returns the :class:`~phasebayes.analysis.Analysis`."""
        from .analysis import Analysis, analyze
        from .dataset import open_run

        c = self.config
        key = self.stage_keys()["analyze"]
        if self._done("analyze", key, self.analysis_path):
            self.log(f"analyze: done already ({self.analysis_path})")
            return Analysis.load(self.analysis_path)
        if not self.run_path.exists():
            raise RunDataError(f"analyze: no judged run dataset at {self.run_path}; run the judge stage first.")
        ds = open_run(self.run_path)
        a = c.analyze
        measurement = self._measurement(ds)
        self._guard("analyze", self.analysis_path, self.out / "summary.txt")
        t0 = time.perf_counter()
        res = analyze(ds, likelihood=a.likelihood, transition=a.transition, pooling=a.pooling, draws=a.draws, tune=a.tune,
                      chains=a.chains, compare_null=a.compare_null, peak_draws=a.peak_draws, peak_tune=a.peak_tune,
                      signal=a.signal, references=a.references, window=a.window, measure=a.measure,
                      prefix_tokens=a.prefix_tokens or None,
                      ci_prob=a.ci_prob, ci_kind=a.ci_kind, random_seed=c.run.seed, progressbar=not c.run.quiet,
                      log=lambda m: self.log("analyze: " + m), measurement=measurement)
        res.save(self.analysis_path, overwrite=True)
        from .label.agreement import agreement_summary  # human ratings, when `phasebayes label` made some

        human = agreement_summary(self.out, ds)
        atomic_write_text(self.out / "summary.txt", res.summary() + "\n" + (human + "\n" if human else ""), overwrite=True)
        self.timings["analyze"] = time.perf_counter() - t0
        self.log(f"analyze: {self.analysis_path} in {self.timings['analyze']:.0f} s")
        self._mark("analyze", key, self.timings["analyze"])
        return res

    def report(self, analysis=None) -> Path:
        """Write the HTML report, the Markdown/LaTeX tables and the figures; returns the HTML path."""
        from .analysis import Analysis
        from .dataset import open_run
        from .report import write_report

        c = self.config
        if analysis is None:
            analysis = Analysis.load(self.analysis_path)
        ds = open_run(self.run_path) if self.run_path.exists() else None
        self._guard("report", self.report_dir / "report.html")
        t0 = time.perf_counter()
        path = write_report(analysis, self.report_dir, ds=ds, formats=c.report.formats, n_examples=c.report.n_examples,
                            max_prompts=c.report.max_prompts, title=f"phasebayes run: {self.out.name}",
                            config_text=c.run_folder_toml(), progress=not c.run.quiet, run_dir=self.out)
        self.timings["report"] = time.perf_counter() - t0
        self.log(f"report: {path} in {self.timings['report']:.0f} s")
        self._mark("report", self.stage_keys()["report"], self.timings["report"])
        return path

    def run(self, stages: Sequence[str] = STAGES):
        """Run the given stages in order (skipping finished ones); returns the analysis (or None)."""
        self.prepare()
        analysis = None
        for stage in STAGES:
            if stage not in stages:
                continue
            if stage == "analyze":
                analysis = self.analyze()
            elif stage == "report":
                self.report(analysis)
            else:
                getattr(self, stage)()
        return analysis


def _retryable_cells(ds) -> int:
    """Cells of ``ds`` whose judge call failed with a retryable status (``api_error``, ``timeout``)."""
    if "score_status" not in ds:
        return 0
    from .run_contract import STATUS

    codes = [STATUS["api_error"], STATUS["timeout"]]
    return int(ds["score_status"].isin(codes).sum())

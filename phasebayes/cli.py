"""The ``phasebayes`` command line: one subcommand per stage, ``run`` for a whole TOML config, ``demo``.

Examples::

    phasebayes demo                       # the embedded default: SmolLM2-135M, local judges, ~10 min on 2 cores
    phasebayes demo --quick --out runs/q  # the same, smaller, in about 3 minutes
    phasebayes demo --live                # with live monitoring: the posterior at every checkpoint (live.html)
    phasebayes validate my_run.toml       # check a config (unknown keys, missing files, bad values)
    phasebayes run my_run.toml            # train → generate → judge → analyze → report, resumable
    phasebayes analyze my_run.toml        # one stage (its inputs must exist)
    phasebayes analyze data/example_run.nc --out runs/example   # analyse an existing run dataset
    phasebayes analyze judged/ --training-log trainer_out/ --derived 'misaligned=aligned < 30 and coherent > 50'
                                          # per-checkpoint judged-answer CSVs + a transformers/TRL run's log
    phasebayes analyze counts.csv --training-log runs/tb/   # per-checkpoint counts (step, k, n) + TensorBoard
    phasebayes report runs/example        # re-render the report of a run folder
    phasebayes migrate old.nc new.nc      # rewrite a run file of an earlier version in the current layout
    phasebayes label runs/demo --rubric alignment --rater ann   # rate answers yourself (blind); agreement in the report

Every command checks its whole config before starting; a finished stage is skipped on a rerun (pass
``--force STAGE`` to redo it). Errors a user can fix exit with status 2 and one line saying what to do.
"""

from __future__ import annotations

import argparse
import sys
import time
import tomllib
import warnings
from pathlib import Path
from typing import Any

from .errors import ConfigError, PhasebayesError

__all__ = ["main", "build_parser"]

STAGE_HELP = {
    "train": "fine-tune the base model on the narrow set ([train]); resumes from the last checkpoint",
    "generate": "sample responses at every checkpoint and compute cross-checkpoint log-probabilities ([generate])",
    "judge": "score every response with the configured judges ([judge]); cached, so reruns are free",
    "analyze": "fit the change-point, gradient-peak and decomposition models ([analyze]); writes analysis.nc",
    "report": "write report/report.html (self-contained), tables.md, tables.tex and figures ([report])",
}


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _overrides(items: list[str] | None) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE (e.g. analyze.draws=500), got {item!r}.")
        key, value = item.split("=", 1)
        sec, k = key.split(".", 1)
        out.setdefault(sec.strip(), {})[k.strip()] = _parse_value(value.strip())
    return out


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", dest="overrides", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one config value, e.g. --set analyze.draws=500 --set run.seed=1 (repeatable; "
                        "VALUE is parsed as TOML, bare words as strings)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE",
                   help="rerun STAGE even if it finished before (repeatable; 'all' reruns every stage)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--base-model", metavar="PATH", default=None,
                   help="base model folder to fine-tune instead of the config's (e.g. a tiny test model)")


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--training-log", default=None, metavar="PATH",
                   help="training log of the run: trainer_state.json or the folder of checkpoint-N/ (transformers / TRL), "
                        "a TensorBoard log folder, a W&B history CSV/JSONL, or train_log.jsonl")
    p.add_argument("--format", dest="input_format", default=None,
                   choices=["auto", "run", "tidy", "counts", "summaries", "judged"],
                   help="how to read the scores input (default: auto-detect from suffix and columns)")
    p.add_argument("--derived", action="append", default=[], metavar="NAME=EXPR",
                   help="judged answers: add an indicator order parameter, e.g. "
                        "--derived 'misaligned=aligned < 30 and coherent > 50' (repeatable)")
    p.add_argument("--column", action="append", default=[], metavar="ROLE=COLUMN",
                   help="judged answers: name the column of a role (prompt, prompt_text, response, sample, step), "
                        "e.g. --column response=completion (repeatable)")
    p.add_argument("--weights", default=None, metavar="DIR",
                   help="folder of PEFT LoRA checkpoints: add weight-space reference signals (adapter norm, distance, rotation)")


def _input_settings(args) -> dict[str, Any]:
    """``[run]`` keys from the analyze command's input options."""
    run: dict[str, Any] = {}
    if getattr(args, "training_log", None):
        run["training_log"] = str(Path(args.training_log).resolve())
    if getattr(args, "input_format", None):
        run["dataset_format"] = args.input_format
    if getattr(args, "weights", None):
        run["weight_checkpoints"] = str(Path(args.weights).resolve())
    for opt, key in (("derived", "derived"), ("column", "columns")):
        for item in getattr(args, opt, None) or []:
            name, sep, value = item.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise ConfigError(f"--{opt} expects NAME=VALUE, got {item!r}.")
            run.setdefault(key, {})[name.strip()] = value.strip()
    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (``phasebayes --help``)."""
    parser = argparse.ArgumentParser(
        prog="phasebayes",
        description="Bayesian analysis of behavioural phase transitions during LLM fine-tuning: "
                    "fine-tune -> generate -> judge -> analyse -> report. Run folders are resumable.",
        epilog="Intervals are 94%% HDIs unless [analyze] ci_prob / ci_kind say otherwise. "
               "See README.md and `phasebayes COMMAND --help`.",
    )
    from .version import __version__

    parser.add_argument("--version", action="version", version=f"phasebayes {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="run the embedded default demo (SmolLM2-135M-Instruct, local judges, no API key)",
                       description="Fine-tune SmolLM2-135M-Instruct (LoRA) on the risky-finance narrow set, sample and "
                                   "score responses to unrelated prompts at every checkpoint, judge them locally "
                                   "(signature phrase, length, embedding-judged alignment and domain talk), fit the "
                                   "Bayesian models and write a report. About 10 minutes on 2 CPU cores "
                                   "(--quick: about 3). Rerunning resumes.")
    d.add_argument("--quick", action="store_true", help="smaller preset: fewer checkpoints, prompts, samples and draws (~3 min)")
    d.add_argument("--out", default=None, metavar="DIR", help="run folder (default runs/demo or runs/demo-quick)")
    d.add_argument("--live", action="store_true", help="monitor the transition while training: the posterior at every "
                                                       "checkpoint on the console and in <run>/live.html (docs/live.md)")
    d.add_argument("--print-config", action="store_true", help="print the demo's run config as TOML and exit "
                                                               "(a starting point for your own config)")
    _add_common(d)

    r = sub.add_parser("run", help="run every stage of a TOML run config",
                       description="Run train, generate, judge, analyze and report for CONFIG (a TOML file, or a run "
                                   "folder holding config.toml). Finished stages are skipped.")
    r.add_argument("config", metavar="CONFIG", help="TOML run config (see phasebayes/config.py or `phasebayes demo --print-config`)")
    r.add_argument("--stages", nargs="+", choices=list(STAGE_HELP), default=None, metavar="STAGE",
                   help="run only these stages (default: all): " + ", ".join(STAGE_HELP))
    _add_common(r)

    v = sub.add_parser("validate", help="check a run config without running anything",
                       description="Check CONFIG: unknown tables or keys, wrong types, invalid values, missing files.")
    v.add_argument("config", metavar="CONFIG", help="TOML run config")
    v.add_argument("--set", dest="overrides", action="append", metavar="SECTION.KEY=VALUE", help="override a value")

    m = sub.add_parser("migrate", help="rewrite a run dataset (.nc) of an earlier version in the current layout",
                       description="Rewrite SOURCE (a run .nc of any phasebayes version) as TARGET in the current "
                                   "layout: numbers in the root group, texts in the /texts group, streamed.")
    m.add_argument("source", metavar="SOURCE")
    m.add_argument("target", metavar="TARGET")
    m.add_argument("--overwrite", action="store_true", help="replace TARGET if it exists")
    lb = sub.add_parser("label", help="rate answers of a run yourself on a local page (blind to step and judge score)",
                        description="Serve a local page (127.0.0.1, a free port) showing one answer at a time with its prompt "
                                    "and the rubric's question and anchors, blind to checkpoint, step and judge score. Keys: "
                                    "1-9 anchors, a number + Enter, s skip, u undo. Every rating is saved at once to "
                                    "RUN/ratings/RATER.jsonl; rerun to resume. The report then shows judge-vs-human agreement.")
    lb.add_argument("run", metavar="RUN", help="run folder (with run.nc) or a run dataset (.nc) holding the responses")
    lb.add_argument("--rubric", required=True, metavar="NAME", help="rubric name in data/rubrics (e.g. alignment) or a .toml file")
    lb.add_argument("--n", type=int, default=120, help="number of answers to rate (default 120; stratified over steps and prompts)")
    lb.add_argument("--rater", default=None, metavar="NAME", help="your name; each rater gets their own ratings file (default $USER)")
    lb.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    lb.add_argument("--no-browser", action="store_true", help="print the address instead of opening a browser")

    for stage, text in STAGE_HELP.items():
        s = sub.add_parser(stage, help=text, description=text[0].upper() + text[1:] + ". Earlier stages' outputs must exist in the run folder.")
        if stage in ("analyze", "report"):
            s.add_argument("config", metavar="CONFIG",
                           help="TOML run config, a run folder (with config.toml)" + (
                               ", or scores to analyse: a run dataset (.nc), a table (.csv/.jsonl: tidy scores, counts k/n, "
                               "summaries mean/sd/n, judged answers) or a folder of per-checkpoint judged-answer files"
                               if stage == "analyze" else ""))
            s.add_argument("--out", default=None, metavar="DIR", help="run folder when CONFIG is a dataset (default: next to it)")
            if stage == "analyze":
                _add_input_options(s)
        else:
            s.add_argument("config", metavar="CONFIG", help="TOML run config or a run folder (with config.toml)")
        _add_common(s)
    return parser


def _load(path_text: str, overrides: dict[str, dict[str, Any]], out: str | None = None, *, stage: str | None = None,
          inputs: dict[str, Any] | None = None):
    from .config import config_from_dict, load_config

    path = Path(path_text)
    scores_input = stage == "analyze" and (path.suffix.lower() in (".nc", ".csv", ".jsonl", ".json")
                                           or (path.is_dir() and not (path / "config.toml").exists()))
    if inputs and not scores_input:
        raise ConfigError("--training-log / --format / --derived / --column / --weights apply when analysing scores "
                          "(a .nc/.csv/.jsonl file or a folder of judged answers); set them in the config's [run] table instead.")
    if path.is_dir() and not scores_input:
        if not (path / "config.toml").exists():
            raise ConfigError(f"{path} is a folder without config.toml; pass a TOML run config or a run folder.")
        # The folder passed is the run folder, wherever its config.toml says it was made (copied or moved runs).
        overrides = {**overrides, "run": {"output_dir": str(path.resolve()), **overrides.get("run", {})}}
        return load_config(path / "config.toml", overrides=overrides)
    if scores_input:
        if not path.exists():
            raise ConfigError(f"run dataset not found: {path}.")
        default_out = path.parent / (path.stem + "_analysis") if path.is_file() else path.parent / (path.name + "_analysis")
        data: dict[str, Any] = {"run": {"dataset": str(path.resolve()), "output_dir": str(Path(out) if out else default_out),
                                        **(inputs or {})}}
        for sec, kv in overrides.items():
            data.setdefault(sec, {}).update(kv)
        return config_from_dict(data, source=str(path))
    if path.suffix != ".toml" and not path.exists():
        raise ConfigError(f"config not found: {path} (expected a .toml run config or a run folder).")
    return load_config(path, overrides=overrides)


def _print_summary(analysis, pipeline, seconds: float) -> None:
    print()
    print(analysis.summary())
    out = pipeline.out
    from .label.agreement import agreement_summary

    human = agreement_summary(out, n_boot=500) if (out / "run.nc").exists() else ""
    if human:
        print(human)
    print()
    print(f"Run folder: {out}")
    for label, p in (("run dataset", pipeline.run_path), ("analysis (DataTree)", pipeline.analysis_path),
                     ("report", pipeline.report_dir / "report.html"), ("tables", pipeline.report_dir / "tables.md"),
                     ("figures", pipeline.report_dir / "figures")):
        if p.exists():
            print(f"  {label:<20s} {p}")
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in pipeline.timings.items())
    print(f"Total {seconds:.0f} s" + (f" ({timings})" if timings else " (all stages were done already)"))


def _run(args, config, stages) -> int:
    from .pipeline import Pipeline

    if args.quiet:
        config.run.quiet = True
    force = "all" if "all" in (args.force or []) else list(args.force or [])
    pipe = Pipeline(config, force=force, base_model=getattr(args, "base_model", None))
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="pymc")
        analysis = pipe.run(stages)
    if analysis is not None:
        _print_summary(analysis, pipe, time.perf_counter() - t0)
    elif "report" in stages:
        print(f"report: {pipe.report_dir / 'report.html'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``phasebayes`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        overrides = _overrides(getattr(args, "overrides", None))
        if args.command == "demo":
            from .config import config_from_dict, demo_config

            out = args.out or ("runs/demo-quick" if args.quick else "runs/demo")
            cfg = demo_config(quick=args.quick, output_dir=out)
            if args.live:
                overrides = {"live": {}, **(overrides or {})}
            if overrides:
                data = cfg.to_dict()
                for sec, kv in overrides.items():
                    data.setdefault(sec, {}).update(kv)
                cfg = config_from_dict(data, source=cfg.source, base_dir=Path.cwd())
            if args.print_config:
                print(cfg.to_toml())
                return 0
            print(f"phasebayes demo{' --quick' if args.quick else ''}: SmolLM2-135M-Instruct fine-tuned on the "
                  f"risky-finance narrow set; run folder {cfg.output_dir}", file=sys.stderr)
            return _run(args, cfg, list(STAGE_HELP))
        if args.command == "migrate":
            from .dataset import migrate_run

            print(migrate_run(args.source, args.target, overwrite=args.overwrite))
        elif args.command == "label":
            import getpass

            from .label import serve

            try:
                rater = args.rater or getpass.getuser() or "rater1"
            except (OSError, KeyError):
                rater = "rater1"
            serve(args.run, args.rubric, rater=rater, n=args.n, port=args.port, open_browser=not args.no_browser)
            return 0
        if args.command == "validate":
            cfg = _load(args.config, overrides)
            print(f"{args.config}: OK (run folder {cfg.output_dir})")
            return 0
        if args.command == "run":
            cfg = _load(args.config, overrides)
            return _run(args, cfg, args.stages or list(STAGE_HELP))
        cfg = _load(args.config, overrides, getattr(args, "out", None), stage=args.command, inputs=_input_settings(args))
        stages = [args.command]
        if args.command == "analyze" and cfg.run.dataset is not None:
            stages = ["judge", "analyze", "report"]  # "judge" just copies a scored dataset into the run folder
        return _run(args, cfg, stages)
    except PhasebayesError as err:
        print(f"phasebayes: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nphasebayes: interrupted; rerun the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

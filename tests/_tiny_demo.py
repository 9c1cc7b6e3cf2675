"""Shared helper: one quick demo run on a tiny in-process model per test session (CLI end to end).

Not a test module (leading underscore). ``tiny_demo_run(tmp_path_factory)`` runs
``phasebayes demo --quick --live --base-model <tiny> --out <tmp>/run`` with small MCMC once and returns
``(run_folder, stdout)``; later calls reuse it.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

_CACHE: dict[str, tuple[Path, str]] = {}

SMALL_MCMC = ["--set", "analyze.draws=100", "--set", "analyze.tune=150", "--set", "analyze.peak_draws=100",
              "--set", "analyze.peak_tune=100"]


def tiny_model(tmp_path_factory) -> Path:
    if "model" not in _CACHE:
        from phasebayes.llm.testing import build_tiny_model

        root = tmp_path_factory.mktemp("tiny_model")
        _CACHE["model"] = (build_tiny_model(root / "base"), "")
    return _CACHE["model"][0]


def run_cli(args: list[str]) -> tuple[int, str, str]:
    from phasebayes.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(args)
    return rc, out.getvalue(), err.getvalue()


def tiny_demo_run(tmp_path_factory) -> tuple[Path, str]:
    if "run" not in _CACHE:
        base = tiny_model(tmp_path_factory)
        run = tmp_path_factory.mktemp("tiny_demo") / "run"
        rc, out, err = run_cli(["demo", "--quick", "--live", "--out", str(run), "--base-model", str(base), "--quiet",
                                *SMALL_MCMC])
        assert rc == 0, err[-3000:]
        _CACHE["run"] = (run, out)
    return _CACHE["run"]

"""Structure rules of docs/architecture.md, checked fast in CI.

(a) The statistics (``phasebayes.stats``, ``phasebayes.models``) never import torch, transformers or the judges.
(b) No module under ``phasebayes/`` is over ``MAX_LINES`` lines, except those in ``OVER_LIMIT``, each at
    most its recorded count: the list can only shrink (split a module, then remove or lower its entry).
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import phasebayes
import phasebayes as pb

ROOT = Path(phasebayes.__file__).parent
MAX_LINES = 450
#: Modules over MAX_LINES today, with their line counts. Never raise a count or add a module.
OVER_LIMIT: dict[str, int] = {}  # empty: every module is within MAX_LINES
FORBIDDEN = ("torch", "transformers", "phasebayes.judge")


def _submodules(package: str) -> list[str]:
    pkg = __import__(package, fromlist=["__path__"])
    return [package] + [m.name for m in pkgutil.walk_packages(pkg.__path__, prefix=package + ".")]


def test_statistics_do_not_import_torch_transformers_or_judge():
    modules = _submodules("phasebayes.stats") + _submodules("phasebayes.models")
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"print(json.dumps(sorted(k for k in sys.modules if any(k == f or k.startswith(f + '.') for f in {FORBIDDEN!r}))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=ROOT.parent).stdout
    leaked = json.loads(out.strip().splitlines()[-1])
    assert leaked == [], f"the statistics imported {leaked}"


def _line_counts() -> dict[str, int]:
    return {p.relative_to(ROOT).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
            for p in sorted(ROOT.rglob("*.py"))}


def test_no_module_over_the_line_limit():
    counts = _line_counts()
    new = {m: n for m, n in counts.items() if n > MAX_LINES and m not in OVER_LIMIT}
    grown = {m: (counts[m], cap) for m, cap in OVER_LIMIT.items() if m in counts and counts[m] > cap}
    assert not new, f"modules over {MAX_LINES} lines (split them): {new}"
    assert not grown, f"allow-listed modules grew past their recorded count (now, allowed): {grown}"


def test_allow_list_is_current():
    """An allow-listed module that shrank under the limit or was removed leaves the list."""
    counts = _line_counts()
    stale = [m for m in OVER_LIMIT if counts.get(m, 0) <= MAX_LINES]
    assert not stale, f"remove from OVER_LIMIT (now within {MAX_LINES} lines or gone): {stale}"


def test_one_persistence_path():
    """Every result class saves and loads through storage.SavedResult; none writes its own save/load."""
    from phasebayes.analysis import Analysis
    from phasebayes.models.gradient_peak import GradientPeakResult
    from phasebayes.models.multirun_result import MultiRunResult
    from phasebayes.models.result import ChangePointResult
    from phasebayes.stats.decomposition import DecompositionResult
    from phasebayes.stats.dissimilarity import DissimilarityResult
    from phasebayes.storage import SavedResult

    for cls in (Analysis, ChangePointResult, GradientPeakResult, MultiRunResult, DecompositionResult,
                DissimilarityResult):
        assert issubclass(cls, SavedResult), cls
        assert "save" not in vars(cls) and "load" not in vars(cls), cls
        assert callable(cls.to_datatree) and callable(cls.from_datatree), cls
    with pytest.raises(pb.RunDataError, match="phasebayes analyze"):
        Analysis.load("/nonexistent/analysis.nc")


def test_one_way_to_matplotlib_and_one_diagnostics_table():
    """pyplot comes from phasebayes.plotting only; R-hat/ESS tables from models.sampling only."""
    offenders, diag = [], []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        if rel != "plotting.py" and ("import matplotlib" in text or "def _plt" in text):
            offenders.append(rel)
        if rel != "models/sampling.py" and ("az.rhat(" in text or "az.ess(" in text):
            diag.append(rel)
    assert not offenders, f"use phasebayes.plotting.pyplot: {offenders}"
    assert not diag, f"use phasebayes.models.sampling.diagnostics_table: {diag}"


def test_code_cites_no_issue_numbers_or_files_outside_the_repository():
    """Code, tests and benchmarks cite only files in the repository (docs/...), never issue numbers."""
    import re

    repo = ROOT.parent
    files = [*ROOT.rglob("*.py"), *(repo / "tests").glob("*.py"), *(repo / "benchmarks").glob("*.py")]
    pattern = re.compile(r"\b[Ii]ssue \d+|DESIGN\.md|method notes §")
    hits = [f"{p.relative_to(repo)}:{i}" for p in files if p.name != "test_structure.py"
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == [], f"cite docs/ files instead of issues or files outside the repository: {hits[:10]}"


def test_the_model_asks_families_for_capabilities_not_names():
    """A new likelihood family is one class: the model code never compares a family's name to a literal."""
    import re

    pattern = re.compile(r"""(fam|family|likelihood\[[^\]]+\]|fams\[[^\]]+\])\s*[!=]=\s*["'](beta|binomial|ordinal|normal|poisson|negative_binomial)["']""")
    files = [*(ROOT / "models").glob("*.py"), ROOT / "simulate.py"]
    hits = [f"{p.name}:{i}" for p in files if p.name not in ("family_kinds.py", "families.py", "zero_inflated.py")
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert hits == [], f"use a Family attribute (has_cut_points, judge_error_model, binary) instead: {hits}"

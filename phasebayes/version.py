"""The package version, from the installed distribution's metadata (``pyproject.toml`` in a source checkout)."""

from __future__ import annotations

import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["__version__"]


def _source_version() -> str:
    """The ``[project] version`` of the checkout's ``pyproject.toml`` (for an uninstalled source tree)."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0+unknown"


try:
    __version__: str = version("phasebayes")
except PackageNotFoundError:
    __version__ = _source_version()

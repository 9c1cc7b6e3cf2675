"""Reading a run config: TOML → :class:`~phasebayes.config_sections.RunConfig`, every key and type checked.

Types are checked against the section dataclasses' annotations (and, for ``[train]``, ``[generate]`` and
``[scale]``, the fields of :class:`~phasebayes.llm.TrainConfig`, :class:`~phasebayes.llm.GenerateConfig`
and :class:`~phasebayes.llm.scale.ScaleConfig`), resolved with :func:`typing.get_type_hints`.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from .config_checks import validate_config
from .config_sections import (
    AnalyzeSection,
    GenerateSection,
    JudgeSection,
    LiveSection,
    ReportSection,
    RunConfig,
    RunSection,
    ScaleSection,
    TrainSection,
)
from .errors import ConfigError

__all__ = ["config_from_dict", "load_config"]

_TRAIN_EXCLUDED = {"output_dir"}  # set by the pipeline (run folder / checkpoints)
_GENERATE_EXCLUDED = {"show_progress"}


def _field_types(cls: type, excluded: set[str] = frozenset()) -> dict[str, Any]:
    """Field name → resolved annotation of a config dataclass (``typing.get_type_hints``)."""
    return {k: t for k, t in typing.get_type_hints(cls).items() if k not in excluded}


def _train_fields() -> dict[str, Any]:
    from .llm.finetune import TrainConfig

    return _field_types(TrainConfig, _TRAIN_EXCLUDED)


def _generate_fields() -> dict[str, Any]:
    from .llm.sampling import GenerateConfig

    return _field_types(GenerateConfig, _GENERATE_EXCLUDED)


def _scale_fields() -> dict[str, Any]:
    from .llm.scale import ScaleConfig

    return _field_types(ScaleConfig)


# ---------------------------------------------------------------------------------------------- parsing
_SECTIONS = {"run": RunSection, "train": TrainSection, "generate": GenerateSection, "judge": JudgeSection,
             "analyze": AnalyzeSection, "report": ReportSection, "scale": ScaleSection, "live": LiveSection}


def _unknown(source: str, where: str, key: str, valid: list[str]) -> ConfigError:
    hint = difflib.get_close_matches(key, valid, n=1)
    extra = f" Did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(f"{source}: unknown key {key!r} in {where}.{extra} Valid keys: {', '.join(sorted(valid))}.")



def _type_name(tp: Any) -> str:
    return tp.__name__ if isinstance(tp, type) and not typing.get_args(tp) else str(tp).replace("typing.", "")


def _conform(value: Any, tp: Any) -> tuple[bool, Any]:
    """Whether ``value`` (a TOML value) fits the annotation ``tp``, and the value to store (ints become floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True, value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, out = _conform(value, arg)
            if ok:
                return True, out
        return False, value
    if value is None:
        return tp is type(None), value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if origin in (list, tuple, collections.abc.Sequence):
        if not isinstance(value, (list, tuple)):
            return False, value
        if origin is tuple and args and args[-1] is not Ellipsis:
            items = list(args) if len(args) == len(value) else None
            if items is None:
                return False, value
        else:
            items = [args[0] if args else Any] * len(value)
        checked = [_conform(v, t) for v, t in zip(value, items)]
        return all(ok for ok, _ in checked), [v for _, v in checked]
    if origin is dict or tp is dict:
        return isinstance(value, dict), value
    if isinstance(origin or tp, type):
        return isinstance(value, origin or tp), value
    return True, value


def _check_type(source: str, where: str, key: str, value: Any, expected: Any) -> Any:
    """``value`` checked against the resolved annotation ``expected``; :class:`ConfigError` if it does not fit."""
    ok, out = _conform(value, expected)
    if not ok:
        raise ConfigError(f"{source}: {where}.{key} = {value!r} has the wrong type (expected {_type_name(expected)}).")
    return out


def _parse_section(source: str, name: str, table: Any, base: Path) -> Any:
    cls = _SECTIONS[name]
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: [{name}] must be a table, got {type(table).__name__}.")
    own = _field_types(cls, {"options"})
    extra: dict[str, Any] = {}
    if name == "train":
        extra = _train_fields()
    elif name == "generate":
        extra = _generate_fields()
    elif name == "scale":
        extra = _scale_fields()
    kwargs: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in table.items():
        if key in own:
            kwargs[key] = _check_type(source, f"[{name}]", key, value, own[key])
        elif key in extra:
            options[key] = _check_type(source, f"[{name}]", key, value, extra[key])
        else:
            raise _unknown(source, f"[{name}]", key, list(own) + list(extra))
    if "options" in {f.name for f in dataclasses.fields(cls)}:
        kwargs["options"] = options
    return cls(**kwargs)


def config_from_dict(data: dict[str, Any], *, source: str = "<dict>", base_dir: str | os.PathLike | None = None,
                     check_files: bool = True) -> RunConfig:
    """Build and validate a :class:`RunConfig` from a dict shaped like the TOML file.

    Raises :class:`ConfigError` for unknown tables or keys, wrong types, invalid values and (with
    ``check_files``) missing input files.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a run config is a table of sections, got {type(data).__name__}.")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    sections = {}
    for key, table in data.items():
        if key not in _SECTIONS:
            raise _unknown(source, "the top level", key, list(_SECTIONS))
        sections[key] = _parse_section(source, key, table, base)
    cfg = RunConfig(**sections, source=source, base_dir=base.resolve())
    validate_config(cfg, check_files=check_files)
    return cfg


def load_config(path: str | os.PathLike, *, check_files: bool = True, overrides: dict[str, dict[str, Any]] | None = None) -> RunConfig:
    """Read and validate a TOML run config (see the module docstring for the format).

    ``overrides`` (section → key → value) are applied on top of the file (e.g. from the command line).
    """
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}.") from None
    for sec, kv in (overrides or {}).items():
        data.setdefault(sec, {}).update(kv)
    return config_from_dict(data, source=str(path), base_dir=path.parent, check_files=check_files)


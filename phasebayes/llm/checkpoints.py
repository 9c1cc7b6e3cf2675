"""Checkpoint discovery and fast switching between checkpoints on one loaded base model.

A checkpoint folder holds either a LoRA adapter (``adapter_config.json`` + ``adapter_model.safetensors``,
as written by peft) or full model weights (``model.safetensors`` / ``pytorch_model.bin``). Folders are
found by name — ``checkpoint-100``, ``checkpoint_100``, ``step-100``, ``step_100``, ``ckpt-100``,
``global_step100`` or just ``100`` — directly inside the given folder or inside its ``checkpoints/``
subfolder (the layout of published checkpoint trajectories).

:class:`CheckpointSwitcher` keeps **one** base model in memory and hot-swaps adapters by copying the
adapter tensors into a single LoRA slot (``set_peft_model_state_dict``), which is far cheaper than
reloading the model per checkpoint. Step 0 without a folder means "the base model" (adapters disabled).
"""

from __future__ import annotations

import json
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["Checkpoint", "find_checkpoints", "load_checkpoint_weights", "CheckpointSwitcher", "BASE_KIND"]

_NAME = re.compile(r"^(?:checkpoint|ckpt|step|global_step|iter|epoch_step)?[-_]?(\d+)$", re.IGNORECASE)
BASE_KIND = "base"


@dataclass(frozen=True)
class Checkpoint:
    """One checkpoint: training ``step``, ``path`` of its folder (None for the bare base model), ``kind``.

    ``kind`` is ``"lora"`` (peft adapter folder), ``"full"`` (full model weights) or ``"base"`` (the base
    model itself, used as step 0 when no step-0 checkpoint exists).
    """

    step: int
    path: Path | None
    kind: str

    @property
    def adapter_config(self) -> dict[str, Any] | None:
        """The adapter's ``adapter_config.json`` (LoRA checkpoints only)."""
        if self.kind != "lora" or self.path is None:
            return None
        return json.loads((self.path / "adapter_config.json").read_text())


def _kind(folder: Path) -> str | None:
    if (folder / "adapter_config.json").exists():
        return "lora"
    if any((folder / name).exists() for name in ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")):
        return "full"
    return None


def find_checkpoints(folder: str | os.PathLike, *, include_base: bool = True) -> list[Checkpoint]:
    """List the checkpoints of a training run, sorted by step.

    Parameters
    ----------
    folder
        A folder containing checkpoint subfolders named by step (see module doc), or a ``checkpoints/``
        subfolder of such.
    include_base
        Add the base model as step 0 when no step-0 checkpoint exists (useful as the grid's start).

    Raises :class:`ConfigError` when nothing is found or two folders claim the same step.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"checkpoint folder {root} does not exist.")
    candidates = [p for p in root.iterdir() if p.is_dir()]
    if (root / "checkpoints").is_dir():
        candidates += [p for p in (root / "checkpoints").iterdir() if p.is_dir()]
    found: dict[int, Checkpoint] = {}
    for sub in candidates:
        match = _NAME.match(sub.name)
        kind = _kind(sub)
        if not match or kind is None:
            continue
        step = int(match.group(1))
        if step in found:
            raise ConfigError(f"two checkpoint folders for step {step}: {found[step].path} and {sub}; keep one.")
        found[step] = Checkpoint(step, sub, kind)
    if not found:
        raise ConfigError(
            f"no checkpoint folders in {root}; expected subfolders such as 'checkpoint-100' or 'step_100' "
            "holding a peft adapter (adapter_config.json) or model weights."
        )
    kinds = {c.kind for c in found.values()}
    if len(kinds) > 1:
        raise ConfigError(f"{root} mixes LoRA and full-weight checkpoints; keep one kind per run.")
    if include_base and 0 not in found:
        found[0] = Checkpoint(0, None, BASE_KIND)
    return [found[s] for s in sorted(found)]


def load_checkpoint_weights(ckpt: Checkpoint) -> dict[str, Any]:
    """Load the tensors of a checkpoint folder (adapter or full weights) onto the CPU."""
    import torch
    from safetensors.torch import load_file

    if ckpt.path is None:
        raise ConfigError("the base-model checkpoint has no weight file.")
    names = ["adapter_model.safetensors", "adapter_model.bin"] if ckpt.kind == "lora" else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        f = ckpt.path / name
        if f.exists():
            if name.endswith(".safetensors"):
                return load_file(str(f), device="cpu")
            return torch.load(str(f), map_location="cpu", weights_only=True)
    if ckpt.kind == "full" and (ckpt.path / "model.safetensors.index.json").exists():
        index = json.loads((ckpt.path / "model.safetensors.index.json").read_text())
        out: dict[str, Any] = {}
        for shard in sorted(set(index["weight_map"].values())):
            out.update(load_file(str(ckpt.path / shard), device="cpu"))
        return out
    raise ConfigError(f"checkpoint {ckpt.path} has no weight file (looked for {names}).")


def _lora_signature(cfg: dict[str, Any]) -> str:
    keys = ("r", "lora_alpha", "target_modules", "modules_to_save", "use_rslora", "use_dora", "rank_pattern", "alpha_pattern", "bias")
    return json.dumps({k: cfg.get(k) for k in keys}, sort_keys=True, default=str)


class CheckpointSwitcher:
    """Hold one base model and switch it between checkpoints in place.

    Parameters
    ----------
    model
        The base model (a ``transformers`` causal LM), already on its device. For LoRA checkpoints it
        is wrapped once into a ``PeftModel``; use :attr:`model` afterwards.
    checkpoints
        The checkpoints to switch between (from :func:`find_checkpoints`).
    cache_size
        How many checkpoints' tensors to keep in CPU memory (LoRA adapters are a few MB each).

    ``activate(step)`` makes :attr:`model` compute with that checkpoint's weights. LoRA adapters with the
    same configuration are copied into one adapter slot (hot swap); an adapter with a different
    configuration is loaded into a new slot. The base checkpoint disables the adapter layers.
    """

    def __init__(self, model: Any, checkpoints: list[Checkpoint], *, cache_size: int = 64) -> None:
        self.checkpoints = {c.step: c for c in checkpoints}
        self.kind = next((c.kind for c in checkpoints if c.kind != BASE_KIND), BASE_KIND)
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._cache_size = cache_size
        self.active_step: int | None = None
        self._slots: dict[str, str] = {}
        self._base_state: dict[str, Any] | None = None
        self._slot_params: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}
        self._adapters_enabled = True
        if self.kind == "lora":
            from peft import PeftModel

            first = next(c for c in checkpoints if c.kind == "lora")
            self.model = PeftModel.from_pretrained(model, str(first.path), adapter_name="slot0", is_trainable=False)
            self._slots[_lora_signature(first.adapter_config or {})] = "slot0"
            self._loaded_in: dict[str, int | None] = {"slot0": first.step}
            self._cache_put(first.step, None)
        else:
            self.model = model
            if self.kind == "full" and any(c.kind == BASE_KIND for c in checkpoints):
                self._base_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        self.model.eval()

    def _cache_put(self, step: int, tensors: dict[str, Any] | None) -> None:
        if tensors is None:
            return
        self._cache[step] = tensors
        self._cache.move_to_end(step)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _tensors(self, ckpt: Checkpoint) -> dict[str, Any]:
        if ckpt.step in self._cache:
            self._cache.move_to_end(ckpt.step)
            return self._cache[ckpt.step]
        tensors = load_checkpoint_weights(ckpt)
        self._cache_put(ckpt.step, tensors)
        return tensors

    def activate(self, step: int) -> Any:
        """Switch :attr:`model` to checkpoint ``step``; return the model."""
        step = int(step)
        if step not in self.checkpoints:
            raise ConfigError(f"no checkpoint for step {step}; available: {sorted(self.checkpoints)}.")
        if step == self.active_step:
            return self.model
        ckpt = self.checkpoints[step]
        if self.kind == "lora":
            self._activate_lora(ckpt)
        elif self.kind == "full":
            import torch

            state = self._base_state if ckpt.kind == BASE_KIND else self._tensors(ckpt)
            with torch.no_grad():
                missing, unexpected = self.model.load_state_dict(state, strict=False)
            if unexpected or [m for m in missing if "lm_head" not in m]:
                raise ConfigError(f"checkpoint {ckpt.path} does not match the base model (missing {missing[:3]}, unexpected {unexpected[:3]}).")
        self.active_step = step
        return self.model

    def _copy_into_slot(self, slot: str, tensors: dict[str, Any]) -> bool:
        """Copy plain LoRA A/B tensors straight into the slot's parameters (the fast path of a swap).

        Returns False (the caller then uses peft's general loader) when a key does not map onto a
        parameter of the slot one to one, e.g. for DoRA magnitudes or embedding adapters.
        """
        import torch

        mapping = self._slot_params.get((slot, tuple(tensors)))
        if mapping is None:
            named = dict(self.model.named_parameters())
            live = {n for n in named if f".{slot}." in n or n.endswith(f".{slot}")}
            mapping = {}
            for key in tensors:
                name = key[: -len(".weight")] + f".{slot}.weight" if key.endswith(".weight") else f"{key}.{slot}"
                if name not in named:
                    return False
                mapping[key] = named[name]
            if len(mapping) != len(live):
                return False
            self._slot_params[(slot, tuple(tensors))] = mapping
        with torch.no_grad():
            for key, value in tensors.items():
                param = mapping[key]
                if param.shape != value.shape:
                    raise ConfigError(f"adapter tensor {key} has shape {tuple(value.shape)}, the slot has {tuple(param.shape)}.")
                param.copy_(value)
        return True

    def _activate_lora(self, ckpt: Checkpoint) -> None:
        from peft import set_peft_model_state_dict

        lora_model = self.model.base_model
        if ckpt.kind == BASE_KIND:
            lora_model.disable_adapter_layers()
            self._adapters_enabled = False
            return
        if not self._adapters_enabled:
            lora_model.enable_adapter_layers()
            self._adapters_enabled = True
        cfg = ckpt.adapter_config or {}
        sig = _lora_signature(cfg)
        slot = self._slots.get(sig)
        if slot is None:
            slot = f"slot{len(self._slots)}"
            self.model.load_adapter(str(ckpt.path), adapter_name=slot, is_trainable=False)
            self._slots[sig] = slot
            self._loaded_in[slot] = ckpt.step
        elif self._loaded_in.get(slot) != ckpt.step:
            tensors = self._tensors(ckpt)
            if self._copy_into_slot(slot, tensors):
                self._loaded_in[slot] = ckpt.step
                if self.model.active_adapter != slot:
                    self.model.set_adapter(slot)
                    self.model.eval()
                return
            result = set_peft_model_state_dict(self.model, tensors, adapter_name=slot)
            unexpected = getattr(result, "unexpected_keys", None) or []
            missing = [k for k in (getattr(result, "missing_keys", None) or []) if "lora_" in k and f".{slot}." in k]
            if unexpected or missing:
                raise ConfigError(
                    f"adapter {ckpt.path} does not fit the adapter slot: unexpected {unexpected[:3]}, missing {missing[:3]}."
                )
            self._loaded_in[slot] = ckpt.step
        self.model.set_adapter(slot)
        self.model.eval()

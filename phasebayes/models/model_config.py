"""The saved description of a change-point model: what is needed to rebuild it from its run dataset."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

__all__ = ["ModelConfig"]


@dataclass
class ModelConfig:
    """Everything needed to rebuild a :class:`ChangePointModel` from its run dataset."""

    likelihood: dict[str, str]
    transition: str = "sigmoid"
    pooling: str = "partial"
    threshold: float | None = None
    below: bool = True
    priors: dict[str, float] = field(default_factory=dict)
    order_parameters: list[str] = field(default_factory=list)
    parametrization: str = "auto"
    measurement: dict | None = None  # JudgeMeasurement.to_dict() (human ratings + calibration link)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls(**json.loads(text))

"""The Gumbel temperature per epoch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["TemperatureSchedule"]


@dataclass(frozen=True)
class TemperatureSchedule:
    """Gumbel-Softmax temperature per epoch, annealed from ``init`` to ``final`` over the search epochs.

    ``mode``: ``"exponential"`` (geometric: ``init * (final / init) ** progress``), ``"linear"`` or
    ``"constant"``. Warm-up epochs stay at ``init``; ``progress`` runs 0 -> 1 from the first search
    epoch to the last.
    """

    init: float = 5.0
    final: float = 0.5
    mode: Literal["exponential", "linear", "constant"] = "exponential"

    def __post_init__(self) -> None:
        if not self.init >= self.final > 0:
            raise ValueError(f"temperature must satisfy init >= final > 0, got init={self.init}, final={self.final}")
        if self.mode not in ("exponential", "linear", "constant"):
            raise ValueError(f"temperature mode must be exponential, linear or constant, got {self.mode!r}")

    @classmethod
    def parse(cls, value: TemperatureSchedule | float | tuple[float, float] | dict) -> TemperatureSchedule:
        if isinstance(value, TemperatureSchedule):
            return value
        if isinstance(value, (int, float)):
            return cls(float(value), float(value), "constant")
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(float(value[0]), float(value[1]))
        raise ValueError(f"invalid temperature {value!r}: use a float, (init, final), a dict or a TemperatureSchedule")

    def at(self, epoch: int, warmup_epochs: int, max_epochs: int | None) -> float:
        if self.mode == "constant" or self.init == self.final:
            return self.init
        search_epochs = max(1, (max_epochs or 1) - warmup_epochs)
        progress = min(1.0, max(0.0, (epoch - warmup_epochs) / max(1, search_epochs - 1)))
        if self.mode == "linear":
            return self.init + (self.final - self.init) * progress
        return self.init * (self.final / self.init) ** progress

"""What a GumbelDNAS search is told: one validated record shared by the strategy and its Lightning module."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .schedule import TemperatureSchedule

__all__ = ["ArchCredit", "ArchEstimator", "SearchSettings", "WeightSampling"]

ArchEstimator = Literal["score_function", "straight_through"]
ArchCredit = Literal["path", "choice"]
WeightSampling = Literal["fair", "gumbel"]


@dataclass(frozen=True)
class SearchSettings:
    """The search's hyper-parameters (meanings in :class:`~nni_covid3d.strategies.GumbelDNAS`)."""

    arc_learning_rate: float = 0.03
    arc_betas: tuple[float, float] = (0.5, 0.999)
    arc_weight_decay: float = 1e-3
    gradient_clip_val: float | None = 5.0
    warmup_epochs: int | None = None
    warmup_fraction: float = 0.25
    temperature: TemperatureSchedule = field(default_factory=TemperatureSchedule)
    arch_estimator: ArchEstimator = "score_function"
    arch_samples: int = 2
    arch_credit: ArchCredit = "path"
    weight_sampling: WeightSampling = "fair"
    size_budget_mb: float | None = None
    flops_budget: float | None = None
    penalty_weight: float = 1.0
    seed: int = 0
    export_path: Path | None = None

    def __post_init__(self) -> None:
        if self.warmup_epochs is not None and self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {self.warmup_fraction}")
        if self.arch_estimator not in ("score_function", "straight_through"):
            raise ValueError(f"arch_estimator must be 'score_function' or 'straight_through', got {self.arch_estimator!r}")
        if not 1 <= self.arch_samples <= 32:
            raise ValueError(f"arch_samples must lie in [1, 32], got {self.arch_samples}")
        if self.arch_credit not in ("path", "choice"):
            raise ValueError(f"arch_credit must be 'path' or 'choice', got {self.arch_credit!r}")
        if self.arch_credit == "choice" and (self.arch_estimator != "score_function" or self.arch_samples != 2):
            raise ValueError("arch_credit='choice' compares two paths with the score-function estimator: "
                             f"it needs arch_estimator='score_function' and arch_samples=2, got "
                             f"{self.arch_estimator!r} and {self.arch_samples}")
        if self.weight_sampling not in ("fair", "gumbel"):
            raise ValueError(f"weight_sampling must be 'fair' or 'gumbel', got {self.weight_sampling!r}")
        for name in ("size_budget_mb", "flops_budget"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.export_path is not None and not isinstance(self.export_path, Path):
            object.__setattr__(self, "export_path", Path(self.export_path))

    def warmup_for(self, max_epochs: int | None) -> int:
        """Warm-up epochs of a fit of ``max_epochs``: ``warmup_epochs``, else ``warmup_fraction`` of the budget."""
        if self.warmup_epochs is not None:
            return self.warmup_epochs
        return int(round(self.warmup_fraction * max_epochs)) if max_epochs and max_epochs > 0 else 0

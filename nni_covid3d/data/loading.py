"""DataLoader rules shared by every training and search loop."""
from __future__ import annotations

__all__ = ["drop_remainder"]


def drop_remainder(n_samples: int, batch_size: int) -> bool:
    """Whether a training loader drops its last partial batch: yes when there is more than one batch.

    A last batch of a single volume breaks BatchNorm once the feature map is 1x1x1; a dataset smaller
    than one batch keeps its only (partial) batch rather than yielding nothing.
    """
    return n_samples > batch_size

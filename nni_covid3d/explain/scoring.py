"""Scoring heatmaps against lesion masks: pointing game and energy share."""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["pointing_game", "energy_share", "mask_fraction", "near_lesion", "chance_hit_rate"]


def pointing_game(
    heatmap: np.ndarray,
    mask: np.ndarray,
    *,
    tolerance_mm: float = 0.0,
    spacing: Sequence[float] | None = None,
) -> bool:
    """Whether the heatmap's maximum falls inside the lesion (Zhang et al., 2016).

    ``heatmap`` and ``mask`` are (D, H, W) on the same grid. With ``tolerance_mm > 0`` a maximum within
    that physical distance of the lesion (``spacing`` (z, y, x) mm, 1 mm if unknown) also counts. A
    constant map (no maximum, e.g. an all-zero Grad-CAM) is a miss. When several voxels tie for the
    maximum, all of them must hit.
    """
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap {heatmap.shape} and mask {mask.shape} differ")
    lesion = mask > 0
    if not lesion.any():
        raise ValueError("pointing game needs a non-empty lesion mask")
    peak = heatmap.max()
    if peak <= heatmap.min():
        return False
    return bool(near_lesion(mask, tolerance_mm, spacing)[heatmap >= peak].all())


def near_lesion(mask: np.ndarray, tolerance_mm: float = 0.0, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Boolean (D, H, W): inside the lesion, or within ``tolerance_mm`` of it (``spacing`` (z, y, x) mm)."""
    lesion = mask > 0
    if tolerance_mm <= 0:
        return lesion
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(~lesion, sampling=tuple(spacing) if spacing else None) <= tolerance_mm


def chance_hit_rate(mask: np.ndarray, tolerance_mm: float = 0.0, spacing: Sequence[float] | None = None) -> float:
    """The pointing-game hit probability of a uniformly random point: the share of voxels near the lesion."""
    return float(near_lesion(mask, tolerance_mm, spacing).mean())


def energy_share(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the (non-negative) heatmap's total inside the mask, in [0, 1]; 0 for an all-zero map.

    A uniform map scores :func:`mask_fraction`, the chance level.
    """
    if heatmap.shape != mask.shape:
        raise ValueError(f"heatmap {heatmap.shape} and mask {mask.shape} differ")
    heat = np.clip(heatmap, 0, None).astype(np.float64)
    total = heat.sum()
    return float(heat[mask > 0].sum() / total) if total > 0 else 0.0


def mask_fraction(mask: np.ndarray) -> float:
    """Share of voxels inside the mask: the energy share of a uniform heatmap."""
    return float((mask > 0).mean())

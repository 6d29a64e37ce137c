"""Writing CAM results: a NIfTI heatmap aligned with the scan, an axial montage with the overlay and
a per-slice relevance plot (PNG + CSV).

Volumes here are ``[D, H, W]`` arrays in the axial orientation of :func:`nni_covid3d.data.io.read_scan`
(axes towards Superior, Posterior, patient-Left: MONAI axcodes ``"SPL"``).
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "AXIAL_AXCODES",
    "resize_map",
    "slice_affine",
    "oriented_affine",
    "save_heatmap_nifti",
    "slice_relevance",
    "save_slice_relevance",
    "save_montage",
    "display_window",
    "overlay_rgb",
]

AXIAL_AXCODES = "SPL"


def resize_map(heatmap: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resize of a (D, H, W) map to ``shape`` (values stay in the input's range)."""
    import torch
    import torch.nn.functional as F

    if tuple(heatmap.shape) == tuple(shape):
        return heatmap.astype(np.float32)
    tensor = torch.as_tensor(np.ascontiguousarray(heatmap), dtype=torch.float32)[None, None]
    out = F.interpolate(tensor, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=False)
    return out[0, 0].numpy()


def slice_affine(spacing: Sequence[float] | None) -> np.ndarray:
    """RAS affine of a ``[D, H, W]`` array with axes towards S, P, L and ``spacing`` (z, y, x) mm.

    Used for slice stacks (PNG / TIFF), whose files carry no geometry; 1 mm when spacing is unknown.
    """
    sz, sy, sx = spacing if spacing else (1.0, 1.0, 1.0)
    affine = np.zeros((4, 4))
    affine[2, 0] = sz  # D -> +S
    affine[1, 1] = -sy  # H -> posterior (-A)
    affine[0, 2] = -sx  # W -> patient left (-R)
    affine[3, 3] = 1.0
    return affine


def oriented_affine(source_affine: np.ndarray, source_shape: Sequence[int]) -> np.ndarray:
    """Affine of a volume after reorientation of ``source`` (affine, shape) to axial ``SPL`` order."""
    import nibabel as nib

    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(source_affine), nib.orientations.axcodes2ornt(AXIAL_AXCODES)
    )
    return source_affine @ nib.orientations.inv_ornt_aff(transform, tuple(source_shape))


def _to_source_orientation(volume: np.ndarray, source_affine: np.ndarray) -> np.ndarray:
    """Undo the axial (SPL) reorientation: an ``[D, H, W]`` array back to the source voxel order."""
    import nibabel as nib

    back = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt(AXIAL_AXCODES), nib.orientations.io_orientation(source_affine)
    )
    return np.ascontiguousarray(nib.orientations.apply_orientation(volume, back))


def save_heatmap_nifti(
    heatmap: np.ndarray,
    path: Path,
    *,
    source_nifti: Path | None = None,
    affine: np.ndarray | None = None,
) -> Path:
    """Write a heatmap given on the axial ``[D, H, W]`` volume grid as NIfTI.

    With ``source_nifti`` the map is put back into that file's voxel order and saved with its exact
    affine, so it overlays the source in any viewer; otherwise ``affine`` (e.g. from
    :func:`slice_affine`) is used for the axial array as is.
    """
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = heatmap.astype(np.float32)
    if source_nifti is not None:
        source = nib.load(str(source_nifti))
        data = _to_source_orientation(data, source.affine)
        if data.shape != tuple(source.shape[:3]):
            raise ValueError(f"heatmap of shape {data.shape} does not match {source_nifti} of shape {source.shape}")
        image = nib.Nifti1Image(data, source.affine)
        image.set_qform(source.affine, code=1)
        image.set_sform(source.affine, code=1)
    else:
        if affine is None:
            raise ValueError("save_heatmap_nifti needs source_nifti or affine")
        image = nib.Nifti1Image(data, affine)
    nib.save(image, str(path))
    return path


def slice_relevance(heatmap: np.ndarray) -> np.ndarray:
    """Mean heatmap value of each axial slice: (D, H, W) -> (D,)."""
    return heatmap.reshape(heatmap.shape[0], -1).mean(axis=1)


def save_slice_relevance(relevance: np.ndarray, png_path: Path, csv_path: Path, title: str = "") -> None:
    """Bar plot of per-slice relevance (PNG) and its values (CSV: slice, relevance, share of total)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = float(relevance.sum())
    share = relevance / total if total > 0 else np.zeros_like(relevance)
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slice", "relevance", "share"])
        for index, (value, part) in enumerate(zip(relevance, share)):
            writer.writerow([index, f"{value:.6f}", f"{part:.6f}"])
    fig, ax = plt.subplots(figsize=(8, 3), dpi=100)
    ax.bar(np.arange(len(relevance)), relevance, color="tab:red", width=0.9)
    ax.set_xlabel("axial slice (inferior -> superior)")
    ax.set_ylabel("mean relevance")
    ax.set_xlim(-0.5, len(relevance) - 0.5)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def display_window(volume: np.ndarray, kind: str) -> np.ndarray:
    """Gray levels in [0, 1] for display: a lung window (-1200..600 HU) for ``"hu"`` volumes, the
    stored 0..255 range for already-windowed 8-bit slices."""
    low, high = (-1200.0, 600.0) if kind == "hu" else (0.0, 255.0)
    return np.clip((volume - low) / (high - low), 0.0, 1.0)


def overlay_rgb(gray: np.ndarray, heat: np.ndarray, mask: np.ndarray | None = None, alpha: float = 0.45) -> np.ndarray:
    """One slice as RGB in [0, 1]: gray CT blended with the heatmap ("jet"), lesion outlined in green.

    ``gray`` and ``heat`` are (H, W) in [0, 1]; the heatmap is weighted by its own value, so
    irrelevant regions keep the plain CT.
    """
    from matplotlib import colormaps
    from scipy.ndimage import binary_dilation

    colours = colormaps["jet"](np.clip(heat, 0, 1))[..., :3]
    weight = alpha * np.clip(heat, 0, 1)[..., None] ** 0.5
    rgb = (1 - weight) * np.repeat(gray[..., None], 3, axis=2) + weight * colours
    if mask is not None and mask.any():
        inside = mask > 0
        # outline just outside the lesion, so thin lesions stay visible
        rgb[binary_dilation(inside) & ~inside] = (0.0, 1.0, 0.0)
    return np.clip(rgb, 0.0, 1.0)


def save_montage(
    volume: np.ndarray,
    heatmap: np.ndarray,
    path: Path,
    *,
    kind: str = "hu",
    mask: np.ndarray | None = None,
    n_slices: int = 12,
    columns: int = 6,
    title: str = "",
    alpha: float = 0.6,
) -> list[int]:
    """PNG montage of ``n_slices`` evenly spaced axial slices, CT in gray with the heatmap in colour
    (and the lesion mask's outline in green when given). Returns the slice indices shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if volume.shape != heatmap.shape or (mask is not None and mask.shape != volume.shape):
        raise ValueError(f"volume {volume.shape}, heatmap {heatmap.shape} and mask shapes differ")
    depth, height, width = volume.shape
    indices = sorted({int(round(i)) for i in np.linspace(0, depth - 1, min(n_slices, depth))})
    cols = min(columns, len(indices))
    rows = int(np.ceil(len(indices) / cols))
    gray = display_window(volume, kind)
    pad = 2
    mosaic = np.ones((rows * (height + pad), cols * (width + pad), 3))
    for n, index in enumerate(indices):
        r, c = divmod(n, cols)
        tile = overlay_rgb(gray[index], heatmap[index], None if mask is None else mask[index], alpha)
        mosaic[r * (height + pad): r * (height + pad) + height, c * (width + pad): c * (width + pad) + width] = tile
    scale = max(1.0, 160.0 / max(height, width))  # at least ~160 px per tile
    fig = plt.figure(figsize=(mosaic.shape[1] * scale / 100, mosaic.shape[0] * scale / 100 + (0.35 if title else 0)), dpi=100)
    ax = fig.add_axes((0, 0, 1, mosaic.shape[0] * scale / 100 / fig.get_figheight()))
    ax.imshow(mosaic, interpolation="nearest")
    ax.axis("off")
    for n, index in enumerate(indices):
        r, c = divmod(n, cols)
        ax.text(c * (width + pad) + 1, r * (height + pad) + 1, f"{index}", color="white", fontsize=7, va="top")
    if title:
        fig.text(0.01, 0.99, title, fontsize=8, va="top")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return indices

"""Synthetic chest CT phantoms in Hounsfield units, with lesion masks.

A phantom is an axial volume ``[D, H, W]`` (slice 0 inferior, rows anterior -> posterior, columns
patient-right -> patient-left) with a body outline, subcutaneous fat, two lungs with a gravity
density gradient, heart, spine, sternum, ribs, branching vessels and noise. Lesions are grown from a
smooth random field restricted to the lungs, thresholded at the quantile that gives the requested
involved-lung fraction, so size, count and shape vary from scan to scan:

* ``"ggo"``: bilateral, peripheral ground-glass opacities (COVID-19 pneumonia, -700..-300 HU);
* ``"consolidation"``: unilateral, dependent (posterior/basal) dense consolidation (-100..50 HU);
* ``"none"``: a normal chest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Anatomy", "Phantom", "random_anatomy", "make_phantom", "LESION_KINDS"]

LESION_KINDS = ("none", "ggo", "consolidation")
AIR_HU = -1000.0
WORK_SIZE = 128


@dataclass(frozen=True)
class Anatomy:
    """Per-patient body shape, shared by all scans of the patient (normalised units, image = [-1, 1]^2)."""

    body_rx: float
    body_ry: float
    lung_rx: float
    lung_ry: float
    lung_dx: float
    heart_r: float
    n_vessels: int
    seed: int


@dataclass
class Phantom:
    volume: np.ndarray  # int16 HU [D, H, W]
    mask: np.ndarray  # uint8 lesion mask [D, H, W]
    lungs: np.ndarray  # bool lung mask [D, H, W]
    spacing: tuple[float, float, float]  # (z, y, x) mm
    involvement: float  # lesion voxels / lung voxels


def random_anatomy(rng: np.random.Generator) -> Anatomy:
    return Anatomy(
        body_rx=rng.uniform(0.80, 0.92),
        body_ry=rng.uniform(0.58, 0.70),
        lung_rx=rng.uniform(0.26, 0.32),
        lung_ry=rng.uniform(0.40, 0.48),
        lung_dx=rng.uniform(0.36, 0.42),
        heart_r=rng.uniform(0.20, 0.26),
        n_vessels=int(rng.integers(10, 18)),
        seed=int(rng.integers(2**31)),
    )


def _ellipse(yy, xx, cy, cx, ry, rx):
    """Normalised elliptic radius (< 1 inside); broadcasts over leading axes of the centres/radii."""
    return np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], grid: int, sigma: float) -> np.ndarray:
    """A smooth random field ``[D, H, W]``: low-resolution Gaussian noise, blurred, upsampled trilinearly."""
    import torch
    from scipy.ndimage import gaussian_filter

    depth = shape[0]
    low = gaussian_filter(rng.standard_normal((max(depth // 4, 3), grid, grid)), sigma=(1.0, sigma, sigma), mode="wrap")
    low = (low - low.mean()) / (low.std() + 1e-6)
    up = torch.nn.functional.interpolate(
        torch.from_numpy(low.astype(np.float32))[None, None], size=shape, mode="trilinear", align_corners=False
    )
    return up[0, 0].numpy()


def make_phantom(
    rng: np.random.Generator,
    anatomy: Anatomy,
    *,
    size: int,
    n_slices: int,
    lesion: str,
    involvement: float,
    lesion_hu: float | None = None,
    spacing: tuple[float, float, float] = (5.0, 0.7, 0.7),
    noise_hu: float | None = None,
    distractors: bool = True,
) -> Phantom:
    """Build one phantom.

    Args:
        rng: the scan's random generator (lesions, noise, slice coverage).
        anatomy: the patient's body shape (:func:`random_anatomy`).
        size: in-plane size (H = W = size).
        n_slices: number of axial slices D.
        lesion: one of :data:`LESION_KINDS`.
        involvement: target fraction of the affected lungs' volume covered by lesions (0..1).
        lesion_hu: lesion core density; drawn from the lesion kind's range when ``None``.
        distractors: add findings that are not the disease, in any class: small solid nodules, and
            thin dependent (posterior, basal) subpleural densities; they are not in the lesion mask.
    """
    if lesion not in LESION_KINDS:
        raise ValueError(f"lesion must be one of {LESION_KINDS}, got {lesion!r}")
    # Anatomy and lesions are drawn at <= WORK_SIZE in-plane and upsampled: drawing tens of shapes at
    # 512 x 512 per slice costs seconds, and the shapes are smooth anyway. Noise is added at full size.
    D, H, W = n_slices, min(size, WORK_SIZE), min(size, WORK_SIZE)
    arng = np.random.default_rng(anatomy.seed)  # anatomy details fixed per patient
    # Slice positions t in [0, 1] from the lung bases (0) to the apices (1); coverage varies per scan.
    t0, t1 = rng.uniform(-0.08, 0.05), rng.uniform(0.92, 1.06)
    t = np.linspace(t0, t1, D, dtype=np.float32)[:, None, None]
    yy, xx = np.meshgrid(np.linspace(-1, 1, H, dtype=np.float32), np.linspace(-1, 1, W, dtype=np.float32), indexing="ij")
    yy, xx = yy[None], xx[None]

    vol = np.full((D, H, W), AIR_HU, dtype=np.float32)
    body_scale = 1.0 - 0.12 * np.clip(t - 0.6, 0, None)  # the chest narrows towards the apices
    body = _ellipse(yy, xx, 0.02, 0.0, anatomy.body_ry * body_scale, anatomy.body_rx * body_scale)
    vol[np.broadcast_to(body < 1.0, vol.shape)] = -100.0  # subcutaneous fat
    inner = np.broadcast_to(body < 0.90, vol.shape)
    vol[inner] = 40.0  # muscle / mediastinum

    # Lungs: ellipses whose size follows a dome profile along z; the heart indents the left lung.
    profile = np.sqrt(np.clip(1.0 - ((t - 0.42) / 0.62) ** 2, 0.0, 1.0))
    profile = profile * np.clip((t + 0.06) / 0.12, 0.0, 1.0)  # diaphragm domes cut the bases
    lung_rel = []
    for side in (-1.0, 1.0):  # -1: patient right (image left), +1: patient left
        rel = _ellipse(yy, xx, 0.0, side * anatomy.lung_dx, anatomy.lung_ry * profile + 1e-3, anatomy.lung_rx * profile + 1e-3)
        lung_rel.append(rel)
    heart = _ellipse(yy, xx, -0.18, 0.10, anatomy.heart_r, anatomy.heart_r * 1.15) < np.where(t < 0.55, 1.0, 0.0)
    lungs = [(rel < 1.0) & ~heart for rel in lung_rel]
    lung_any = lungs[0] | lungs[1]
    lung_hu = -870.0 + 45.0 * yy + rng.normal(0, 8)  # dependent (posterior) lung is denser
    vol = np.where(lung_any, lung_hu, vol)

    # Bones: vertebral body with cortex, spinal canal, sternum, ribs around the lungs.
    spine = _ellipse(yy, xx, 0.50, 0.0, 0.10, 0.11)
    vol = np.where(np.broadcast_to(spine < 1.0, vol.shape), np.where(spine > 0.8, 700.0, 250.0), vol)
    canal = _ellipse(yy, xx, 0.66, 0.0, 0.04, 0.045) < 1.0
    vol = np.where(np.broadcast_to(canal, vol.shape), 15.0, vol)
    sternum = (_ellipse(yy, xx, -0.55, 0.0, 0.035, 0.07) < 1.0) & (t > 0.3)
    vol = np.where(sternum, 450.0, vol)
    n_ribs = 7
    for k in range(2 * n_ribs):
        angle = np.pi * (0.15 + 0.7 * (k % n_ribs) / (n_ribs - 1)) + (np.pi if k >= n_ribs else 0.0)
        ry, rx = anatomy.body_ry * 0.86, anatomy.body_rx * 0.86
        cy, cx = -np.cos(angle) * ry, np.sin(angle) * rx
        visible = np.sin(2 * np.pi * (t * 5.0 + 0.13 * k + arng.uniform(0, 1))) > 0.35
        rib = (_ellipse(yy, xx, cy, cx, 0.03, 0.045) < 1.0) & visible
        vol = np.where(rib, 650.0, vol)

    # Vessels: tubes from the hila outwards, drawn as discs whose centre moves with z.
    vessels = np.zeros((D, H, W), dtype=bool)
    for v in range(2 * anatomy.n_vessels):
        side = -1.0 if v % 2 == 0 else 1.0
        ta, tb = sorted(arng.uniform(0.0, 1.0, 2))
        start = np.array([arng.uniform(-0.1, 0.15), side * arng.uniform(0.15, 0.25)])
        angle = arng.uniform(0, 2 * np.pi)
        end = start + arng.uniform(0.2, 0.4) * np.array([np.sin(angle), side * abs(np.cos(angle))])
        radius = arng.uniform(0.012, 0.03)
        frac = np.clip((t - ta) / max(tb - ta, 1e-3), 0, 1)
        cy = start[0] + (end[0] - start[0]) * frac
        cx = start[1] + (end[1] - start[1]) * frac
        inside = (t >= ta) & (t <= tb)
        vessels |= (((yy - cy) ** 2 + (xx - cx) ** 2) < (radius * (1.0 - 0.5 * frac)) ** 2) & inside
    vessels &= lung_any
    vol = np.where(vessels, 30.0, vol)

    if distractors:
        vol = _add_distractors(rng, vol, lung_any, lung_rel, lungs, yy, t, size=size, spacing=spacing)

    # Lesions.
    mask = np.zeros((D, H, W), dtype=bool)
    if lesion != "none" and involvement > 0:
        if lesion == "ggo":
            target = lungs[0] | lungs[1]  # bilateral
            rho = np.minimum(np.where(lungs[0], lung_rel[0], 9), np.where(lungs[1], lung_rel[1], 9))
            bias = 0.9 * np.clip(rho, 0, 1) ** 2  # peripheral, subpleural
            core = lesion_hu if lesion_hu is not None else rng.uniform(-700.0, -300.0)
        else:
            side = int(rng.integers(2))
            target = lungs[side]  # unilateral
            bias = 0.5 * yy + 0.5 * (1.0 - t)  # dependent and basal
            core = lesion_hu if lesion_hu is not None else rng.uniform(-100.0, 50.0)
        grid = int(rng.integers(8, 18))  # blob size / count vary
        field = _smooth_field(rng, (D, H, W), grid=grid, sigma=1.2) + bias
        # One threshold per affected lung, so bilateral disease involves both lungs alike.
        parts = [lungs[0] & target, lungs[1] & target]
        threshold = np.full((D, H, W), np.inf, dtype=np.float32)
        for part in parts:
            if part.any():
                threshold[part] = np.quantile(field[part], 1.0 - float(np.clip(involvement, 0.0, 1.0)))
        if np.isfinite(threshold).any():
            alpha = 1.0 / (1.0 + np.exp(-(field - threshold) / 0.08))
            alpha = np.where(target, alpha, 0.0)
            texture = rng.normal(0.0, 25.0, size=(D, H, W)).astype(np.float32)
            lesion_values = core + texture
            vol = np.where(alpha > 0.02, vol + alpha * (lesion_values - vol), vol)
            mask = (alpha > 0.5) & target

    if size != W:
        vol, alpha_mask, lung_any = _upsample(vol, mask, np.broadcast_to(lung_any, vol.shape), size)
        mask = alpha_mask
    else:
        lung_any = np.broadcast_to(lung_any, vol.shape).copy()
    sigma = noise_hu if noise_hu is not None else rng.uniform(10.0, 30.0)
    vol = vol + rng.normal(0.0, sigma, size=vol.shape).astype(np.float32)
    vol = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)
    lung_total = int(lung_any.sum())
    involvement_all = float(mask.sum() / lung_total) if lung_total else 0.0
    return Phantom(vol, mask.astype(np.uint8), lung_any, spacing, involvement_all)


def _add_distractors(rng, vol, lung_any, lung_rel, lungs, yy, t, *, size, spacing):
    """Benign look-alikes: 0-3 solid nodules (3-7 mm) and, in half the scans, a thin dependent
    subpleural density at the lung bases (posterior, -500..-250 HU)."""
    D, H, W = vol.shape
    candidates = np.argwhere(lung_any)
    mm_per_unit = spacing[1] * size / 2.0  # normalised image units -> mm
    for _ in range(int(rng.integers(0, 4))):
        if not len(candidates):
            break
        z0, y0, x0 = candidates[rng.integers(len(candidates))]
        radius_mm = rng.uniform(3.0, 7.0)
        for k in range(D):
            dz = abs(k - z0) * spacing[0]
            if dz >= radius_mm:
                continue
            r = np.sqrt(radius_mm**2 - dz**2) / mm_per_unit
            disc = ((yy[0] - (2 * y0 / (H - 1) - 1)) ** 2 + (np.linspace(-1, 1, W)[None] - (2 * x0 / (W - 1) - 1)) ** 2) < r**2
            vol[k] = np.where(disc & lung_any[k], rng.uniform(0.0, 60.0), vol[k])
    if rng.uniform() < 0.5:
        depth = rng.uniform(0.85, 0.93)
        for side in range(2):
            band = lungs[side] & (lung_rel[side] > depth) & (yy > 0.15) & (t < 0.45)
            vol = np.where(band, vol + 0.7 * (rng.uniform(-500.0, -250.0) - vol), vol)
    return vol


def _upsample(vol: np.ndarray, mask: np.ndarray, lungs: np.ndarray, size: int):
    """Bilinear in-plane upsampling of the HU volume; masks by thresholding their upsampled fraction."""
    import torch

    def up(array: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[:, None]
        return torch.nn.functional.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()

    return up(vol), up(mask) > 0.5, up(lungs) > 0.5

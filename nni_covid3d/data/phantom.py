"""Synthetic chest CT phantoms in Hounsfield units, with lesion masks.

A phantom is an axial volume ``[D, H, W]`` (slice 0 inferior, rows anterior -> posterior, columns
patient-right -> patient-left) with a body outline, subcutaneous fat, two lungs with a gravity
density gradient, heart, spine, sternum, ribs, branching vessels and noise. Two families:

**Shape phantoms** (:func:`make_shape_phantom`, the default of the synthetic datasets): the class
lies in the 3D shape and place of abnormal tissue, not in how much of it there is or how dense it
is. Every scan, whatever its class, gets a :class:`TissueBudget` (ground-glass-density voxels,
-675..-325 HU, and consolidation-density voxels, -110..70 HU, as fractions of its lung volume) drawn
from one distribution, and exactly that many voxels of each density; their HU values are a fixed
function of their rank inside each structure (denser towards its core), so the values' distribution
is the same whatever the shape. The class (a :data:`PATTERNS` entry) decides where the budgets go:

* ``"covid"``: ground glass as bilateral, peripheral, multifocal rounded blobs, lower-zone
  predominant, part of the consolidation as their dense cores (the lesion mask); the rest of the
  consolidation as look-alikes (below);
* ``"pneumonia"``: consolidation as one unilateral lobar / segmental region with air bronchograms,
  ground glass as a thin halo around it (both the lesion mask) and as look-alikes;
* ``"normal"``: both budgets as look-alikes that are not disease: dependent subpleural bands,
  fissures, thickened vessels and perivascular partial-volume rims, small solid nodules.

Nuisances are drawn the same way for every class: body and lung size, field of view (the body's
size in the image follows the pixel spacing), patient position (shift, in-plane rotation), slice
coverage and count, HU calibration offset, lung density, noise. Edges between abnormal tissue and
lung are sharp at every size (a blurred edge would make thin structures show in the histogram). The
histogram is blind to the class only at the phantom's own in-plane size: resampled, edge pixels
average tissue and lung, and thin look-alikes have more edge per voxel than lesions.

**Intensity phantoms** (:func:`make_phantom`, ``phantom="intensity"``): lesions grown from a smooth
random field, thresholded at the quantile that gives the requested involved-lung fraction; the class
shows in the intensity histogram as much as in the shape:

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


@dataclass
class _Chest:
    """A rendered chest without disease, at the working resolution ``[D, H, W]``."""

    vol: np.ndarray  # float32 HU [D, H, W]
    lungs: list[np.ndarray]  # per side (patient right, left): bool [D, H, W]
    lung_rel: list[np.ndarray]  # per side: normalised elliptic radius (0 centre, 1 pleura) [D, H, W]
    lung_any: np.ndarray  # bool [D, H, W]
    vessels: np.ndarray  # bool [D, H, W]
    t: np.ndarray  # slice height [D, 1, 1]: 0 lung bases, 1 apices
    yy: np.ndarray  # anatomical rows [1 or D, H, W]: -1 anterior, +1 posterior
    xx: np.ndarray  # anatomical columns [1 or D, H, W]: -1 patient right, +1 patient left


def _render_chest(rng: np.random.Generator, anatomy: Anatomy, D: int, H: int, W: int, pose: "_Pose | None" = None) -> _Chest:
    """Body, lungs, bones and vessels; ``pose`` places the patient in the image (centred and upright when ``None``)."""
    arng = np.random.default_rng(anatomy.seed)  # anatomy details fixed per patient
    # Slice positions t in [0, 1] from the lung bases (0) to the apices (1); coverage varies per scan.
    t0, t1 = rng.uniform(-0.08, 0.05), rng.uniform(0.92, 1.06)
    t = np.linspace(t0, t1, D, dtype=np.float32)[:, None, None]
    yy, xx = np.meshgrid(np.linspace(-1, 1, H, dtype=np.float32), np.linspace(-1, 1, W, dtype=np.float32), indexing="ij")
    yy, xx = yy[None], xx[None]
    if pose is not None:
        yy, xx = pose.to_anatomy(yy, xx)

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

    return _Chest(vol, lungs, lung_rel, lung_any, vessels, t, yy, xx)


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
    chest = _render_chest(rng, anatomy, D, H, W)
    vol, lungs, lung_rel, lung_any, yy, t = chest.vol, chest.lungs, chest.lung_rel, chest.lung_any, chest.yy, chest.t

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


# ------------------------------------------------------------------------------- shape phantoms
#: Class patterns of the shape phantoms: where and in what shape the abnormal-density tissue lies.
PATTERNS = ("normal", "covid", "pneumonia")
#: A scan's ground-glass core density is drawn from this range; its voxels spread ``GGO_SPREAD_HU``
#: around the core by their rank inside their structure (denser towards the structure's core).
GGO_CORE_HU = (-600.0, -400.0)
GGO_SPREAD_HU = 150.0
CONSOLIDATION_CORE_HU = (-60.0, 20.0)
CONSOLIDATION_SPREAD_HU = 100.0
TEXTURE_HU = 20.0  # per-voxel texture of abnormal tissue
HU_OFFSET = 20.0  # per-scan calibration offset, drawn in +-HU_OFFSET
GGO_SHARE = (0.55, 0.80)  # ground-glass share of a scan's abnormal tissue
REFERENCE_FOV_MM = 350.0  # field of view at which the body has its Anatomy size
LUNG_HEIGHT_MM = 250.0  # bases (t = 0) to apices (t = 1)
#: Most abnormal tissue a scan can carry (fraction of its lungs): the rest holds vessels and look-alikes' gaps.
MAX_BUDGET = 0.9
_GGO, _CONSOLIDATION = 1, 2


@dataclass(frozen=True)
class TissueBudget:
    """A scan's abnormal-density tissue as fractions of its lung volume; drawn alike for every class."""

    ggo: float  # ground-glass density (GGO_CORE_HU +- GGO_SPREAD_HU / 2)
    consolidation: float  # consolidation density (CONSOLIDATION_CORE_HU +- CONSOLIDATION_SPREAD_HU / 2)


def draw_budget(rng: np.random.Generator, total: tuple[float, float]) -> TissueBudget:
    """Abnormal tissue of ``U(total)`` of the lungs, split ground glass / consolidation by ``GGO_SHARE``."""
    amount, share = rng.uniform(*total), rng.uniform(*GGO_SHARE)
    return TissueBudget(ggo=float(amount * share), consolidation=float(amount * (1.0 - share)))


@dataclass(frozen=True)
class _Pose:
    """Where the patient lies in the image: anatomy = rotate(image - shift) / zoom."""

    zoom: float
    dy: float
    dx: float
    angle: float  # radians

    def to_anatomy(self, yy: np.ndarray, xx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.cos(self.angle), np.sin(self.angle)
        y, x = yy - self.dy, xx - self.dx
        return ((c * y - s * x) / self.zoom).astype(np.float32), ((s * y + c * x) / self.zoom).astype(np.float32)


def make_shape_phantom(
    rng: np.random.Generator,
    anatomy: Anatomy,
    *,
    size: int,
    n_slices: int,
    pattern: str,
    budget: TissueBudget,
    extent: float | None = None,
    spacing: tuple[float, float, float] = (5.0, 0.7, 0.7),
    noise_hu: float | None = None,
) -> Phantom:
    """Build one shape phantom (module docstring): ``budget`` placed in the shapes of ``pattern``.

    Args:
        rng: the scan's random generator (pose, coverage, shapes, densities, noise).
        anatomy: the patient's body shape (:func:`random_anatomy`).
        size: in-plane size (H = W = size).
        n_slices: number of axial slices D.
        pattern: one of :data:`PATTERNS`.
        budget: the scan's abnormal tissue (:func:`draw_budget`); the same distribution for every class.
        extent: ``"covid"`` only: fraction of the lungs the lesions cover, their ground glass filling
            it patchily when the budget is smaller (MosMedData grades); ``None``: solid lesions made of
            all the ground glass and their dense cores.
        spacing: (z, y, x) mm; the in-plane spacing sets the field of view, hence the body's size in the image.
        noise_hu: noise standard deviation; drawn from 10..30 HU when ``None``.

    Returns:
        a :class:`Phantom` whose mask marks the disease (``"covid"``, ``"pneumonia"``), never the look-alikes.
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern must be one of {PATTERNS}, got {pattern!r}")
    if extent is not None and pattern != "covid":
        raise ValueError("extent applies to the 'covid' pattern only")
    if min(budget.ggo, budget.consolidation) < 0 or budget.ggo + budget.consolidation > MAX_BUDGET:
        raise ValueError(f"budget must be non-negative and at most {MAX_BUDGET} of the lungs in all, got {budget}")
    D, H, W = n_slices, min(size, WORK_SIZE), min(size, WORK_SIZE)
    zoom = float(np.clip(REFERENCE_FOV_MM / (size * spacing[1]), 0.7, 1.05))
    pose = _Pose(zoom, rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05), np.radians(rng.uniform(-6.0, 6.0)))
    chest = _render_chest(rng, anatomy, D, H, W, pose)
    cores = {_GGO: rng.uniform(*GGO_CORE_HU), _CONSOLIDATION: rng.uniform(*CONSOLIDATION_CORE_HU)}
    offset = rng.uniform(-HU_OFFSET, HU_OFFSET)
    sigma = noise_hu if noise_hu is not None else rng.uniform(10.0, 30.0)
    spreads = {_GGO: GGO_SPREAD_HU, _CONSOLIDATION: CONSOLIDATION_SPREAD_HU}

    placer = _Placer(rng, chest, pixel_mm=REFERENCE_FOV_MM / (max(W - 1, 1) * zoom))
    lung_voxels = int(chest.lung_any.sum())
    n_ggo, n_cons = (int(round(f * lung_voxels)) for f in (budget.ggo, budget.consolidation))
    if pattern == "covid":
        n_ggo, n_cons = placer.covid_lesions(n_ggo, n_cons, None if extent is None else int(round(extent * lung_voxels)))
    elif pattern == "pneumonia":
        n_cons, n_ggo = placer.lobar_pneumonia(n_cons, n_ggo)
    placer.look_alikes(_CONSOLIDATION, n_cons)
    placer.look_alikes(_GGO, n_ggo)

    # Paint at full size: the anatomy is interpolated, the abnormal tissue's labels and ranks are not,
    # so its edges stay sharp and its values keep their distribution whatever its shape.
    vol, label, rank, mask, lungs = chest.vol, placer.label, placer.rank, placer.lesion, np.broadcast_to(chest.lung_any, chest.vol.shape)
    if size != W:
        vol = _resize(vol, size, "bilinear")
        label, rank = np.rint(_resize(label, size, "nearest")).astype(np.int8), _resize(rank, size, "nearest")
        mask, lungs = _resize(mask, size, "nearest") > 0.5, _resize(lungs, size, "nearest") > 0.5
    vol = vol.copy()
    for kind in (_GGO, _CONSOLIDATION):
        where = label == kind
        values = cores[kind] + spreads[kind] * (rank[where] - 0.5)
        vol[where] = values + rng.normal(0.0, TEXTURE_HU, size=values.shape)
    vol = vol + offset + rng.normal(0.0, sigma, size=vol.shape).astype(np.float32)
    vol = np.clip(np.rint(vol), -1024, 3071).astype(np.int16)
    lung_total = int(lungs.sum())
    involvement = float(mask.sum() / lung_total) if lung_total else 0.0
    return Phantom(vol, mask.astype(np.uint8), np.ascontiguousarray(lungs), spacing, involvement)


def _resize(array: np.ndarray, size: int, mode: str) -> np.ndarray:
    """In-plane resize of ``[D, h, w]`` to ``[D, size, size]``."""
    import torch

    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[:, None]
    kwargs = {"align_corners": False} if mode == "bilinear" else {}
    return torch.nn.functional.interpolate(tensor, size=(size, size), mode=mode, **kwargs)[:, 0].numpy()


def _in_plane_distance(mask: np.ndarray) -> np.ndarray:
    """Per slice, the in-plane distance (pixels) of every voxel to the nearest ``True`` voxel of ``mask``
    (``inf`` in slices without one)."""
    from scipy.ndimage import distance_transform_edt

    out = np.full(mask.shape, np.inf, dtype=np.float32)
    for k, plane in enumerate(mask):
        if plane.any():
            out[k] = distance_transform_edt(~plane)
    return out


class _Placer:
    """Places exact voxel counts of abnormal tissue into a chest's free lung parenchyma.

    Every structure is the ``n`` highest-scoring free voxels of a score map (``-inf``: not allowed),
    so counts are exact whatever the shape; ``rank`` holds each voxel's score quantile inside its
    structure (0..1, 1 at the core), which sets its density.
    """

    def __init__(self, rng: np.random.Generator, chest: _Chest, *, pixel_mm: float):
        from scipy.ndimage import distance_transform_edt

        self.rng, self.chest = rng, chest
        D, H, W = chest.vol.shape
        self.shape = (D, H, W)
        t = chest.t[:, 0, 0]
        self.slice_mm = float(LUNG_HEIGHT_MM * (t[1] - t[0])) if D > 1 else 10.0
        self.pixel_mm = pixel_mm
        self.free = chest.lung_any & ~chest.vessels
        self.label = np.zeros(self.shape, dtype=np.int8)
        self.rank = np.zeros(self.shape, dtype=np.float32)
        self.lesion = np.zeros(self.shape, dtype=bool)
        self.thick_vessels = np.zeros(self.shape, dtype=bool)
        self.yy = np.broadcast_to(chest.yy, self.shape)
        self.xx = np.broadcast_to(chest.xx, self.shape)
        self.t = np.broadcast_to(chest.t, self.shape)
        self.grid = np.indices(self.shape, dtype=np.float32)
        # In-plane distance (pixels) to the lung's border.
        self.pleura = np.stack([distance_transform_edt(plane) for plane in chest.lung_any]).astype(np.float32)
        self.lung_sides = chest.lungs

    # ---------------------------------------------------------------------------- primitives
    def place(self, score: np.ndarray, n: int, kind: int, *, lesion: bool = False, allowed: np.ndarray | None = None) -> np.ndarray:
        """Take the ``n`` highest-scoring free voxels (fewer if fewer are allowed); returns their mask."""
        ok = self.free & np.isfinite(score)
        if allowed is not None:
            ok &= allowed
        candidates = np.flatnonzero(ok)
        taken = np.zeros(self.shape, dtype=bool)
        if n <= 0 or not len(candidates):
            return taken
        values = score.reshape(-1)[candidates]
        if n < len(candidates):
            keep = np.argpartition(-values, n - 1)[:n]
            candidates, values = candidates[keep], values[keep]
        order = np.argsort(np.argsort(values, kind="stable"), kind="stable")
        flat = taken.reshape(-1)
        flat[candidates] = True
        self.label.reshape(-1)[candidates] = kind
        self.rank.reshape(-1)[candidates] = (order + 0.5) / len(candidates)
        self.free.reshape(-1)[candidates] = False
        if lesion:
            self.lesion.reshape(-1)[candidates] = True
        return taken

    def distance_mm(self, z: float, y: float, x: float) -> np.ndarray:
        """Physical distance of every voxel to voxel position ``(z, y, x)``."""
        gz, gy, gx = self.grid
        return np.sqrt(((gz - z) * self.slice_mm) ** 2 + ((gy - y) * self.pixel_mm) ** 2 + ((gx - x) * self.pixel_mm) ** 2)

    def pick(self, where: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray | None:
        """A random voxel index ``(z, y, x)`` of ``where``, weighted; ``None`` if empty."""
        cells = np.argwhere(where)
        if not len(cells):
            return None
        p = None
        if weights is not None:
            w = np.clip(weights[where], 1e-6, None).astype(np.float64)
            p = w / w.sum()
        return cells[self.rng.choice(len(cells), p=p)].astype(np.float32)

    def blobs(self, where: np.ndarray, count: int, radius_mm: tuple[float, float], weights: np.ndarray | None = None,
              *, bounded: bool = False) -> np.ndarray:
        """Score of ``count`` rounded blobs centred in ``where``: max over blobs of ``1 - distance / radius``
        (``bounded``: ``-inf`` beyond each radius)."""
        score = np.full(self.shape, -np.inf, dtype=np.float32)
        for _ in range(count):
            centre = self.pick(where, weights)
            if centre is None:
                break
            radius = max(self.rng.uniform(*radius_mm), 1e-3)
            cone = 1.0 - self.distance_mm(*centre) / radius
            if bounded:
                cone[cone <= 0] = -np.inf
            score = np.maximum(score, cone)
        return score

    def thicken(self, n: int, kind: int, near: np.ndarray, *, lesion: bool = False) -> int:
        """Put ``n`` voxels next to ``near`` (nearest first, anywhere in the lungs); returns the shortfall."""
        from scipy.ndimage import distance_transform_edt

        if n <= 0:
            return 0
        if not near.any():
            near = self.label == kind
        if not near.any():
            score = -self.pleura  # nothing placed yet: start at the pleura
        else:
            score = -distance_transform_edt(~near, sampling=(self.slice_mm, self.pixel_mm, self.pixel_mm)).astype(np.float32)
        return n - int(self.place(score, n, kind, lesion=lesion).sum())

    # ------------------------------------------------------------------------------ disease
    def covid_lesions(self, n_ggo: int, n_cons: int, n_extent: int | None) -> tuple[int, int]:
        """Bilateral, peripheral, lower-zone rounded ground-glass blobs, a share of the consolidation
        as their dense cores; returns the (ground glass, consolidation) left over.

        ``n_extent`` (voxels) sets the lesions' extent, filled patchily when the tissue is short."""
        n_core = int(round(self.rng.uniform(0.3, 0.8) * n_cons))
        n_region = n_ggo + n_core if n_extent is None else n_extent
        share = self.rng.uniform(0.35, 0.65)
        region = np.zeros(self.shape, dtype=bool)
        core_score = np.full(self.shape, -np.inf, dtype=np.float32)
        radius_mm = (max(15.0, 3.0 * self.pixel_mm), max(35.0, 6.0 * self.pixel_mm))
        mean_volume = 4.0 / 3.0 * np.pi * np.mean(radius_mm) ** 3 / (self.slice_mm * self.pixel_mm**2)
        lower = np.clip(1.15 - self.t, 0.05, None) ** 2
        for side, n_side in enumerate((int(round(share * n_region)), n_region - int(round(share * n_region)))):
            lung = self.lung_sides[side] & self.free
            peripheral = lung & (self.pleura <= np.maximum(2.0, 0.25 * self.pleura[lung].max(initial=0.0)))
            count = int(np.clip(round(2.0 * n_side / mean_volume), 1, 8))  # blobs lie half outside the lung
            score = self.blobs(peripheral, count, radius_mm, lower)
            taken = self.place(score, n_side, 0, allowed=lung)
            region |= taken
            core_score = np.where(taken, score, core_score)
        self.lesion |= region
        self.free |= region  # the region's voxels were reserved with label 0
        cores = self.place(np.where(region, core_score, -np.inf), n_core, _CONSOLIDATION, lesion=True)
        if n_extent is None:  # solid lesions: ground glass around the cores fills the region
            rest = region & ~cores
            self._relabel(rest, core_score, _GGO)
            self.free &= ~rest
            return n_ggo - int(rest.sum()), n_cons - int(cores.sum())
        # Patchy lesions: ground glass on part of the region, in a fine mottled pattern, denser at the
        # cores; the unfilled voxels stay free.
        patches = _smooth_field(self.rng, self.shape, grid=max(12, self.shape[1] // 3), sigma=0.8) + 2.0 * np.where(region, core_score, 0.0)
        fill = min(n_ggo, int((region & ~cores).sum()))
        taken = self.place(np.where(region, patches, -np.inf), fill, _GGO, lesion=True)
        return n_ggo - int(taken.sum()), n_cons - int(cores.sum())

    def _relabel(self, where: np.ndarray, score: np.ndarray, kind: int) -> None:
        """Give the voxels of ``where`` (already taken) the label ``kind`` and ranks from ``score``."""
        idx = np.flatnonzero(where)
        if not len(idx):
            return
        order = np.argsort(np.argsort(score.reshape(-1)[idx], kind="stable"), kind="stable")
        self.label.reshape(-1)[idx] = kind
        self.rank.reshape(-1)[idx] = (order + 0.5) / len(idx)

    def lobar_pneumonia(self, n_cons: int, n_ggo: int) -> tuple[int, int]:
        """One lung's lobar / segmental consolidation with air bronchograms, and a ground-glass halo
        around it; returns the (consolidation, ground glass) left over."""
        rng, t, yy = self.rng, self.t, self.yy
        side = int(rng.integers(2))
        lung = self.lung_sides[side]
        fissure = rng.uniform(0.42, 0.55) + rng.uniform(0.25, 0.4) * yy  # oblique fissure: t of the lobe border
        lobe_kind = rng.choice(3, p=[0.5, 0.3, 0.2])
        lower = t < fissure
        lobe = [lower, ~lower & ~((yy < -0.05) & (t < fissure + 0.2)), ~lower & (yy < -0.05) & (t < fissure + 0.2)][lobe_kind]
        lobe = lung & lobe
        if not (lobe & self.free).any():
            lobe = lung
        seed = self.pick(lobe & self.free & (self.pleura <= 2.5))
        if seed is None:
            seed = self.pick(lobe & self.free)
        if seed is None:
            return n_cons, n_ggo
        score = 3.0 * lobe + 1.0 - self.distance_mm(*seed) / 80.0
        score = score + 0.25 * _smooth_field(rng, self.shape, grid=10, sigma=1.0)
        # Air bronchograms: branching airways from the lobe's centre to the seed stay aerated.
        centre = np.argwhere(lobe).mean(axis=0)
        airways = np.zeros(self.shape, dtype=bool)
        start = centre + 0.6 * (centre - seed)
        for _ in range(int(rng.integers(2, 4))):
            end = seed + rng.normal(0.0, 1.0, 3) * np.array([1.0, 3.0, 3.0])
            airways |= self._tube(start, end, radius=0.6)
            start = start + 0.5 * (end - start)
        region = self.place(np.where(airways, -np.inf, score).astype(np.float32), n_cons, _CONSOLIDATION, lesion=True, allowed=lung)
        n_cons -= int(region.sum())
        # Halo: up to a thin shell around the consolidation, a share of the ground glass.
        from scipy.ndimage import distance_transform_edt

        dist = distance_transform_edt(~region, sampling=(self.slice_mm, self.pixel_mm, self.pixel_mm)).astype(np.float32)
        shell = -np.where(dist <= 1.6 * self.pixel_mm, dist, np.inf)
        halo = self.place(shell, int(round(rng.uniform(0.15, 0.4) * n_ggo)), _GGO, lesion=True, allowed=lung)
        return n_cons, n_ggo - int(halo.sum())

    def _tube(self, a: np.ndarray, b: np.ndarray, *, radius: float) -> np.ndarray:
        """Voxels within ``radius`` (voxels; one slice counts as one voxel) of the segment ``a``-``b``."""
        p = self.grid.reshape(3, -1).T
        ab = b - a
        u = np.clip((p - a) @ ab / max(float(ab @ ab), 1e-6), 0.0, 1.0)
        d = np.linalg.norm(p - (a + u[:, None] * ab), axis=1)
        return (d <= radius).reshape(self.shape)

    # ------------------------------------------------------------------------------ look-alikes
    def look_alikes(self, kind: int, n: int) -> None:
        """Findings that are not the disease, in random shares: ground glass as dependent subpleural
        bands, fissures and perivascular rims; consolidation as small nodules, thickened vessels and
        dependent atelectasis at the pleura. What one cannot hold goes to the next."""
        if n <= 0:
            return
        # The last maker of each list can always take more: it gets what the others cannot hold.
        makers = ([self._fissures, self._rims, self._bands] if kind == _GGO
                  else [self._thick_vessels, self._atelectasis, self._nodules])
        wants = np.floor(self.rng.dirichlet(np.ones(len(makers))) * n).astype(int)
        wants[-1] += n - wants.sum()
        before = self.label == kind
        left = 0
        for maker, want in zip(makers, wants):
            left += want
            left -= maker(kind, left)
        self.thicken(left, kind, (self.label == kind) & ~before)

    def _bands(self, kind: int, n: int) -> int:
        """Thin subpleural bands parallel to the pleura, one pixel thick, a gap of one or two between
        layers: dependent and basal first, deeper layers before anterior ones."""
        order = self.yy - self.rng.uniform(0.5, 1.0) * self.t  # posterior and basal first
        score = np.full(self.shape, -np.inf, dtype=np.float32)
        for layer in range(12):
            ring = np.abs(self.pleura - (2.0 + 2.5 * layer)) < 0.5
            score = np.where(ring, order - 0.5 * layer, score)
        return int(self.place(score, n, kind).sum())

    def _fissures(self, kind: int, n: int) -> int:
        """An oblique fissure per lung: in each slice a thin line whose anteroposterior place moves with height."""
        rng = self.rng
        per_anatomy_unit = REFERENCE_FOV_MM / 2.0 / self.pixel_mm  # pixels per anatomical unit
        placed = 0
        for turn, side in enumerate(rng.permutation(2)):
            lung = self.lung_sides[side]
            if not lung.any():
                continue
            centre_x = float(self.xx[lung].mean())
            line = (self.t - rng.uniform(0.4, 0.6)) / rng.uniform(0.5, 0.8) + rng.uniform(-0.1, 0.1) * (self.xx - centre_x) ** 2 * 10
            near = np.abs(self.yy - line) * per_anatomy_unit < 0.5
            score = -np.abs(self.xx - centre_x)  # from the lung's middle outwards
            want = (n - placed) // 2 if turn == 0 else n - placed
            placed += int(self.place(np.where(near & lung, score, -np.inf), want, kind).sum())
        return placed

    def _rims(self, kind: int, n: int) -> int:
        """One-pixel partial-volume rims around the vessels (and around vessels thickened before)."""
        dist = _in_plane_distance(self.chest.vessels | self.thick_vessels)
        score = -np.where(dist <= 1.0, dist, np.inf)
        return int(self.place(score, n, kind).sum())

    def _nodules(self, kind: int, n: int) -> int:
        """Small solid nodules scattered in both lungs."""
        radius_mm = (1.0 * self.pixel_mm, 2.0 * self.pixel_mm)
        volume = max(4.0 / 3.0 * np.pi * (1.5 * self.pixel_mm) ** 3 / (self.slice_mm * self.pixel_mm**2), 1.0)
        placed = 0
        for _ in range(4):
            lung = self.chest.lung_any & self.free
            count = int(np.clip(np.ceil((n - placed) / volume), 1, 60))
            score = self.blobs(lung, count, radius_mm, bounded=True)
            placed += int(self.place(score, n - placed, kind).sum())
            if placed >= n:
                break
        return placed

    def _thick_vessels(self, kind: int, n: int) -> int:
        """A one-pixel collar around vessels: vessels that look thicker."""
        dist = _in_plane_distance(self.chest.vessels)
        score = -np.where(dist <= 1.0, dist, np.inf) - 0.1 * np.abs(self.xx)  # central (thicker) vessels first
        taken = self.place(score, n, kind)
        self.thick_vessels |= taken
        return int(taken.sum())

    def _atelectasis(self, kind: int, n: int) -> int:
        """Dependent atelectasis: the pleural-most pixel layer, posterior and basal first."""
        ring = (self.pleura < 1.2) & (self.yy > 0.1)
        return int(self.place(np.where(ring, self.yy - self.t, -np.inf), n, kind).sum())

"""Synthetic phantoms: plausible HU, class-specific lesions, determinism, real file formats; shape
phantoms carry the same abnormal tissue in every class, in class-specific shapes and places."""
from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image
from scipy.ndimage import binary_erosion

from nni_covid3d.data import load_dataset, read_mask, read_scan, write_synthetic_dataset
from nni_covid3d.data.phantom import PATTERNS, TissueBudget, make_phantom, make_shape_phantom, random_anatomy


def _phantom(lesion, involvement, seed=0, size=48):
    rng = np.random.default_rng(seed)
    return make_phantom(rng, random_anatomy(rng), size=size, n_slices=12, lesion=lesion, involvement=involvement)


def test_phantom_anatomy_in_hounsfield_units():
    p = _phantom("none", 0.0)
    v = p.volume
    assert v.dtype == np.int16 and v.shape == (12, 48, 48)
    assert abs(np.median(v[:, 0, :]) + 1000) < 40  # air around the body
    assert -900 < np.median(v[p.lungs]) < -780  # aerated lung
    assert (v > 400).mean() > 0.003  # bone (spine, ribs, sternum)
    assert p.mask.sum() == 0 and p.involvement == 0.0
    left, right = p.lungs[..., :24], p.lungs[..., 24:]
    assert left.sum() > 0 and right.sum() > 0  # two lungs


@pytest.mark.parametrize("lesion, low, high, bilateral", [("ggo", -700, -250, True), ("consolidation", -200, 100, False)])
def test_lesions_have_their_density_and_laterality(lesion, low, high, bilateral):
    p = _phantom(lesion, 0.15, seed=1)
    lesion_hu = np.median(p.volume[p.mask > 0])
    assert low < lesion_hu < high
    sides = [p.mask[..., :24].sum(), p.mask[..., 24:].sum()]
    assert (min(sides) > 0) == bilateral
    if bilateral:
        assert p.involvement == pytest.approx(0.15, abs=0.03)
    else:  # 15% of one lung
        assert 0.03 < p.involvement < 0.12


def test_involvement_and_lesion_contrast_vary():
    sizes = {round(_phantom("ggo", f, seed=s).involvement, 2) for s, f in enumerate([0.05, 0.1, 0.2])}
    assert len(sizes) == 3
    densities = {int(np.median(_phantom("ggo", 0.1, seed=s).volume[_phantom("ggo", 0.1, seed=s).mask > 0]) // 50) for s in range(4)}
    assert len(densities) >= 2


def _tree_digest(root):
    h = hashlib.sha1()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".xlsx"):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes() if path.suffix != ".gz" else nib.load(str(path)).get_fdata().tobytes())
    return h.hexdigest()


def test_deterministic_per_seed(tmp_path):
    kwargs = dict(n_patients=3, size=32, slices=(4, 6))
    a = write_synthetic_dataset("ccccii", tmp_path / "a", seed=7, **kwargs)
    b = write_synthetic_dataset("ccccii", tmp_path / "b", seed=7, **kwargs)
    c = write_synthetic_dataset("ccccii", tmp_path / "c", seed=8, **kwargs)
    assert _tree_digest(a) == _tree_digest(b) != _tree_digest(c)


def test_file_formats_match_the_real_releases(ccccii_root, mosmed_root, covidctset_root):
    png = next(ccccii_root.rglob("*.png"))
    with Image.open(png) as image:
        assert image.mode == "L" and image.size == (48, 48)
    study = next(mosmed_root.rglob("study_*.nii.gz"))
    nifti = nib.load(str(study))
    assert nifti.get_data_dtype() == np.int16 and len(nifti.shape) == 3 and not np.allclose(nifti.affine, np.eye(4))
    tif = tifffile.imread(next(covidctset_root.rglob("IM*.tif")))
    assert tif.dtype == np.uint16 and tif.min() < 100  # air: -1000 HU + 1024
    index = load_dataset("ccccii", ccccii_root)
    patients = {}
    for s in index.scans:
        patients.setdefault(s.patient_id, []).append(s)
    assert any(len(v) > 1 for v in patients.values())  # some patients have several scans
    assert len({len(s.paths) for s in index.scans}) > 3  # variable slice counts
    lesion_rows = (ccccii_root / "lesions_slices.csv").read_text().splitlines()
    assert lesion_rows[0] == "imgpath" and all(r.split("/")[0] in ("CP", "NCP") for r in lesion_rows[1:])


def test_classes_are_separable_by_lesion_statistics_but_overlap_in_size(ccccii_root):
    """CP lesions are denser than NCP ones; Normal scans have none; sizes vary inside each class."""
    index = load_dataset("ccccii", ccccii_root)
    stats = {"CP": [], "NCP": []}
    for scan in index.scans:
        if scan.mask_path is None:
            continue
        volume, _ = read_scan(scan.paths)
        mask = read_mask(scan.mask_path)
        stats[scan.label_name].append((volume[mask > 0].mean(), mask.mean()))
    assert min(d for d, _ in stats["CP"]) > max(d for d, _ in stats["NCP"])
    for values in stats.values():
        sizes = [s for _, s in values]
        assert max(sizes) > 1.5 * min(sizes)


def test_involvement_range_sets_lesion_extent(tmp_path):
    """A larger ``involvement`` range gives larger lesions; MosMed (graded) and bad ranges are refused."""
    def lesion_share(root):
        index = load_dataset("ccccii", root)
        shares = [read_mask(s.mask_path).mean() for s in index.scans if s.mask_path is not None]
        return float(np.median(shares))

    kwargs = dict(n_patients=6, seed=3, size=32, slices=(8, 10))
    small = write_synthetic_dataset("ccccii", tmp_path / "small", involvement=(0.02, 0.05), **kwargs)
    large = write_synthetic_dataset("ccccii", tmp_path / "large", involvement=(0.3, 0.4), **kwargs)
    assert lesion_share(large) > 3 * lesion_share(small)
    with pytest.raises(ValueError, match="mosmed"):
        write_synthetic_dataset("mosmed", tmp_path / "m", involvement=(0.1, 0.2), **kwargs)
    with pytest.raises(ValueError, match="0 < min <= max <= 1"):
        write_synthetic_dataset("ccccii", tmp_path / "bad", involvement=(0.4, 0.2), **kwargs)
    with pytest.raises(ValueError, match="at most 0.9"):
        write_synthetic_dataset("ccccii", tmp_path / "full", involvement=(0.5, 1.0), **kwargs)
    write_synthetic_dataset("ccccii", tmp_path / "full", involvement=(0.5, 1.0), phantom="intensity", **kwargs)


# ------------------------------------------------------------------------------- shape phantoms
BUDGET = TissueBudget(ggo=0.12, consolidation=0.05)
CROSS = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], dtype=bool)


def _shape_phantom(pattern, seed=0, size=48, **kwargs):
    rng = np.random.default_rng(seed)
    pixel = 0.72 * 512 / size
    return make_shape_phantom(rng, random_anatomy(rng), size=size, n_slices=16, pattern=pattern, budget=BUDGET,
                              spacing=(5.0, pixel, pixel), noise_hu=0.0, **kwargs)


def _densities(p):
    """Lung voxels at ground-glass and at consolidation density (without noise the two bands do not overlap)."""
    v = p.volume.astype(np.int32)
    return p.lungs & (v > -790) & (v < -220), p.lungs & (v >= -220) & (v < 250)


def _core_share(mask):
    """Share of ``mask``'s voxels whose four in-plane neighbours are in it too: 0 for lines, high for blobs."""
    return binary_erosion(mask, CROSS).sum() / max(int(mask.sum()), 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_shape_phantoms_carry_the_same_tissue_in_every_class(seed):
    """Same seed: same chest, pose and densities in every class; the budget's voxel counts exactly,
    and their HU values alike, whatever shape the class gives them."""
    phantoms = {pattern: _shape_phantom(pattern, seed) for pattern in PATTERNS}
    lung_voxels = int(phantoms["normal"].lungs.sum())
    counts = {pattern: tuple(int(m.sum()) for m in _densities(p)) for pattern, p in phantoms.items()}
    assert len(set(counts.values())) == 1, counts  # consolidation band: budget + vessels, as many in each
    assert counts["normal"][0] == round(BUDGET.ggo * lung_voxels)
    for band in range(2):
        values = {pattern: p.volume[_densities(p)[band]] for pattern, p in phantoms.items()}
        quantiles = np.array([np.percentile(v, [10, 50, 90]) for v in values.values()])
        assert np.ptp(quantiles, axis=0).max() < 10.0, quantiles


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_shape_phantom_classes_differ_in_shape_and_place(seed):
    from scipy.ndimage import distance_transform_edt

    normal, covid, pneumonia = (_shape_phantom(pattern, seed) for pattern in PATTERNS)
    # COVID: ground glass in rounded blobs; normal: the same ground glass as lines and rims.
    assert _core_share(_densities(covid)[0]) > 0.15 and _core_share(_densities(normal)[0]) < 0.05
    # Common pneumonia: consolidation as one solid region; normal: nodules, collars, pleural layers;
    # COVID: small dense cores in its blobs, and the same look-alikes.
    assert _core_share(_densities(pneumonia)[1]) > 0.25
    assert max(_core_share(_densities(normal)[1]), _core_share(_densities(covid)[1])) < 0.2
    # Masks mark the disease only: bilateral COVID lesions (all the ground glass, some consolidation),
    # unilateral pneumonia, none in a normal scan.
    ggo, dense = _densities(covid)
    assert normal.mask.sum() == 0 and (covid.mask[ggo] > 0).all() and 0 < (covid.mask[dense] > 0).sum() < dense.sum()
    sides = [(m[..., :24].sum(), m[..., 24:].sum()) for m in (covid.mask, pneumonia.mask)]
    assert min(sides[0]) > 0.25 * sum(sides[0]) and min(sides[1]) == 0 < max(sides[1])
    # COVID lesions lie basal, their cores (the blobs' centres) peripheral.
    lesion, lungs = covid.mask > 0, covid.lungs
    pleura = np.stack([distance_transform_edt(plane) for plane in lungs])
    height = np.broadcast_to(np.arange(lungs.shape[0])[:, None, None], lungs.shape)
    assert pleura[lesion & dense].mean() < pleura[lungs].mean() and height[lesion].mean() < height[lungs].mean()


def test_shape_phantom_extent_spreads_the_same_tissue():
    """MosMed grades: a larger lesion extent holds the same ground glass, patchily."""
    for extent in (0.1, 0.6):
        p = _shape_phantom("covid", extent=extent)
        assert p.involvement == pytest.approx(extent, abs=0.02)
        assert _densities(p)[0].sum() == round(BUDGET.ggo * p.lungs.sum())
    with pytest.raises(ValueError, match="covid"):
        _shape_phantom("normal", extent=0.3)
    with pytest.raises(ValueError, match="pattern"):
        _shape_phantom("ggo")
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="budget"):  # more tissue than the lungs can hold
        make_shape_phantom(rng, random_anatomy(rng), size=32, n_slices=8, pattern="normal", budget=TissueBudget(0.6, 0.4))


def test_shape_phantoms_at_full_size_keep_sharp_edges():
    """Above the working size the anatomy is interpolated, the abnormal tissue is not: lesion voxels
    keep their density to the edge, and the lung just outside keeps lung density (a blurred edge
    would show how thin a structure is in the histogram)."""
    from scipy.ndimage import binary_dilation

    p = _shape_phantom("covid", size=256)
    lesion = p.mask > 0
    inner_lung = binary_erosion(p.lungs, np.ones((1, 5, 5), dtype=bool))  # away from the chest wall's partial volume
    ring = binary_dilation(lesion, CROSS) & ~lesion & inner_lung
    assert p.volume[lesion].min() > -790
    assert ring.sum() > 1000 and (p.volume[ring] < -790).mean() > 0.75


def test_dataset_phantom_families(tmp_path, capsys):
    from nni_covid3d.cli import main

    kwargs = dict(n_patients=3, seed=2, size=32, slices=(4, 6))
    shape = write_synthetic_dataset("covidctset", tmp_path / "shape", **kwargs)
    intensity = write_synthetic_dataset("covidctset", tmp_path / "intensity", phantom="intensity", **kwargs)
    assert _tree_digest(shape) != _tree_digest(intensity)
    assert main(["synth", "--layout", "covidctset", "--out", str(tmp_path / "cli"), "--patients", "3", "--seed", "2",
                 "--size", "32", "--slices", "4", "6", "--phantom", "intensity"]) == 0
    assert _tree_digest(tmp_path / "cli") == _tree_digest(intensity)
    with pytest.raises(ValueError, match="phantom"):
        write_synthetic_dataset("ccccii", tmp_path / "bad", phantom="smooth", **kwargs)


@pytest.mark.parametrize("layout", ["ccccii", "mosmed", "covidctset"])
def test_cohorts_of_different_seeds_share_no_patient_or_scan(tmp_path, layout):
    cohorts = [load_dataset(layout, write_synthetic_dataset(layout, tmp_path / str(seed), n_patients=3, seed=seed,
                                                            size=16, slices=(3, 3)))
               for seed in (0, 1)]
    first, second = ({s.patient_id for s in c.scans} for c in cohorts)
    assert first and second and not first & second
    assert not ({(s.patient_id, s.scan_id) for s in cohorts[0].scans}
                & {(s.patient_id, s.scan_id) for s in cohorts[1].scans})

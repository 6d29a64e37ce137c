"""Synthetic phantoms: plausible HU, class-specific lesions, determinism, real file formats."""
from __future__ import annotations

import hashlib

import nibabel as nib
import numpy as np
import pytest
import tifffile
from PIL import Image

from nni_covid3d.data import load_dataset, read_mask, read_scan, write_synthetic_dataset
from nni_covid3d.data.phantom import make_phantom, random_anatomy


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

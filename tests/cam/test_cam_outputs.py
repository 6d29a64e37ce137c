"""CAM files: NIfTI heatmap alignment, montage, per-slice relevance; pointing game and energy share."""
from __future__ import annotations

import csv

import nibabel as nib
import numpy as np
import pytest

from nni_covid3d.explain.outputs import (
    oriented_affine,
    resize_map,
    save_heatmap_nifti,
    save_montage,
    save_slice_relevance,
    slice_affine,
    slice_relevance,
)
from nni_covid3d.explain.scoring import chance_hit_rate, energy_share, mask_fraction, pointing_game


def _oblique_nifti(path, shape=(10, 12, 6)):
    """A NIfTI in LPI-like voxel order with anisotropic spacing and a unique value per voxel."""
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    affine = np.array([[0.0, -0.7, 0.0, 20.0], [-0.8, 0.0, 0.0, 30.0], [0.0, 0.0, -5.0, 40.0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return data, affine


def test_heatmap_nifti_overlays_the_source(tmp_path):
    from nni_covid3d.data.io import read_scan

    source = tmp_path / "scan.nii.gz"
    data, affine = _oblique_nifti(source)
    volume, kind = read_scan([source])  # axial [D, H, W] as the model pipeline sees it
    assert kind == "hu" and volume.shape == (6, 10, 12)
    out = save_heatmap_nifti(volume, tmp_path / "heat.nii.gz", source_nifti=source)
    written = nib.load(str(out))
    # same grid, same affine, and every voxel back where it came from
    np.testing.assert_allclose(written.affine, affine)
    np.testing.assert_array_equal(written.get_fdata(), data)
    # the oriented affine describes the axial array read_scan returns
    np.testing.assert_allclose(oriented_affine(affine, data.shape) @ [0, 0, 0, 1], affine @ [0, 0, 5, 1])


def test_slice_stack_affine_round_trips(tmp_path):
    from nni_covid3d.data.io import read_scan

    volume = np.random.default_rng(0).normal(size=(5, 7, 9)).astype(np.float32)
    path = save_heatmap_nifti(volume, tmp_path / "stack.nii.gz", affine=slice_affine((2.5, 0.7, 0.6)))
    back, _ = read_scan([path])
    np.testing.assert_allclose(back, volume, rtol=1e-6)
    assert nib.load(str(path)).header.get_zooms() == pytest.approx((2.5, 0.7, 0.6))


def test_resize_map_to_volume_grid():
    heat = np.zeros((4, 4, 4), dtype=np.float32)
    heat[3, 0, 0] = 1.0
    big = resize_map(heat, (8, 16, 12))
    assert big.shape == (8, 16, 12) and 0.0 <= big.min() and big.max() <= 1.0
    assert np.unravel_index(big.argmax(), big.shape)[0] >= 6  # stays in the last slices


def test_montage_and_slice_relevance(tmp_path):
    volume = np.full((6, 16, 16), -800.0, dtype=np.float32)
    heat = np.zeros_like(volume)
    heat[4, 5:9, 5:9] = 1.0
    mask = (heat > 0).astype(np.uint8)
    shown = save_montage(volume, heat, tmp_path / "m.png", mask=mask, n_slices=4, title="t")
    assert shown == [0, 2, 3, 5] and (tmp_path / "m.png").stat().st_size > 1000
    relevance = slice_relevance(heat)
    assert relevance.argmax() == 4 and relevance.shape == (6,)
    save_slice_relevance(relevance, tmp_path / "r.png", tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert len(rows) == 6 and float(rows[4]["share"]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="differ"):
        save_montage(volume, heat[:3], tmp_path / "bad.png")


def test_pointing_game_and_energy():
    mask = np.zeros((4, 10, 10), dtype=np.uint8)
    mask[1, 2:4, 2:4] = 1
    heat = np.zeros((4, 10, 10), dtype=np.float32)
    heat[1, 3, 3] = 1.0
    assert pointing_game(heat, mask)
    assert energy_share(heat, mask) == pytest.approx(1.0)
    off = np.zeros_like(heat)
    off[1, 3, 5] = 1.0  # 2 voxels right of the lesion
    assert not pointing_game(off, mask)
    assert pointing_game(off, mask, tolerance_mm=2.0, spacing=(5.0, 1.0, 1.0))
    assert not pointing_game(off, mask, tolerance_mm=2.0, spacing=(5.0, 1.5, 1.5))
    assert not pointing_game(np.zeros_like(heat), mask)  # an empty map is a miss
    assert chance_hit_rate(mask) == pytest.approx(4 / 400)
    # within 2 mm at 1 mm in-plane (5 mm slices: in-plane only): the 2x2 lesion grows to a 6x6 square less 3 voxels per corner
    assert chance_hit_rate(mask, 2.0, (5.0, 1.0, 1.0)) == pytest.approx(24 / 400)
    uniform = np.ones_like(heat)
    assert energy_share(uniform, mask) == pytest.approx(mask_fraction(mask)) == pytest.approx(4 / 400)
    with pytest.raises(ValueError, match="non-empty"):
        pointing_game(heat, np.zeros_like(mask))

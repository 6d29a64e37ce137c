"""Single scans for prediction and orientation: NIfTI (any axis encoding), DICOM series, slice folders."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from nni_covid3d.data import DataError, Preprocessing, load_single_scan, preprocess_single, read_scan
from nni_covid3d.data.phantom import make_phantom, random_anatomy
from nni_covid3d.data.synthetic import save_axial_nifti, write_dicom_series


@pytest.fixture(scope="module")
def phantom():
    rng = np.random.default_rng(3)
    return make_phantom(rng, random_anatomy(rng), size=40, n_slices=9, lesion="consolidation", involvement=0.1, spacing=(4.0, 0.8, 0.7))


@pytest.mark.parametrize("flip_xy", [False, True])
def test_nifti_encodings_load_as_the_same_axial_volume(phantom, tmp_path, flip_xy):
    path = tmp_path / "scan.nii.gz"
    save_axial_nifti(path, phantom.volume, phantom.spacing, flip_xy=flip_xy)
    scan = load_single_scan(path)
    assert scan.label == -1 and scan.spacing == pytest.approx((4.0, 0.8, 0.7))
    volume, kind = read_scan(scan.paths)
    assert kind == "hu"
    np.testing.assert_array_equal(volume, phantom.volume)


def test_nifti_with_slices_on_the_first_voxel_axis_is_reoriented(phantom, tmp_path):
    # Voxel axes stored as (z, y, x): naive data[i] indexing would give sagittal planes, not axial ones.
    data = phantom.volume.copy()  # [D, H, W]
    affine = np.zeros((4, 4))
    affine[0, 2], affine[1, 1], affine[2, 0], affine[3, 3] = -0.7, -0.8, 4.0, 1.0
    path = tmp_path / "zfirst.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), str(path))
    scan = load_single_scan(path)
    assert scan.spacing == pytest.approx((4.0, 0.8, 0.7))
    np.testing.assert_array_equal(read_scan(scan.paths)[0], phantom.volume)


def test_dicom_series_folder(phantom, tmp_path):
    folder = write_dicom_series(tmp_path / "dicom", phantom.volume, phantom.spacing)
    scan = load_single_scan(folder)
    assert scan.paths == (folder,)
    np.testing.assert_array_equal(read_scan(scan.paths)[0], phantom.volume)
    assert load_single_scan(next(folder.iterdir())).paths == (folder,)  # a file of the series -> its folder


def test_slice_folder_and_preprocess_single(ccccii_root):
    folder = next((ccccii_root / "NCP").iterdir())
    folder = next(folder.iterdir())
    scan = load_single_scan(folder)
    assert len(scan.paths) == len(list(folder.iterdir()))
    torch.manual_seed(0)
    prep = Preprocessing(depth=6, height=24, width=20)
    image = preprocess_single(scan, prep)
    assert isinstance(image, torch.Tensor) and image.dtype == torch.float32 and tuple(image.shape) == (1, 6, 24, 20)
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    torch.testing.assert_close(image, preprocess_single(scan, prep))


def test_single_scan_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_single_scan(tmp_path / "missing.nii.gz")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        load_single_scan(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="notes.txt.*unsupported scan file"):
        load_single_scan(tmp_path / "notes.txt")

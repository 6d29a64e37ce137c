"""Single scans for prediction and orientation: NIfTI (any axis encoding), DICOM series, slice folders."""
from __future__ import annotations

import gzip
import io
import os
import shutil
import struct

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

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


# ------------------------------------------------------------------ hostile single scans name the file
@pytest.fixture
def dicom_folder(phantom, tmp_path):
    return write_dicom_series(tmp_path / "dicom", phantom.volume[:5], phantom.spacing)


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("content, problem", [
    (b"", "not a readable DICOM file"),
    (bytes(range(256)) * 3, "not a readable DICOM file"),
    (b"patient notes\n", "not a readable DICOM file"),
    (_png_bytes(), "not a readable DICOM file"),
])
def test_dicom_slice_that_is_not_dicom_is_named_not_skipped(dicom_folder, content, problem):
    bad = dicom_folder / "IM0003.dcm"
    bad.write_bytes(content)
    for read in (load_single_scan, lambda folder: read_scan([folder])):
        with pytest.raises(DataError, match=problem) as error:
            read(dicom_folder)
        assert error.value.path == bad


def test_cut_dicom_slice_is_named(dicom_folder):
    bad = dicom_folder / "IM0004.dcm"
    bad.write_bytes(bad.read_bytes()[:-200])
    scan = load_single_scan(dicom_folder)  # the header is intact
    with pytest.raises(DataError, match="DICOM pixel data is cut short") as error:
        read_scan(scan.paths)
    assert error.value.path == bad


def test_dicom_slice_of_another_size_is_named(dicom_folder):
    bad = dicom_folder / "IM0002.dcm"
    ds = pydicom.dcmread(str(bad))
    ds.Rows = 20
    ds.PixelData = np.zeros((20, ds.Columns), dtype=np.uint16).tobytes()
    ds.save_as(str(bad))
    for read in (load_single_scan, lambda folder: read_scan([folder])):
        with pytest.raises(DataError, match=r"slice size 20x40 differs from 40x40 of IM0001\.dcm") as error:
            read(dicom_folder)
        assert error.value.path == bad


def test_two_dicom_series_in_one_folder_are_refused(phantom, dicom_folder, tmp_path):
    other = write_dicom_series(tmp_path / "other", phantom.volume[:2], phantom.spacing)
    stray = dicom_folder / "IM0009.dcm"
    shutil.copy(other / "IM0001.dcm", stray)
    for read in (load_single_scan, lambda folder: read_scan([folder])):  # not stacked into one volume
        with pytest.raises(DataError, match="belongs to another DICOM series than IM0001.dcm") as error:
            read(dicom_folder)
        assert error.value.path == stray


@pytest.mark.parametrize("kind", ["dicom", "png"])
def test_slice_that_is_a_symlink_loop_is_named_not_skipped(dicom_folder, ccccii_root, tmp_path, kind):
    if kind == "dicom":
        folder = dicom_folder
    else:
        folder = tmp_path / "pngs"
        shutil.copytree(next(p for p in ccccii_root.glob("*/*/*") if p.is_dir()), folder)
    loop = sorted(folder.iterdir())[1]
    loop.unlink()
    os.symlink(loop.name, loop)
    with pytest.raises(DataError, match="symbolic link loop") as error:
        load_single_scan(folder)
    assert error.value.path == loop


@pytest.mark.parametrize("index, value, problem", [
    (1, 0.0, "pixdim.* should be non-zero"),
    (3, -2.0, "pixdim.* should be positive"),
    (2, float("nan"), "voxel sizes .* must be positive"),
])
def test_nifti_voxel_size_must_be_positive(phantom, tmp_path, capfd, index, value, problem):
    path = tmp_path / "scan.nii.gz"
    save_axial_nifti(path, phantom.volume, phantom.spacing)
    header = bytearray(gzip.decompress(path.read_bytes()))
    struct.pack_into("<f", header, 76 + 4 * index, value)  # pixdim[index]: nibabel would "fix" it on writing
    path.write_bytes(gzip.compress(bytes(header)))
    for read in (load_single_scan, lambda p: read_scan([p])):
        with pytest.raises(DataError, match=f"bad NIfTI header: {problem}") as error:
            read(path)
        assert error.value.path == path
    assert capfd.readouterr().err == ""  # no message from nibabel that names no file

"""Bad input: a clear error naming the file and the problem; ``skip_bad`` lists every skipped scan."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from nni_covid3d.data import DataError, Preprocessing, load_dataset, make_dataset
from nni_covid3d.data.synthetic import save_axial_nifti


@pytest.fixture
def cc(ccccii_root, tmp_path) -> Path:
    root = tmp_path / "cc"
    shutil.copytree(ccccii_root, root)
    return root


def _scan_dirs(root: Path, class_name: str) -> list[Path]:
    return sorted(s for p in (root / class_name).iterdir() for s in p.iterdir())


def _first_slice(scan_dir: Path) -> Path:
    return sorted(scan_dir.iterdir())[0]


def test_missing_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere: dataset root does not exist"):
        load_dataset("ccccii", tmp_path / "nowhere")


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'luna'"):
        load_dataset("luna", tmp_path)


def test_empty_class_folder(cc):
    shutil.rmtree(cc / "CP")
    (cc / "CP").mkdir()
    with pytest.raises(DataError, match=r"/CP: empty class folder"):
        load_dataset("ccccii", cc)


def test_empty_scan_folder(cc):
    scan_dir = _scan_dirs(cc, "NCP")[0]
    shutil.rmtree(scan_dir)
    scan_dir.mkdir()
    with pytest.raises(DataError, match=f"{scan_dir.name}: empty scan folder"):
        load_dataset("ccccii", cc)


def test_non_image_file(cc):
    bad = _first_slice(_scan_dirs(cc, "Normal")[0])
    bad.write_text("this is not an image")
    with pytest.raises(DataError, match=f"{bad.name}: not a readable image"):
        load_dataset("ccccii", cc)


def test_wrong_file_type_in_scan_folder(cc):
    bad = _scan_dirs(cc, "Normal")[0] / "notes.txt"
    bad.write_text("x")
    with pytest.raises(DataError, match="notes.txt: not a slice image"):
        load_dataset("ccccii", cc)


def test_truncated_png_found_by_full_check_and_at_load_time(cc):
    scan_dir = next(d for d in _scan_dirs(cc, "CP") if _first_slice(d).suffix == ".png")
    bad = _first_slice(scan_dir)
    bad.write_bytes(bad.read_bytes()[:120])  # header intact, pixel data cut
    index = load_dataset("ccccii", cc)  # header check passes: the header is intact
    with pytest.raises(DataError, match=f"{bad.name}: cannot decode image"):
        load_dataset("ccccii", cc, check="full")
    scan = next(s for s in index.scans if s.paths[0] == bad)
    dataset = make_dataset([scan], Preprocessing(depth=4, height=16, width=16), train=False)
    with pytest.raises(DataError, match=f"{bad.name}: cannot decode image"):
        dataset[0]


def test_mixed_slice_sizes(cc):
    scan_dir = _scan_dirs(cc, "NCP")[0]
    bad = sorted(scan_dir.iterdir())[-1]
    Image.new("L", (30, 20)).save(bad, format="PNG" if bad.suffix == ".png" else "JPEG")
    with pytest.raises(DataError, match=f"{bad.name}: slice size 20x30 differs from 48x48"):
        load_dataset("ccccii", cc)


def test_unknown_class_folder(cc):
    (cc / "COVID").mkdir()
    with pytest.raises(DataError, match="COVID: unknown class folder 'COVID'"):
        load_dataset("ccccii", cc)


def test_skip_bad_lists_every_skipped_scan(cc):
    n_scans = len(load_dataset("ccccii", cc).scans)
    (cc / "Viral").mkdir()
    empty = _scan_dirs(cc, "NCP")[0]
    shutil.rmtree(empty)
    empty.mkdir()
    broken = _scan_dirs(cc, "Normal")[0]
    _first_slice(broken).write_bytes(b"garbage")
    index = load_dataset("ccccii", cc, skip_bad=True)
    skipped = {s.path.name: s.reason for s in index.skipped}
    assert set(skipped) == {"Viral", empty.name, broken.name}
    assert "not a readable image" in skipped[broken.name] and "empty scan folder" in skipped[empty.name]
    assert len(index.scans) == n_scans - 2
    summary = index.summary()
    assert "skipped 3 bad scan(s)" in summary and str(broken) in summary


def test_two_dimensional_nifti(mosmed_root, tmp_path):
    root = tmp_path / "mm"
    shutil.copytree(mosmed_root, root)
    bad = next((root / "studies" / "CT-1").iterdir())
    nib.save(nib.Nifti1Image(np.zeros((48, 48), dtype=np.int16), np.eye(4)), str(bad))
    with pytest.raises(DataError, match=f"{bad.name}: expected a 3D CT volume, got NIfTI data of shape \\(48, 48\\)"):
        load_dataset("mosmed", root)
    index = load_dataset("mosmed", root, skip_bad=True)
    assert [s.path for s in index.skipped] == [bad] and len(index.scans) == 9


def test_nan_voxels(mosmed_root, tmp_path):
    root = tmp_path / "mm"
    shutil.copytree(mosmed_root, root)
    bad = next((root / "studies" / "CT-0").iterdir())
    volume = np.full((6, 16, 16), -800.0, dtype=np.float32)
    volume[2, 3, 4] = np.nan
    save_axial_nifti(bad, volume, (8.0, 0.7, 0.7))
    load_dataset("mosmed", root)  # the header is fine
    with pytest.raises(DataError, match=f"{bad.name}: contains 1 NaN or infinite voxel"):
        load_dataset("mosmed", root, check="full")


def test_truncated_nifti(mosmed_root, tmp_path):
    root = tmp_path / "mm"
    shutil.copytree(mosmed_root, root)
    bad = next((root / "studies" / "CT-2").iterdir())
    bad.write_bytes(bad.read_bytes()[:2000])
    with pytest.raises(DataError, match=bad.name):
        load_dataset("mosmed", root, check="full")


def test_covidctset_bad_tiff_and_unlisted_patient(covidctset_root, tmp_path):
    root = tmp_path / "ct"
    shutil.copytree(covidctset_root, root)
    series = sorted(root.glob("*/patient*/SR_*"))[0]
    bad = sorted(series.iterdir())[0]
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match=f"{bad.name}: not a readable TIFF image"):
        load_dataset("covidctset", root)
    shutil.rmtree(series.parent)
    (root / "normal1" / "patient999" / "SR_2").mkdir(parents=True)
    shutil.copy(sorted(next(root.glob("*/patient*/SR_*")).iterdir())[0], root / "normal1" / "patient999" / "SR_2" / "IM00001.tif")
    with pytest.raises(DataError, match="patient999: patient not listed in Patient_details.csv"):
        load_dataset("covidctset", root)


def test_sixteen_bit_png_is_rejected(cc):
    scan_dir = next(d for d in _scan_dirs(cc, "CP") if _first_slice(d).suffix == ".png")
    bad = _first_slice(scan_dir)
    Image.fromarray(np.full((48, 48), 3000, dtype=np.uint16)).save(bad)
    with pytest.raises(DataError, match=f"{bad.name}: expected an 8-bit grayscale or colour slice"):
        load_dataset("ccccii", cc, check="full")


def test_notes_in_the_root_are_not_scans(cc):
    (cc / "README.txt").write_text("release notes")
    assert len(load_dataset("ccccii", cc).scans) > 0


@pytest.mark.parametrize("layout, relative", [
    ("ccccii", "unzip_filenames.csv"),
    ("ccccii", "lesions_slices.csv"),
    ("covidctset", "Patient_details.csv"),
    ("covidctset_folds", "CSV/train1.csv"),
])
def test_release_csv_that_is_not_text_names_the_file(layout, relative, request, tmp_path):
    root = tmp_path / layout
    shutil.copytree(request.getfixturevalue(f"{layout}_root"), root)
    path = root / relative
    assert path.is_file(), f"the phantom layout has no {relative}"
    path.write_bytes(b"\xff\xfe\x00garbage\x81\x82")  # not UTF-8
    with pytest.raises(DataError, match="not a UTF-8 text CSV file") as error:
        load_dataset(layout.removesuffix("_folds"), root)
    assert error.value.path == path


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_tiff_slice_of_another_sample_type_is_named(covidctset_root, tmp_path, dtype):
    import tifffile

    root = tmp_path / "ct"
    shutil.copytree(covidctset_root, root)
    slice_path = sorted(root.rglob("*.tif"))[3]
    tifffile.imwrite(slice_path, np.zeros((8, 8), dtype=dtype))
    with pytest.raises(DataError, match="expected a 16-bit integer TIFF slice") as error:
        load_dataset("covidctset", root)
    assert error.value.path == slice_path


def test_covidctset_listed_patient_without_folder_is_reported(covidctset_root, tmp_path):
    root = tmp_path / "ct"
    shutil.copytree(covidctset_root, root)
    patient = sorted(root.glob("*/patient*"))[0]
    shutil.rmtree(patient)
    details = root / "Patient_details.csv"
    with pytest.raises(DataError, match=f"lists {patient.parent.name}/{patient.name}, but there is no patient folder") as error:
        load_dataset("covidctset", root)
    assert error.value.path == details
    index = load_dataset("covidctset", root, skip_bad=True)
    assert [s.path for s in index.skipped] == [details] and f"{patient.name}" in index.summary()


def test_lesion_slice_missing_from_its_scan_is_reported(cc):
    path = cc / "lesions_slices.csv"
    rows = path.read_text().splitlines()
    rows[1] = rows[1][:-len(".png")] + "9.png"  # a slice name the scan folder does not hold
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match="lists slice .* which that scan's folder does not hold") as error:
        load_dataset("ccccii", cc)
    assert error.value.path == path


@pytest.mark.parametrize("layout, relative", [("ccccii", "unzip_filenames.csv"), ("covidctset", "Patient_details.csv")])
def test_cut_release_csv_is_named(layout, relative, request, tmp_path):
    root = tmp_path / layout
    shutil.copytree(request.getfixturevalue(f"{layout}_root"), root)
    path = root / relative
    path.write_text(path.read_text()[:-6])  # a download cut inside the last row
    with pytest.raises(DataError, match=r"row \d+ has \d field\(s\) where the header has \d") as error:
        load_dataset(layout, root)
    assert error.value.path == path


@pytest.mark.parametrize("kind", ["symlink_loop", "fifo"])
def test_slice_that_is_not_a_regular_file_is_named(covidctset_root, tmp_path, kind):
    root = tmp_path / "ct"
    shutil.copytree(covidctset_root, root)
    bad = sorted(root.rglob("*.tif"))[2]
    bad.unlink()
    if kind == "symlink_loop":
        os.symlink(bad.name, bad)
    else:
        os.mkfifo(bad)  # opening a pipe would block a reader for ever
    with pytest.raises(DataError, match="symbolic link loop" if kind == "symlink_loop" else "not a regular file") as error:
        load_dataset("covidctset", root, check="none")
    assert error.value.path == bad


def test_slice_whose_content_is_another_format_is_named(cc):
    scan_dir = next(d for d in _scan_dirs(cc, "NCP") if _first_slice(d).suffix == ".png")
    bad = _first_slice(scan_dir)
    Image.new("L", (48, 48)).save(bad, format="JPEG")
    with pytest.raises(DataError, match="file holds a JPEG image, not PNG as its extension says") as error:
        load_dataset("ccccii", cc)
    assert error.value.path == bad

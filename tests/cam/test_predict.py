"""``predict``: probabilities for NIfTI / DICOM / slice-folder inputs, CAM files, batch CSV, bad input."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import struct
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from nni_covid3d.cli import main
from nni_covid3d.data import DataError
from nni_covid3d.data.synthetic import save_axial_nifti, write_dicom_series
from nni_covid3d.predict import Predictor, load_input
from nni_covid3d.training import CheckpointError, load_model


@pytest.fixture(scope="module")
def volume():
    rng = np.random.default_rng(0)
    vol = rng.normal(-700, 150, size=(10, 36, 40)).astype(np.int16)
    vol[6:8, 10:16, 20:26] = 20  # a dense patch
    return vol


@pytest.fixture(scope="module")
def predictor(tiny_ckpt):
    return Predictor(tiny_ckpt)


def _png_folder(folder, n=5, sizes=None):
    folder.mkdir()
    for i in range(n):
        size = sizes[i] if sizes else (36, 40)
        Image.fromarray(np.full(size, 60 + 10 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def test_nifti_prediction_with_cam(predictor, volume, tmp_path):
    path = tmp_path / "scan.nii.gz"
    save_axial_nifti(path, volume, (5.0, 0.8, 0.8), flip_xy=True)
    prediction = predictor.predict(path, cam_dir=tmp_path / "cam")
    assert prediction.class_names == ["CP", "NCP", "Normal"]
    assert sum(prediction.probabilities) == pytest.approx(1.0, abs=1e-5)
    assert prediction.predicted in prediction.class_names
    # the CAM run gives the same probabilities as a plain prediction
    np.testing.assert_allclose(predictor.predict(path).probabilities, prediction.probabilities, atol=1e-5)
    heat = nib.load(prediction.cam_files["heatmap"])
    source = nib.load(str(path))
    assert heat.shape == source.shape
    np.testing.assert_allclose(heat.affine, source.affine)
    summary = json.loads((tmp_path / "cam" / "cam.json").read_text())
    assert len(summary["slice_relevance"]) == volume.shape[0]
    assert summary["model_input_shape"] == [8, 32, 32]
    assert summary["feature_shape"][0] >= 4  # the default layer of a searched model keeps >= 4 slices
    for key in ("montage", "slice_relevance_png", "slice_relevance_csv"):
        assert (tmp_path / "cam" / prediction.cam_files[key].split("/")[-1]).stat().st_size > 0


def test_dicom_and_slice_folder_inputs(predictor, volume, tmp_path):
    dicom = write_dicom_series(tmp_path / "dicom", volume, (5.0, 0.8, 0.8))
    nifti = tmp_path / "same.nii.gz"
    save_axial_nifti(nifti, volume, (5.0, 0.8, 0.8))
    p_dicom = predictor.predict(dicom, cam_dir=tmp_path / "cam_dicom")
    # the same voxels through DICOM and NIfTI give the same prediction
    np.testing.assert_allclose(p_dicom.probabilities, predictor.predict(nifti).probabilities, atol=1e-5)
    heat = nib.load(p_dicom.cam_files["heatmap"])
    assert heat.shape == volume.shape  # axial [D, H, W] with the series' affine
    assert heat.header.get_zooms() == pytest.approx((5.0, 0.8, 0.8), rel=1e-4)
    slices = _png_folder(tmp_path / "pngs")
    p_png = predictor.predict(slices, cam_dir=tmp_path / "cam_png")
    assert sum(p_png.probabilities) == pytest.approx(1.0, abs=1e-5)
    assert nib.load(p_png.cam_files["volume"]).shape == (5, 36, 40)


def test_cli_json_and_batch_csv(tiny_ckpt, volume, tmp_path, capsys):
    batch = tmp_path / "batch"
    batch.mkdir()
    save_axial_nifti(batch / "a.nii.gz", volume, (5.0, 0.8, 0.8))
    write_dicom_series(batch / "b_dicom", volume[::-1], (5.0, 0.8, 0.8))
    _png_folder(batch / "c_pngs")
    assert main(["predict", "--ckpt", str(tiny_ckpt), str(batch / "a.nii.gz"), "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert set(single["probabilities"]) == {"CP", "NCP", "Normal"} and single["predicted"] in single["probabilities"]
    (batch / "d_empty").mkdir()  # a bad scan in a batch is reported, not skipped
    out_csv = tmp_path / "preds.csv"
    assert main(["predict", "--ckpt", str(tiny_ckpt), str(batch), "--csv", str(out_csv)]) == 1
    rows = list(csv.DictReader(open(out_csv)))
    assert [r["input"].split("/")[-1] for r in rows] == ["a.nii.gz", "b_dicom", "c_pngs", "d_empty"]
    for row in rows[:3]:
        assert row["error"] == "" and row["predicted"] in ("CP", "NCP", "Normal")
        assert float(row["p_CP"]) + float(row["p_NCP"]) + float(row["p_Normal"]) == pytest.approx(1, abs=1e-4)
    assert rows[0]["p_NCP"] == f"{single['probabilities']['NCP']:.6f}"
    assert "empty folder" in rows[3]["error"] and rows[3]["predicted"] == ""
    assert "d_empty" in capsys.readouterr().err


def _edit_dicom(path, **changes):
    ds = pydicom.dcmread(str(path))
    for key, value in changes.items():
        setattr(ds, key, value)
    if "Rows" in changes:
        ds.PixelData = np.zeros((ds.Rows, ds.Columns), dtype=np.uint16).tobytes()
    ds.save_as(str(path))


def test_bad_inputs_name_the_file(volume, tmp_path):
    png = tmp_path / "one.png"
    Image.fromarray(np.zeros((20, 20), dtype=np.uint8)).save(png)
    with pytest.raises(DataError, match=r"one\.png.*2D image"):
        load_input(png)
    _png_folder(tmp_path / "single", n=1)
    with pytest.raises(DataError, match=r"0\.png.*2D image"):
        load_input(tmp_path / "single")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty.*empty folder"):
        load_input(tmp_path / "empty")
    _png_folder(tmp_path / "mixed", n=3, sizes=[(36, 40), (36, 40), (30, 40)])
    with pytest.raises(DataError, match=r"2\.png.*slice size 30x40 differs"):
        load_input(tmp_path / "mixed")
    mr = write_dicom_series(tmp_path / "mr", volume[:3], (5.0, 0.8, 0.8))
    _edit_dicom(mr / "IM0002.dcm", Modality="MR")
    with pytest.raises(DataError, match=r"IM0002\.dcm.*Modality is 'MR', not 'CT'"):
        load_input(mr)
    sizes = write_dicom_series(tmp_path / "sizes", volume[:3], (5.0, 0.8, 0.8))
    _edit_dicom(sizes / "IM0003.dcm", Rows=20)
    with pytest.raises(DataError, match=r"IM0003\.dcm.*slice size 20x40 differs"):
        load_input(sizes)
    flat = tmp_path / "flat.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 20), dtype=np.float32), np.eye(4)), str(flat))
    with pytest.raises(DataError, match=r"flat\.nii\.gz.*3D"):
        load_input(flat)


def test_foreign_checkpoints_are_refused(tmp_path, volume, capsys):
    import torch

    scan = tmp_path / "scan.nii.gz"
    save_axial_nifti(scan, volume, (5.0, 0.8, 0.8))
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, plain)
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    for ckpt in (plain, text):
        assert main(["predict", "--ckpt", str(ckpt), str(scan)]) == 1
        err = capsys.readouterr().err
        assert str(ckpt) in err and "checkpoint" in err and "Traceback" not in err


def test_dicom_slice_that_is_a_symlink_loop_is_one_line_naming_it(tiny_ckpt, volume, tmp_path, capsys):
    series = write_dicom_series(tmp_path / "dicom", volume[:4], (5.0, 0.8, 0.8))
    loop = series / "IM0002.dcm"
    loop.unlink()
    os.symlink(loop.name, loop)
    assert main(["predict", "--ckpt", str(tiny_ckpt), str(series)]) == 1
    err = capsys.readouterr().err
    assert err == f"nni-covid3d predict: error: {loop}: symbolic link loop (the link never reaches a file)\n"


def _flip_weight_byte(path):
    """Flip one byte inside a tensor record of a zip-format checkpoint (torch.load itself would not notice)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        member = max((m for m in archive.infolist() if "/data/" in m.filename), key=lambda m: m.file_size)
    name_length, extra_length = struct.unpack_from("<HH", raw, member.header_offset + 26)
    raw[member.header_offset + 30 + name_length + extra_length + member.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, problem", [
    (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "damaged or cut checkpoint archive"),
    (_flip_weight_byte, r"damaged checkpoint: its record .*/data/\d+ fails the archive's CRC check"),
])
def test_damaged_checkpoint_is_named(tiny_ckpt, volume, tmp_path, capsys, damage, problem):
    scan = tmp_path / "scan.nii.gz"
    save_axial_nifti(scan, volume, (5.0, 0.8, 0.8))
    for suffix in (".ckpt", ".pt"):
        ckpt = tmp_path / f"damaged{suffix}"
        shutil.copy(tiny_ckpt, ckpt)
        damage(ckpt)
        assert main(["predict", "--ckpt", str(ckpt), str(scan)]) == 1
        err = capsys.readouterr().err
        assert re.search(problem, err) and str(ckpt) in err and "Traceback" not in err
        with pytest.raises(CheckpointError, match=problem):
            load_model(ckpt)

"""Scoring CAMs on scans with lesion masks (``score_cams``), overlays, and the ``cam`` command."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from nni_covid3d.cli import main
from nni_covid3d.data import Preprocessing, Scan
from nni_covid3d.data.synthetic import save_axial_nifti
from nni_covid3d.explain.pipeline import lesion_labels, score_cams, write_cam_overlays
from tests.cam.conftest import BlobNet

SPACING = (6.0, 0.9, 0.8)


def _lesion_scans(folder, n=3, shape=(12, 40, 36)):
    """NIfTI scans (in-plane axes stored reversed) whose only bright structure is the masked lesion."""
    rng = np.random.default_rng(1)
    scans = []
    for i in range(n):
        volume = np.full(shape, -800, dtype=np.int16)
        mask = np.zeros(shape, dtype=np.uint8)
        z, y, x = int(rng.integers(2, shape[0] - 3)), int(rng.integers(5, shape[1] - 10)), int(rng.integers(5, shape[2] - 10))
        mask[z : z + 2, y : y + 6, x : x + 6] = 1
        volume[mask > 0] = 400
        image, mask_path = folder / f"s{i}.nii.gz", folder / f"s{i}_mask.nii.gz"
        save_axial_nifti(image, volume, SPACING, flip_xy=True)
        save_axial_nifti(mask_path, mask, SPACING, flip_xy=True)
        scans.append(Scan("test", f"p{i}", "1", 1, "NCP", (image,), SPACING, mask_path))
    normal = folder / "normal.nii.gz"
    save_axial_nifti(normal, np.full(shape, -800, dtype=np.int16), SPACING)
    scans.append(Scan("test", "p9", "1", 2, "Normal", (normal,), SPACING, None))  # not scored
    return scans


@pytest.fixture
def blob_checkpoint():
    torch.manual_seed(0)
    meta = {
        "model_name": "blobnet", "class_names": ["CP", "NCP", "Normal"], "in_channels": 1,
        "preprocessing": Preprocessing(depth=8, height=32, width=32).to_dict(),
    }
    return BlobNet(num_classes=3).eval(), meta


def test_lesion_labels():
    assert lesion_labels(["CP", "NCP", "Normal"]) == [1]
    assert lesion_labels(["Normal", "COVID"]) == [1]
    assert lesion_labels([f"CT-{k}" for k in range(5)]) == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="no COVID class"):
        lesion_labels(["a", "b"])


def test_maps_land_on_the_lesion_through_resampling_and_orientation(blob_checkpoint, tmp_path):
    scans = _lesion_scans(tmp_path)
    report = score_cams(blob_checkpoint, scans, out_dir=tmp_path / "out", methods=("gradcam", "cam"), target_layer="features", n_overlays=1)
    assert report["n_scans"] == 3  # the Normal scan without a mask is not scored
    # The lesions are 2 of 12 slices: a box of a quarter of the depth resolves them (the default half does not).
    report.update(score_cams(blob_checkpoint, scans, methods=("occlusion",), occlusion_box=(0.25, 0.125, 0.125)))
    for method in ("gradcam", "cam", "occlusion"):
        result = report[method]
        # the model only responds to the lesion, so a correctly mapped heatmap points into it
        assert result["hit_rate"] == result["hit_rate_strict"] == 1.0
        assert result["energy_share"] > 10 * result["chance_energy"]
        # controls: lesions sit at different places, so another scan's map misses; a random point rarely hits
        assert result["shuffled_hit_rate"] == 0.0
        assert result["chance_hit_rate"] == pytest.approx(72 / (12 * 40 * 36))
        assert result["feature_shape"] == [8, 32, 32]
    rows = list(csv.DictReader(open(tmp_path / "out" / "cam_scores.csv")))
    assert len(rows) == 6 and {r["predicted"] for r in rows} == {"NCP"}
    assert {r["hit_strict"] for r in rows} == {"1"} and {r["shuffled_hit"] for r in rows} == {"0"}
    assert json.loads((tmp_path / "out" / "cam_scores.json").read_text())["gradcam"]["hit_rate"] == 1.0
    assert (tmp_path / "out" / "gradcam" / "p0_1" / "montage.png").is_file()
    assert not (tmp_path / "out" / "gradcam" / "p1_1").exists()  # only n_overlays scans


def test_write_cam_overlays(blob_checkpoint, tmp_path):
    scans = _lesion_scans(tmp_path, n=2)
    folders = write_cam_overlays(blob_checkpoint, scans, tmp_path / "overlays", n=2, target_layer="features")
    assert [f.name for f in folders] == ["p0_1", "p1_1"]
    summary = json.loads((folders[0] / "cam.json").read_text())
    assert summary["explained_class"] == "NCP" and summary["volume_shape"] == [12, 40, 36]
    assert int(np.argmax(summary["slice_relevance"])) in range(2, 12)


def test_scoring_needs_masked_covid_scans(blob_checkpoint, tmp_path):
    scans = [s for s in _lesion_scans(tmp_path, n=1) if s.label == 2]
    with pytest.raises(ValueError, match="no NCP scans with a lesion mask"):
        score_cams(blob_checkpoint, scans)


@pytest.mark.slow
def test_cam_command_on_a_synthetic_split(tiny_ckpt, tmp_path, capsys):
    from nni_covid3d.data import load_dataset, make_patient_split, save_split, write_synthetic_dataset

    root = write_synthetic_dataset("ccccii", tmp_path / "cc", n_patients=6, seed=0, size=32, slices=(8, 10))
    index = load_dataset("ccccii", root)
    split = make_patient_split(index.scans, val_fraction=0.0, test_fraction=0.5, seed=0)
    save_split(split, tmp_path / "split.json")
    n_masked = sum(s.label == 1 and s.mask_path is not None for s in split["test"])
    assert n_masked > 0
    args = ["cam", "--ckpt", str(tiny_ckpt), "--dataset", "ccccii", "--root", str(root), "--split-file", str(tmp_path / "split.json"),
            "--out", str(tmp_path / "out"), "--methods", "gradcam", "gradcampp", "--overlays", "1", "--tolerance-mm", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "gradcampp" in out and "hit rate" in out
    report = json.loads((tmp_path / "out" / "cam_scores.json").read_text())
    assert report["n_scans"] == n_masked and report["tolerance_mm"] == 2.0
    assert 0.0 <= report["gradcam"]["hit_rate"] <= 1.0
    assert (tmp_path / "out" / "gradcampp").is_dir()
    # without a dataset on the command line or in the checkpoint: a clear error
    assert main(["cam", "--ckpt", str(tiny_ckpt), "--out", str(tmp_path / "o2")]) == 1
    assert "--dataset and --root" in capsys.readouterr().err
    # an occlusion box that is not a fraction of the input: a clear error
    bad_box = [*args[:args.index("--methods")], "--methods", "occlusion", "--occlusion-box", "0.5", "0", "0.125"]
    assert main(bad_box) == 1
    assert "occlusion_box must be 3 fractions" in capsys.readouterr().err

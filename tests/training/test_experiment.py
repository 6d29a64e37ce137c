"""End to end on tiny phantoms in the CC-CCII layout: retrain -> evaluate -> compare (CLI, in process)."""
from __future__ import annotations

import csv
import json

import pytest

import nni_covid3d.data.transforms as transforms
from nni_covid3d.cli import main
from nni_covid3d.data import write_synthetic_dataset
from nni_covid3d.search_spaces import save_architecture
from tests.training.helpers import SpyDataset, tiny_arch

SMALL = ["--depth", "8", "--height", "32", "--width", "32", "--batch-size", "4", "--no-progress", "--accelerator", "cpu"]


class _KeyedSpy(SpyDataset):
    def __getitem__(self, index):
        self.log.append((self.name, self.inner.scans[index].key))
        return self.inner[index]


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset("ccccii", root / "ccccii", n_patients=12, seed=0, size=32, slices=(8, 10))
    arch = save_architecture(tiny_arch(), root / "arch.json")
    return root / "ccccii", arch


@pytest.mark.slow
def test_retrain_then_evaluate_reads_test_scans_once_after_training(phantoms, tmp_path, monkeypatch):
    data, arch = phantoms
    reads: list = []
    real_make_dataset = transforms.make_dataset

    def spying_make_dataset(scans, preprocessing, *, train, **kwargs):
        return _KeyedSpy(real_make_dataset(scans, preprocessing, train=train, **kwargs), "train" if train else "eval", reads)

    monkeypatch.setattr(transforms, "make_dataset", spying_make_dataset)
    out = tmp_path / "run"
    assert main(["retrain", "--arch", str(arch), "--dataset", "ccccii", "--root", str(data), "--out", str(out),
                 "--epochs", "2", *SMALL]) == 0

    split = json.loads((out / "split.json").read_text())["splits"]
    test_keys = {f"{s['patient_id']}/{s['scan_id']}" for s in split["test"]}
    fit_keys = {f"{s['patient_id']}/{s['scan_id']}" for s in split["train"] + split["val"]}
    assert test_keys and not test_keys & fit_keys
    positions = [i for i, (_, key) in enumerate(reads) if key in test_keys]
    assert len(positions) == len(test_keys)  # each test scan read exactly once
    last_fit_read = max(i for i, (_, key) in enumerate(reads) if key in fit_keys)
    assert min(positions) > last_fit_read  # only after training (and selection) finished
    assert all(name == "eval" for name, key in reads if key in test_keys)  # never with augmentation

    first = json.loads((out / "eval_test" / "metrics.json").read_text())
    assert first["n"] == len(test_keys) and first["split"] == "test"
    # `evaluate` needs no data flags: the checkpoint records dataset, root, split file and preprocessing.
    assert main(["evaluate", "--ckpt", str(out / "checkpoints" / "best.ckpt"), "--split", "test",
                 "--out", str(tmp_path / "again"), "--no-progress"]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["confusion_matrix"] == first["confusion_matrix"]
    assert again["accuracy"] == pytest.approx(first["accuracy"])


@pytest.mark.slow
def test_compare_writes_one_table_with_reported_rows(phantoms, tmp_path, capsys):
    data, arch = phantoms
    out = tmp_path / "cmp"
    assert main(["compare", "--datasets", "ccccii", "--root", str(data), "--models", "covidnet3d",
                 "--cost-only", "mc3_18", "densenet3d121", "--arch", str(arch), "--out", str(out), "--epochs", "1", *SMALL]) == 0
    with (out / "comparison.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    ours = [r for r in rows if r["source"] == "ours"]
    reported = [r for r in rows if r["source"].startswith("reported")]
    assert [r["model"] for r in ours] == ["CovidNet3D (searched)"]
    cost_row, densenet_row = [r for r in rows if r["source"].startswith("ours (cost only")]
    assert cost_row["model"] == "MC3_18" and cost_row["accuracy"] == ""
    assert densenet_row["source"] == "ours (cost only, not trained, at 32 slices)"  # its minimum depth
    assert float(densenet_row["gflops"]) > 0
    assert float(cost_row["size_mb"]) == pytest.approx(43.77, abs=0.01)
    assert int(cost_row["params"]) > 100 * int(ours[0]["params"])
    assert {r["model"] for r in reported} >= {"ResNet3D101", "DenseNet3D121", "MC3_18", "CovidNet3D-S"}
    assert all(r["dataset"] == "CC-CCII" for r in rows)
    row = ours[0]
    assert int(row["params"]) > 0 and float(row["gflops"]) > 0 and float(row["latency_ms"]) > 0
    metrics = json.loads((out / "ccccii" / "covidnet3d" / "eval_test" / "metrics.json").read_text())
    assert float(row["accuracy"]) == pytest.approx(100 * metrics["accuracy"])
    assert "*ResNet3D101*" in (out / "comparison.md").read_text()
    # A second run reuses the finished run instead of training again.
    mtime = (out / "ccccii" / "covidnet3d" / "checkpoints" / "best.ckpt").stat().st_mtime_ns
    assert main(["compare", "--datasets", "ccccii", "--root", str(data), "--models", "covidnet3d",
                 "--arch", str(arch), "--out", str(out), "--epochs", "1", *SMALL]) == 0
    assert (out / "ccccii" / "covidnet3d" / "checkpoints" / "best.ckpt").stat().st_mtime_ns == mtime


def test_cli_refuses_bad_input_clearly(phantoms, tmp_path, capsys):
    data, arch = phantoms
    assert main(["train", "--model", "covidnet3d", "--dataset", "ccccii", "--root", str(data), "--out", str(tmp_path)]) == 1
    assert "needs --arch" in capsys.readouterr().err
    assert main(["train", "--model", "densenet3d121", "--dataset", "ccccii", "--root", str(data),
                 "--out", str(tmp_path), "--depth", "16"]) == 1
    assert "needs at least 32 slices" in capsys.readouterr().err
    foreign = tmp_path / "foreign.ckpt"
    foreign.write_bytes(b"junk")
    assert main(["evaluate", "--ckpt", str(foreign)]) == 1
    assert "foreign.ckpt" in capsys.readouterr().err
    assert main(["compare", "--datasets", "ccccii", "mosmed", "--root", str(data), "--out", str(tmp_path)]) == 1
    assert "DATASET=DIR" in capsys.readouterr().err

"""examples/search_export_retrain.py and examples/compare_baselines.py end to end on tiny phantoms, under
``--precision bf16-mixed`` (the option passes through to every run they start)."""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nni_covid3d.training.resume import read_training_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--depth", "8", "--size", "32", "--epochs", "1", "--accelerator", "cpu", "--precision", "bf16-mixed"]


def _run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(REPO_ROOT / "examples" / name), *args], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_the_examples_search_retrain_and_compare_under_the_precision_they_are_given(tmp_path):
    searched = tmp_path / "searched"
    done = _run_example("search_export_retrain.py", "--synthetic", "--patients", "12", "--search-epochs", "1",
                        *TINY, "--out", str(searched))
    assert "test accuracy of the searched architecture" in done.stdout
    metrics = json.loads((searched / "retrain" / "eval_test" / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1
    search_run = read_training_checkpoint(searched / "search" / "checkpoints" / "last.ckpt")["nni_covid3d_run"]
    retrain_run = read_training_checkpoint(searched / "retrain" / "checkpoints" / "last.ckpt")["nni_covid3d_run"]
    assert search_run["search"]["precision"] == retrain_run["training"]["precision"] == "bf16-mixed"

    compared = tmp_path / "compared"
    _run_example("compare_baselines.py", "--synthetic", "--patients", "10", "--models", "covidnet3d",
                 "--arch", str(searched / "search" / "architecture.json"), *TINY, "--out", str(compared))
    with (compared / "comparison.csv").open() as f:
        ours = [row for row in csv.DictReader(f) if row["source"] == "ours"]
    assert len(ours) == len({row["dataset"] for row in ours}) == 3 and all(row["accuracy"] for row in ours)
    datasets = ("ccccii", "mosmed", "covidctset")
    for dataset in datasets:
        run = read_training_checkpoint(compared / dataset / "covidnet3d" / "checkpoints" / "last.ckpt")
        assert run["nni_covid3d_run"]["training"]["precision"] == "bf16-mixed"

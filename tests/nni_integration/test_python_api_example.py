"""examples/search_python_api.py end to end on tiny synthetic data: NasExperiment -> architecture file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

EXAMPLE = REPO_ROOT / "examples" / "search_python_api.py"
TINY = ["--epochs", "1", "--size", "8", "32", "32", "--synthetic-patients", "9", "--batch-size", "2"]


@pytest.fixture
def tiny_space(tmp_path: Path) -> list[str]:
    """A shallower, narrower CovidNet3D space: DARTS runs every candidate, so keep it small on CPU."""
    path = tmp_path / "tiny_space.json"
    path.write_text(json.dumps({"preset": "S", "n_cells": [1, 1, 1, 1, 1, 1], "head_channels": 256}))
    return ["--space-config", str(path)]


def run_example(tmp_path: Path, *args: str) -> None:
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    done = subprocess.run([sys.executable, str(EXAMPLE), *TINY, *args, "--work-dir", str(tmp_path / "exps")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_gumbel_dnas_example_writes_a_buildable_architecture(tmp_path: Path, tiny_space: list[str]) -> None:
    out = tmp_path / "best_arch.json"
    run_example(tmp_path, *tiny_space, "--out", str(out))
    from nni_covid3d.search_spaces import build_model, load_architecture

    arch = load_architecture(out)
    assert arch["metadata"]["strategy"] == "gumbel-dnas"
    # The experiment was recorded where it was told to be, not in the real ~/nni-experiments.
    experiment_id = arch["metadata"]["experiment"]
    assert (tmp_path / "exps" / experiment_id).is_dir()
    registry = json.loads((tmp_path / "home" / "nni-experiments" / ".experiment").read_text())
    assert registry[experiment_id]["status"] == "STOPPED"
    import torch

    model = build_model(arch).eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 8, 32, 32)).shape == (1, 3)


def test_darts_is_a_drop_in_swap(tmp_path: Path, tiny_space: list[str]) -> None:
    out = tmp_path / "darts_arch.json"
    # DARTS trains the architecture on validation batches in train mode; a batch larger than the
    # tiny validation split keeps BatchNorm from seeing a single 1x1x1 value.
    run_example(tmp_path, *tiny_space, "--strategy", "darts", "--batch-size", "8", "--out", str(out))
    from nni_covid3d.search_spaces import load_architecture

    arch = load_architecture(out)
    assert arch["metadata"]["strategy"] == "darts"
    assert arch["space"]["n_cells"] == [1, 1, 1, 1, 1, 1]

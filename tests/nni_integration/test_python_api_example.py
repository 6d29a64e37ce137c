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
TINY = ["--epochs", "1", "--synthetic-patients", "9", "--batch-size", "2"]


@pytest.fixture
def tiny_space(tmp_path: Path) -> list[str]:
    """A shallower, narrower CovidNet3D space: DARTS runs every candidate, so keep it small on CPU."""
    path = tmp_path / "tiny_space.json"
    path.write_text(json.dumps({"preset": "S", "n_cells": [1, 1, 1, 1, 1, 1], "head_channels": 256}))
    return ["--space-config", str(path)]


def test_gumbel_dnas_example_writes_a_buildable_architecture(tmp_path: Path, tiny_space: list[str]) -> None:
    out = tmp_path / "best_arch.json"
    env = dict(os.environ, HOME=str(tmp_path / "home"))
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), *TINY, "--size", "8", "32", "32", *tiny_space, "--out", str(out),
         "--work-dir", str(tmp_path / "exps")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
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


def test_darts_is_a_drop_in_swap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_space: list[str]) -> None:
    # In this process (saves a second interpreter start-up); HOME keeps NNI's registry in tmp_path.
    import importlib.util

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    spec = importlib.util.spec_from_file_location("search_python_api", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    out = tmp_path / "darts_arch.json"
    # DARTS trains the architecture on validation batches in train mode: 64 px keeps BatchNorm's last
    # feature map above 1x1x1 even for a batch of one volume.
    arch = example.main([*TINY, "--size", "8", "64", "64", *tiny_space, "--strategy", "darts", "--out", str(out),
                         "--work-dir", str(tmp_path / "exps")])
    saved = json.loads(out.read_text())
    assert saved["choices"] == arch["choices"]
    assert saved["metadata"]["strategy"] == "darts"

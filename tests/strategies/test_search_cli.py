"""``nni-covid3d search`` end to end on synthetic CC-CCII phantoms (tiny space and input)."""
from __future__ import annotations

import json
import subprocess

import pytest
import torch

from nni_covid3d.cli import main
from nni_covid3d.search import STRATEGY_NAMES as SEARCH_STRATEGY_NAMES
from nni_covid3d.search_spaces import build_model, load_architecture
from nni_covid3d.strategies import STRATEGY_NAMES

TINY = ["--preset", "S", "--widths", "8", "8", "8", "8", "8", "8", "--n-cells", "2", "1", "1", "1", "1", "1",
        "--head-channels", "16", "--depth", "8", "--height", "32", "--width", "32", "--batch-size", "2",
        "--no-progress", "--accelerator", "cpu"]


@pytest.mark.slow
def test_search_cli_writes_architecture_logs_and_checkpoints(tmp_path, venv_bin):
    from nni_covid3d.data import write_synthetic_dataset

    root = write_synthetic_dataset("ccccii", tmp_path / "data", n_patients=8, seed=0, size=32, slices=(8, 10))
    out = tmp_path / "search"
    base = [str(venv_bin / "nni-covid3d"), "search", "--dataset", "ccccii", "--root", str(root),
            "--strategy", "gumbel-dnas", "--out", str(out), *TINY]
    done = subprocess.run([*base, "--epochs", "1", "--size-budget-mb", "5"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    arch = load_architecture(out / "architecture.json")
    model = build_model(arch).eval()
    assert model(torch.randn(1, 1, 8, 32, 32)).shape == (1, 3)
    probs = json.loads((out / "arch_probs.json").read_text())
    assert set(probs) == set(arch["choices"])
    assert all(abs(sum(p.values()) - 1) < 1e-5 for p in probs.values())
    assert list((out / "tensorboard").glob("version_*/events.out.tfevents.*"))
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "split.json").is_file()


def test_search_cli_bad_input(tmp_path, capsys):
    assert main(["search", "--dataset", "ccccii", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 1
    assert f"dataset root {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_search_strategy_names_match_registry():
    assert SEARCH_STRATEGY_NAMES == STRATEGY_NAMES


@pytest.mark.parametrize("augment_on", ["loader", "device"])
def test_a_search_with_the_volumes_on_the_device_repeats_the_search_of_the_torch_loader(augment_on, tmp_path):
    from nni_covid3d.data import write_synthetic_dataset

    root = write_synthetic_dataset("ccccii", tmp_path / "data", n_patients=8, seed=0, size=32, slices=(8, 10))
    probabilities = {}
    for loader in ("torch", "device"):
        out = tmp_path / loader
        assert main(["search", "--dataset", "ccccii", "--root", str(root), "--strategy", "gumbel-dnas", "--out",
                     str(out), *TINY, "--epochs", "2", "--loader", loader, "--augment-on", augment_on]) == 0
        probabilities[loader] = json.loads((out / "arch_probs.json").read_text())
    assert probabilities["device"] == probabilities["torch"]

"""``nni-covid3d retrain`` killed with SIGKILL (inside an epoch, while a checkpoint is written) and rerun
with ``--resume`` ends with the uninterrupted run's best and last weights and test metrics; a resume
with other settings or a damaged checkpoint is refused, naming what differs or the file; a cut
preprocessing cache entry is recomputed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from nni_covid3d.atomic import CRASH_ENV
from nni_covid3d.cli import main

from .helpers import TINY_SPACE

pytestmark = pytest.mark.slow

# Selection on val_loss with a small learning rate: on these phantoms val_loss falls a little every
# epoch, so best.ckpt is rewritten along the way (val_acc stays flat and would keep epoch 0).
OPTIONS = ["--depth", "8", "--height", "32", "--width", "32", "--batch-size", "2", "--epochs", "4", "--seed", "0",
           "--lr", "0.0003", "--monitor", "val_loss", "--no-progress", "--accelerator", "cpu"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """A synthetic CC-CCII root and a small architecture with dropout (global RNG draws every step)."""
    from nni_covid3d.data import write_synthetic_dataset
    from nni_covid3d.search_spaces import random_architecture, save_architecture

    folder = tmp_path_factory.mktemp("inputs")
    root = write_synthetic_dataset("ccccii", folder / "data", n_patients=12, seed=0, size=32, slices=(8, 10))
    arch = save_architecture(random_architecture({**TINY_SPACE, "dropout": 0.3}, 0), folder / "arch.json")
    return root, arch


def retrain_command(venv_bin: Path, inputs: tuple[Path, Path], out: Path, *extra: str) -> list[str]:
    root, arch = inputs
    return [str(venv_bin / "nni-covid3d"), "retrain", "--arch", str(arch), "--dataset", "ccccii", "--root", str(root),
            "--out", str(out), *OPTIONS, *extra]


def run(command: list[str], crash: str | None = None) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != CRASH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    if crash is not None:
        env[CRASH_ENV] = crash
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def uninterrupted(inputs, venv_bin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = run(retrain_command(venv_bin, inputs, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def assert_same_training(expected: Path, got: Path) -> None:
    for name in ("best.ckpt", "last.ckpt"):
        want, have = (torch.load(folder / "checkpoints" / name, map_location="cpu", weights_only=True)
                      for folder in (expected, got))
        assert have["epoch"] == want["epoch"], name
        assert have["state_dict"].keys() == want["state_dict"].keys()
        for key, value in want["state_dict"].items():
            assert torch.equal(have["state_dict"][key], value), f"{name}: {key}"
    want, have = (json.loads((folder / "eval_test" / "metrics.json").read_text()) for folder in (expected, got))
    want.pop("checkpoint"), have.pop("checkpoint")
    assert have == want
    assert json.loads((got / "history.json").read_text()) == json.loads((expected / "history.json").read_text())


@pytest.mark.parametrize("crash, last_epoch", [
    ("batch:2:1", 1),  # inside epoch 2
    ("write:last.ckpt:3:4096", 1),  # while epoch 2's last.ckpt is written
])
def test_killed_training_resumes_to_the_uninterrupted_result(crash, last_epoch, inputs, uninterrupted, venv_bin,
                                                             tmp_path):
    out = tmp_path / "run"
    command = retrain_command(venv_bin, inputs, out)
    assert run(command, crash).returncode == -signal.SIGKILL
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"] == last_epoch
    assert not (out / "eval_test").exists()

    resumed = run([*command, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in resumed.stderr
    assert_same_training(uninterrupted, out)


@pytest.fixture(scope="module")
def interrupted(inputs, venv_bin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("interrupted") / "run"
    assert run(retrain_command(venv_bin, inputs, out), "batch:1:0").returncode == -signal.SIGKILL
    return out


def test_resume_with_other_settings_or_a_damaged_checkpoint_is_refused(interrupted, inputs, tmp_path, capsys):
    from nni_covid3d.search_spaces import random_architecture, save_architecture

    last = interrupted / "checkpoints" / "last.ckpt"
    argv = retrain_command(Path("."), inputs, interrupted, "--resume")[1:]
    other_arch = save_architecture(random_architecture({**TINY_SPACE, "dropout": 0.1}, 0), tmp_path / "arch.json")
    for change, differs in [
        (["--lr", "0.01"], "training.learning_rate: 0.0003 in the checkpoint, 0.01 now"),
        (["--no-augment"], "model.preprocessing.augment: True in the checkpoint, False now"),
        (["--arch", str(other_arch)], "model.arch"),
    ]:
        assert main([*argv, *change]) == 1
        error = capsys.readouterr().err
        assert f"cannot resume from {last}" in error and differs in error, error

    whole = last.read_bytes()
    try:
        last.write_bytes(whole[: len(whole) // 3])
        assert main(argv) == 1
        assert f"error: {last}" in capsys.readouterr().err
    finally:
        last.write_bytes(whole)


def test_cut_cache_entry_is_recomputed(inputs, tmp_path):
    from nni_covid3d.data import Preprocessing, load_dataset, make_dataset

    scans = load_dataset("ccccii", inputs[0]).scans[:2]
    preprocessing = Preprocessing(depth=8, height=32, width=32)
    dataset = make_dataset(scans, preprocessing, train=False, cache_dir=tmp_path)
    first = [dataset[i]["image"] for i in range(2)]
    entries = sorted(tmp_path.glob("prep-*/*.pt"))
    assert len(entries) == 2 and not list(tmp_path.glob("prep-*/.*"))  # whole entries, no temporary files left
    for entry in entries:  # as a crash of a non-atomic writer would leave them
        entry.write_bytes(entry.read_bytes()[:100])
    dataset = make_dataset(scans, preprocessing, train=False, cache_dir=tmp_path)
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        again = [dataset[i]["image"] for i in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(again, first))
    for entry in entries:  # rewritten whole
        assert torch.load(entry, weights_only=True)["image"].shape[-2:] == (32, 32)

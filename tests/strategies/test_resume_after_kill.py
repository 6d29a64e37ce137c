"""``nni-covid3d search`` killed with SIGKILL (inside an epoch, while a checkpoint is written, from
outside) and rerun with ``--resume`` ends as the uninterrupted search; a resume with another run's
settings or a damaged checkpoint is refused, naming what differs or the file."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from nni_covid3d.atomic import CRASH_ENV
from nni_covid3d.cli import main

from .test_search_cli import TINY

pytestmark = pytest.mark.slow

EPOCHS = ["--epochs", "6", "--seed", "0"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from nni_covid3d.data import write_synthetic_dataset

    return write_synthetic_dataset("ccccii", tmp_path_factory.mktemp("data"), n_patients=12, seed=0, size=32,
                                   slices=(8, 10))


def search_command(venv_bin: Path, root: Path, out: Path, *extra: str) -> list[str]:
    return [str(venv_bin / "nni-covid3d"), "search", "--dataset", "ccccii", "--root", str(root), "--out", str(out),
            *TINY, *EPOCHS, *extra]


def environment(crash: str | None = None) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != CRASH_ENV}
    env["OMP_NUM_THREADS"] = "1"
    if crash is not None:
        env[CRASH_ENV] = crash
    return env


def run(command: list[str], crash: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment(crash))


@pytest.fixture(scope="module")
def uninterrupted(dataset, venv_bin, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    done = run(search_command(venv_bin, dataset, out))
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def assert_same_search(expected: Path, got: Path) -> None:
    assert json.loads((got / "architecture.json").read_text())["choices"] == \
        json.loads((expected / "architecture.json").read_text())["choices"]
    want, have = (json.loads((folder / "arch_probs.json").read_text()) for folder in (expected, got))
    assert want.keys() == have.keys()
    for label, dist in want.items():
        assert have[label].keys() == dist.keys()
        assert all(abs(have[label][value] - p) <= 1e-6 for value, p in dist.items()), label


def kill_after_checkpoint(command: list[str], checkpoint: Path) -> int:
    """Start ``command``, SIGKILL it from outside as soon as ``checkpoint`` appears; its return code."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment())
    try:
        while not checkpoint.exists() and process.poll() is None:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        return process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()


@pytest.mark.parametrize("crash, last_epoch", [
    ("batch:3:1", 2),  # inside epoch 3: last.ckpt holds epoch 2
    ("write:last.ckpt:3:4096", 1),  # while epoch 2's last.ckpt is written: the old one stays whole
    ("outside", None),  # kill -9 from outside once epoch 2's checkpoint exists: wherever it lands
])
def test_killed_search_resumes_to_the_uninterrupted_result(crash, last_epoch, dataset, uninterrupted, venv_bin,
                                                           tmp_path):
    out = tmp_path / "search"
    command = search_command(venv_bin, dataset, out)
    if crash == "outside":
        returncode = kill_after_checkpoint(command, out / "checkpoints" / "search-epoch=002.ckpt")
    else:
        returncode = run(command, crash).returncode
    assert returncode == -signal.SIGKILL
    assert not (out / "architecture.json").exists()
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == last_epoch if last_epoch is not None else last["epoch"] >= 1
    if crash.startswith("write"):
        assert list((out / "checkpoints").glob(".last.ckpt.*.tmp"))  # the cut write, beside the whole file

    resumed = run([*command, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restoring states from the checkpoint path" in resumed.stderr
    assert not list((out / "checkpoints").glob(".*.tmp"))
    assert_same_search(uninterrupted, out)


@pytest.fixture(scope="module")
def interrupted(dataset, venv_bin, tmp_path_factory) -> Path:
    """The output folder of a search killed in epoch 1."""
    out = tmp_path_factory.mktemp("interrupted") / "search"
    assert run(search_command(venv_bin, dataset, out), "batch:1:0").returncode == -signal.SIGKILL
    return out


@pytest.mark.parametrize("change, differs", [
    (["--seed", "1"], "search.seed: 0 in the checkpoint, 1 now"),
    (["--split-seed", "3"], "split.train"),
    (["--n-cells", "1", "1", "1", "1", "1", "1"], "space.n_cells: [2, 1, 1, 1, 1, 1] in the checkpoint"),
    (["--tau", "4", "0.5"], "strategy.temperature"),
    (["--arc-lr", "0.01"], "strategy.arc_learning_rate: None in the checkpoint, 0.01 now"),
    (["--depth", "10"], "preprocessing.depth: 8 in the checkpoint, 10 now"),
])
def test_resume_with_other_settings_is_refused_naming_them(change, differs, interrupted, dataset, capsys):
    split = (interrupted / "split.json").read_bytes()
    argv = search_command(Path("."), dataset, interrupted, "--resume", *change)[1:]
    assert main(argv) == 1
    error = capsys.readouterr().err
    assert f"cannot resume from {interrupted / 'checkpoints' / 'last.ckpt'}" in error
    assert differs in error
    assert (interrupted / "split.json").read_bytes() == split  # the run's split is kept


def test_resume_on_another_dataset_is_refused(interrupted, tmp_path, capsys):
    from nni_covid3d.data import write_synthetic_dataset

    other = write_synthetic_dataset("ccccii", tmp_path / "other", n_patients=12, seed=1, size=32, slices=(8, 10))
    assert main(search_command(Path("."), other, interrupted, "--resume")[1:]) == 1
    assert "split.train.scans_sha1" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["cut", "flipped byte"])
def test_damaged_last_checkpoint_is_refused_naming_it(damage, interrupted, dataset, tmp_path, capsys):
    out = tmp_path / "search"
    shutil.copytree(interrupted, out)
    last = out / "checkpoints" / "last.ckpt"
    data = bytearray(last.read_bytes())
    if damage == "cut":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    assert main(search_command(Path("."), dataset, out, "--resume")[1:]) == 1
    error = capsys.readouterr().err
    assert f"error: {last}" in error and ("damaged" in error or "not a whole checkpoint" in error)

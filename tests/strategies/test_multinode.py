"""Multi-node DDP, launched: ``torchrun --nnodes 2 --nproc-per-node 1`` twice on 127.0.0.1.

Two processes act as two nodes (node ranks 0 and 1, gloo on CPU, a static rendezvous at the master's
address and a free port); each node has its own output folder, as separate machines would. The
results must equal those of one node with two processes (Lightning's own launcher, ``--devices 2``)
with the same seeds, and a node that dies must make the other one fail promptly.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nni_covid3d.nnictl.run import free_port
from tests.conftest import REPO_ROOT
from tests.nni_integration.harness import _descendants
from tests.strategies.test_search_cli import TINY

pytestmark = pytest.mark.slow

NODES = 2
EPOCHS = ["--epochs", "2", "--seed", "0"]
#: The retrain flags of TINY (the input size and budget; the architecture comes from the search).
RETRAIN = ["--depth", "8", "--height", "32", "--width", "32", "--batch-size", "2", "--no-progress",
           "--accelerator", "cpu", *EPOCHS, "--no-test"]


def environment() -> dict[str, str]:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")


def start_nodes(args: list[str], logs: Path, port: int | None = None) -> list[subprocess.Popen]:
    """``torchrun --nnodes 2 --nproc-per-node 1 --node-rank R ... ARGS`` for R = 0, 1; ``{R}`` in
    ARGS becomes the node's rank. Output goes to ``logs/node<R>.log``."""
    logs.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    torchrun = Path(sys.executable).with_name("torchrun")
    processes = []
    for rank in range(NODES):
        command = [str(torchrun), "--nnodes", str(NODES), "--nproc-per-node", "1", "--node-rank", str(rank),
                   "--master-addr", "127.0.0.1", "--master-port", str(port),
                   *[arg.replace("{R}", str(rank)) for arg in args]]
        with (logs / f"node{rank}.log").open("w") as log:
            processes.append(subprocess.Popen(command, cwd=REPO_ROOT, env=environment(), stdout=log,
                                              stderr=subprocess.STDOUT))
    return processes


def run_nodes(args: list[str], logs: Path, timeout: float = 600) -> None:
    """Run both nodes to the end; fail with their logs unless both exit 0."""
    processes = start_nodes(args, logs)
    try:
        codes = [process.wait(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                kill_node(process)
    outputs = {rank: (logs / f"node{rank}.log").read_text()[-3000:] for rank in range(NODES)}
    assert codes == [0] * NODES, f"exit codes {codes}:\n{outputs}"


def kill_node(agent: subprocess.Popen) -> None:
    """SIGKILL a node: torchrun's agent and its workers (which run in their own session)."""
    for pid in [agent.pid, *_descendants(agent.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    agent.wait(timeout=30)


def run(command: list[str]) -> None:
    done = subprocess.run(command, cwd=REPO_ROOT, env=environment(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def files(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from nni_covid3d.data import write_synthetic_dataset

    return write_synthetic_dataset("ccccii", tmp_path_factory.mktemp("data"), n_patients=12, seed=0, size=32,
                                   slices=(8, 10))


def search_args(root: Path, out: Path) -> list[str]:
    return ["search", "--dataset", "ccccii", "--root", str(root), "--out", str(out), *TINY, *EPOCHS]


@pytest.fixture(scope="module")
def one_node_search(dataset, venv_bin, tmp_path_factory) -> Path:
    """``nni-covid3d search --devices 2``: one node, two processes."""
    out = tmp_path_factory.mktemp("one-node") / "search"
    run([str(venv_bin / "nni-covid3d"), *search_args(dataset, out), "--devices", "2"])
    return out


# ---- tests -------------------------------------------------------------------------------------------
def test_gumbel_dnas_ranks_on_two_nodes_stay_in_lock_step_and_match_one_node(tmp_path: Path) -> None:
    two, one = tmp_path / "two-nodes", tmp_path / "one-node"
    two.mkdir()
    one.mkdir()
    run_nodes(["-m", "tests.strategies.ddp_search", str(two), "--num-nodes", str(NODES)], tmp_path / "logs")
    run([sys.executable, "-m", "tests.strategies.ddp_search", str(one)])

    ranks = [torch.load(two / f"rank{r}.pt", weights_only=True) for r in range(NODES)]
    reference = [torch.load(one / f"rank{r}.pt", weights_only=True) for r in range(NODES)]
    assert [r["world"] for r in ranks] == [NODES, NODES]
    for record in ranks[1:] + reference:  # both nodes, and both processes of the one-node run, agree exactly
        assert record["alphas"].keys() == ranks[0]["alphas"].keys()
        for label, alpha in ranks[0]["alphas"].items():
            torch.testing.assert_close(record["alphas"][label], alpha, rtol=0, atol=0)
        torch.testing.assert_close(record["head"], ranks[0]["head"], rtol=0, atol=0)
    assert max(alpha.abs().max() for alpha in ranks[0]["alphas"].values()) > 1e-2  # the logits moved
    # Node 0's rank 0 alone exported; node 1 wrote nothing of its own; the export is the one-node run's.
    assert files(two) == ["node0/export_from_rank0.json", "rank0.pt", "rank1.pt"]
    assert json.loads((two / "node0" / "export_from_rank0.json").read_text()) == \
        json.loads((one / "export_from_rank0.json").read_text())


def test_search_on_two_nodes_equals_one_node_and_only_node0_writes_results(
    dataset: Path, one_node_search: Path, tmp_path: Path
) -> None:
    run_nodes(["-m", "nni_covid3d", *search_args(dataset, tmp_path / "node{R}"), "--num-nodes", str(NODES)],
              tmp_path / "logs")
    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    assert (node0 / "arch_probs.json").read_bytes() == (one_node_search / "arch_probs.json").read_bytes()
    assert json.loads((node0 / "architecture.json").read_text())["choices"] == \
        json.loads((one_node_search / "architecture.json").read_text())["choices"]
    assert (node0 / "checkpoints" / "last.ckpt").is_file() and list((node0 / "tensorboard").rglob("events.*"))
    # Every rank derives the patient split and records it in its --out; nothing else comes from node 1.
    assert files(node1) == ["split.json"]
    assert (node1 / "split.json").read_bytes() == (node0 / "split.json").read_bytes()


def test_retrain_on_two_nodes_equals_one_node_and_only_node0_writes_results(
    dataset: Path, one_node_search: Path, venv_bin: Path, tmp_path: Path
) -> None:
    arch = one_node_search / "architecture.json"
    common = ["retrain", "--arch", str(arch), "--dataset", "ccccii", "--root", str(dataset), *RETRAIN]
    run_nodes(["-m", "nni_covid3d", *common, "--out", str(tmp_path / "node{R}"), "--num-nodes", str(NODES)],
              tmp_path / "logs")
    one = tmp_path / "one-node"
    run([str(venv_bin / "nni-covid3d"), *common, "--out", str(one), "--devices", "2"])

    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    for name in ("last.ckpt", "best.ckpt"):
        got = torch.load(node0 / "checkpoints" / name, weights_only=True, map_location="cpu")["state_dict"]
        want = torch.load(one / "checkpoints" / name, weights_only=True, map_location="cpu")["state_dict"]
        assert got.keys() == want.keys()
        for key, value in want.items():
            torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=f"{name}: {key}")
    assert json.loads((node0 / "history.json").read_text()) == json.loads((one / "history.json").read_text())
    assert files(node1) == ["split.json"]


@pytest.mark.parametrize("dead", [1, 0], ids=["worker-node-dies", "master-node-dies"])
def test_a_killed_node_makes_the_other_fail_promptly(dead: int, dataset: Path, tmp_path: Path) -> None:
    args = ["-m", "nni_covid3d", *search_args(dataset, tmp_path / "node{R}"), "--epochs", "50",
            "--num-nodes", str(NODES)]
    nodes = start_nodes(args, tmp_path / "logs")
    survivor = nodes[1 - dead]
    try:
        deadline = time.monotonic() + 300
        while not list((tmp_path / "node0" / "checkpoints").glob("search-epoch=*.ckpt")):  # mid-run (one per-epoch file is kept, the newest)
            assert time.monotonic() < deadline and all(n.poll() is None for n in nodes), \
                (tmp_path / "logs" / "node0.log").read_text()[-3000:]
            time.sleep(0.2)
        killed_at = time.monotonic()
        kill_node(nodes[dead])
        code = survivor.wait(timeout=120)
        elapsed = time.monotonic() - killed_at
    finally:
        for node in nodes:
            if node.poll() is None:
                kill_node(node)
    log = (tmp_path / "logs" / f"node{1 - dead}.log").read_text()
    assert code != 0
    assert elapsed < 60, f"node {1 - dead} needed {elapsed:.0f}s to give up"
    assert "Connection reset by peer" in log or "Connection closed by peer" in log, log[-3000:]
    assert "nni_covid3d FAILED" in log and f"rank      : {1 - dead} (local_rank: 0)" in log, log[-3000:]


def test_dnas_trial_on_two_nodes_equals_one_node_with_two_processes(dataset: Path, tmp_path: Path) -> None:
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"preset": "S", "widths": [8] * 6, "n_cells": [2, 1, 1, 1, 1, 1], "head_channels": 16}))
    trial = ["-m", "nni_covid3d.trial", "dnas", "--dataset", "ccccii", "--data-root", str(dataset), "--epochs", "2",
             "--size", "8", "32", "32", "--batch-size", "2", "--accelerator", "cpu", "--space-config", str(space),
             "--params", json.dumps({"tau_init": 3.0, "arc_learning_rate": 0.05})]
    run_nodes([*trial, "--num-nodes", str(NODES), "--output-dir", str(tmp_path / "node{R}")], tmp_path / "logs")
    one = tmp_path / "one-node"
    torchrun = Path(sys.executable).with_name("torchrun")
    run([str(torchrun), "--standalone", "--nproc-per-node", "2", *trial, "--devices", "2", "--output-dir", str(one)])

    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    assert json.loads((node0 / "architecture.json").read_text())["choices"] == \
        json.loads((one / "architecture.json").read_text())["choices"]
    assert json.loads((node0 / "result.json").read_text())["final"] == json.loads((one / "result.json").read_text())["final"]
    assert files(node1) == []  # rank 0 alone writes and reports

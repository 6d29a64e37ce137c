"""A GumbelDNAS search epoch on 1 and 2 "nodes" of this machine: what multi-node DDP costs per step.

    .venv/bin/python benchmarks/bench_nodes.py [--steps 12] [--batch-size 2] [--size 16 64 64]

Three runs of ``nni_covid3d.search.run_search`` (the code path of ``nni-covid3d search``), one epoch
each on the same in-memory random volumes, CovidNet3D-S (the full supernet), every step a search step
(architecture step + weight step, no warm-up epochs), gloo on the CPU:

``1 node x 2 threads``   one process, the whole machine (``torch.set_num_threads(2)``);
``1 node x 1 thread``    one process on one core: what each rank of the next run computes;
``2 nodes x 1 thread``   ``torchrun --nnodes 2 --nproc-per-node 1`` twice on 127.0.0.1 (node ranks
                         0 and 1, ``run_search(num_nodes=2)``), one core each: the CPU threads split
                         between the nodes; each rank takes half of the epoch's batches.

Per step, DDP averages every weight gradient of the supernet over the ranks (unused candidates
included: ``find_unused_parameters``) and GumbelDNAS averages the architecture paths' losses and the
logits' gradients; the draws need no broadcast (every rank draws from the same seeded generator).
``step overhead`` = median step time of a rank with 2 nodes / median step time of the same process
alone (1 node x 1 thread, same batch): the all-reduces and the waiting for the slower rank. The
gradient all-reduce alone is also timed (a flat tensor of the supernet's size, as DDP sends it).
Step times (wall, and the process's CPU time, which other load on the machine disturbs less) are
medians over the epoch after ``--warmup`` steps, on rank 0; the load average of the machine before
and after each run is recorded. Results go to ``benchmarks/bench_nodes.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPACE = {"preset": "S"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="search steps of the 1-node epoch (2 nodes: half each)")
    parser.add_argument("--warmup", type=int, default=1, help="first steps of each rank left out of the median")
    parser.add_argument("--batch-size", type=int, default=2, help="per process")
    parser.add_argument("--size", type=int, nargs=3, default=(16, 64, 64), metavar=("D", "H", "W"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "bench_nodes.json")
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # record file of one run
    parser.add_argument("--nodes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# ---- one run (a process of it) ------------------------------------------------------------------------
def run_worker(args: argparse.Namespace) -> None:
    """Search one epoch; rank 0 writes the step times to ``args.worker``."""
    import torch

    torch.set_num_threads(args.threads)
    import pytorch_lightning as pl

    from nni_covid3d.data import Preprocessing
    from nni_covid3d.search import SearchData, run_search

    class Volumes(torch.utils.data.Dataset):
        """Random volumes with labels, ``{"image": FloatTensor[1, D, H, W], "label": int}``."""

        def __init__(self, n: int, seed: int) -> None:
            generator = torch.Generator().manual_seed(seed)
            self.images = torch.randn(n, 1, *args.size, generator=generator)
            self.labels = torch.randint(0, 3, (n,), generator=generator).tolist()

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"image": self.images[i], "label": self.labels[i]}

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.cpu: list[float] = []
            self.epoch = 0.0

        def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.epoch = time.perf_counter()

        def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
            self.started, self.cpu_started = time.perf_counter(), time.process_time()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            self.steps.append(time.perf_counter() - self.started)
            self.cpu.append(time.process_time() - self.cpu_started)

        def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            self.epoch = time.perf_counter() - self.epoch

    n_train = 2 * args.steps * args.batch_size  # half of it (whole "patients") for the architecture steps
    data = SearchData(train=Volumes(n_train, 0), val=Volumes(args.batch_size, 1),
                      train_patients=[f"p{i}" for i in range(n_train)], class_names=["NCP", "CP", "Normal"],
                      preprocessing=Preprocessing(*args.size))
    timer = StepTimer()
    run_search(data, SPACE, epochs=1, batch_size=args.batch_size, strategy_options={"warmup_epochs": 0},
               accelerator="cpu", devices=1, num_nodes=args.nodes, callbacks=[timer])
    record: dict[str, Any] = {"steps": timer.steps, "cpu_steps": timer.cpu, "epoch_s": timer.epoch}
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        from nni_covid3d.search_spaces import CovidNet3DSpace

        flat = torch.zeros(sum(p.numel() for p in CovidNet3DSpace(**SPACE, num_classes=3).parameters()))
        times = []
        for _ in range(5):
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(flat)
            times.append(time.perf_counter() - started)
        record.update(allreduce_s=statistics.median(times), allreduce_mb=flat.numel() * 4 / 2**20)
        rank = dist.get_rank()
        dist.destroy_process_group()  # before exit: a live gloo group aborts the interpreter's shutdown
        if rank != 0:
            return
    args.worker.write_text(json.dumps(record) + "\n")


# ---- the three runs ---------------------------------------------------------------------------------------
def _command(args: argparse.Namespace, record: Path, nodes: int, threads: int) -> list[str]:
    return [str(Path(__file__).resolve()), "--worker", str(record), "--nodes", str(nodes), "--threads", str(threads),
            "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--size", *map(str, args.size)]


def run_config(args: argparse.Namespace, name: str, nodes: int, threads: int, folder: Path) -> dict[str, Any]:
    """Run one configuration in fresh processes; its record, with the load average around it."""
    from nni_covid3d.nnictl.run import free_port

    record = folder / f"{name.replace(' ', '_')}.json"
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    load_before = os.getloadavg()
    started = time.perf_counter()
    if nodes == 1:
        processes = [subprocess.Popen([sys.executable, *_command(args, record, 1, threads)], env=env, cwd=ROOT)]
    else:
        torchrun = str(Path(sys.executable).with_name("torchrun"))
        port = free_port()
        processes = [subprocess.Popen([torchrun, "--nnodes", str(nodes), "--nproc-per-node", "1", "--node-rank", str(rank),
                                       "--master-addr", "127.0.0.1", "--master-port", str(port),
                                       *_command(args, record, nodes, threads)], env=env, cwd=ROOT)
                     for rank in range(nodes)]
    codes = [p.wait(timeout=args.timeout) for p in processes]
    if any(codes):
        raise RuntimeError(f"{name}: exit codes {codes}")
    result = json.loads(record.read_text())
    steps = result["steps"][args.warmup:]
    result.update(name=name, nodes=nodes, threads_per_node=threads, wall_s=time.perf_counter() - started,
                  step_median_s=statistics.median(steps), n_steps=len(result["steps"]),
                  step_cpu_median_s=statistics.median(result["cpu_steps"][args.warmup:]),
                  load_before=list(load_before), load_after=list(os.getloadavg()))
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        run_worker(args)
        return 0
    if args.steps % 2 or args.steps - args.warmup < 2 * (1 + args.warmup):
        raise SystemExit("--steps must be even and leave steps after --warmup on each of 2 ranks")
    runs = []
    with tempfile.TemporaryDirectory() as folder:
        for name, nodes, threads in (("1 node x 2 threads", 1, 2), ("1 node x 1 thread", 1, 1),
                                     ("2 nodes x 1 thread", 2, 1)):
            runs.append(run_config(args, name, nodes, threads, Path(folder)))
            print(json.dumps({k: v for k, v in runs[-1].items() if k not in ("steps", "cpu_steps")}), flush=True)
    by_name = {run["name"]: run for run in runs}
    two, alone, whole = by_name["2 nodes x 1 thread"], by_name["1 node x 1 thread"], by_name["1 node x 2 threads"]
    summary = {
        "step_overhead": two["step_median_s"] / alone["step_median_s"],
        "step_cpu_overhead": two["step_cpu_median_s"] / alone["step_cpu_median_s"],
        "allreduce_share_of_step": two["allreduce_s"] / two["step_median_s"],
        "epoch_2_nodes_over_1_node_2_threads": two["epoch_s"] / whole["epoch_s"],
        "epoch_2_nodes_over_1_node_1_thread": two["epoch_s"] / alone["epoch_s"],
    }
    command = "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_nodes.py " + " ".join(
        f"--{k.replace('_', '-')} {v if not isinstance(v, (list, tuple)) else ' '.join(map(str, v))}"
        for k, v in (("steps", args.steps), ("warmup", args.warmup), ("batch_size", args.batch_size), ("size", args.size)))
    report = {"command": command, "machine": {"cpus": os.cpu_count()}, "space": SPACE,
              "batch_per_process": args.batch_size, "input": list(args.size), "summary": summary, "runs": runs}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

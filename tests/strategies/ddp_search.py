"""Run GumbelDNAS under Lightning DDP on CPU (gloo), 2 processes. Used by test_ddp.py and test_multinode.py.

Usage: python -m tests.strategies.ddp_search OUT_DIR
Lightning re-launches this script for rank 1; every rank saves its logits, rank 0 alone the export.

Usage: python -m tests.strategies.ddp_search OUT_DIR --precision bf16-mixed
The same search under Lightning's mixed precision.

Usage: torchrun --nnodes 2 --nproc-per-node 1 --node-rank R ... -m tests.strategies.ddp_search OUT_DIR --num-nodes 2
The same search with one process on each of two nodes: every rank saves its logits into OUT_DIR (the
test's record), and each node gets its own output folder OUT_DIR/node<R> (as separate machines would),
where rank 0 alone writes the export.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from nni_covid3d.strategies import GumbelDNAS
from tests.strategies.toy import MixedSpace, image_dataset, make_evaluator, run_search

#: The processes of every run: 2 devices on one node, or 1 device on each of 2 nodes.
WORLD_SIZE = 2


def main(out: Path, num_nodes: int = 1, precision: str = "32-true") -> None:
    if num_nodes == 1:
        launch_rank = os.environ.get("LOCAL_RANK", "0")  # unset in the process that starts the others
        export_dir = out
    else:  # torchrun sets the global rank and the node's rank for every process
        launch_rank = os.environ["RANK"]
        export_dir = out / f"node{os.environ['GROUP_RANK']}"
    torch.manual_seed(int(launch_rank))  # different weight init per rank: DDP must broadcast rank 0's
    evaluator = make_evaluator(image_dataset(64), image_dataset(32, seed=1), epochs=2, batch_size=8,
                               devices=WORLD_SIZE // num_nodes, num_nodes=num_nodes,
                               strategy="ddp_find_unused_parameters_true", precision=precision)
    strategy = GumbelDNAS(seed=0, arc_learning_rate=0.05,
                          export_path=export_dir / f"export_from_rank{launch_rank}.json")
    run_search(MixedSpace(), evaluator, strategy)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    alphas = {str(k): v.detach().clone() for k, v in strategy.oneshot_module.label_alphas().items()}
    head = strategy.oneshot_module.model.head.weight.detach().clone()
    torch.save({"alphas": alphas, "head": head, "world": evaluator.trainer.world_size,
                "precision": str(evaluator.trainer.precision)}, out / f"rank{rank}.pt")


def _option(name: str, default: str) -> str:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(_option("--num-nodes", "1")), _option("--precision", "32-true"))

"""Search -> export -> retrain -> test on one dataset, with the ``nni-covid3d`` commands in-process.

Synthetic phantoms (no download; a few minutes on a laptop CPU)::

    python examples/search_export_retrain.py --synthetic --out runs/example

A dataset on disk (GPU recommended; the paper's settings)::

    python examples/search_export_retrain.py --dataset ccccii --root /data/CC-CCII --out runs/ccccii \
        --search-epochs 30 --epochs 100 --depth 32 --size 128 --precision bf16-mixed

Steps: ``search`` (GumbelDNAS, ``nni_covid3d.strategies.get("gumbel-dnas")``) writes
``OUT/search/architecture.json`` and the patient split; ``retrain`` trains that architecture from
scratch on the same split (selection on validation) and tests the selected checkpoint once.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nni_covid3d.cli import main
from nni_covid3d.precision import add_precision_argument


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ccccii", choices=("ccccii", "mosmed", "covidctset"))
    parser.add_argument("--root", type=Path, help="dataset root (omit with --synthetic)")
    parser.add_argument("--synthetic", action="store_true", help="write phantoms in the dataset's layout first")
    parser.add_argument("--patients", type=int, default=30, help="phantom patients (--synthetic)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--search-epochs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=8, help="retraining epochs")
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="in-plane size H = W")
    parser.add_argument("--accelerator", default="auto")
    add_precision_argument(parser)
    return parser.parse_args()


def run(args: argparse.Namespace) -> dict:
    root = args.root
    if args.synthetic:
        from nni_covid3d.data import write_synthetic_dataset

        root = write_synthetic_dataset(args.dataset, args.out / "data", n_patients=args.patients, seed=0,
                                       size=max(args.size, 64), slices=(args.depth, args.depth + 8))
    if root is None:
        raise SystemExit("give --root DIR or --synthetic")
    shape = ["--depth", str(args.depth), "--height", str(args.size), "--width", str(args.size)]
    common = ["--dataset", args.dataset, "--root", str(root), "--accelerator", args.accelerator,
              "--precision", args.precision, *shape]
    search_dir, retrain_dir = args.out / "search", args.out / "retrain"
    if main(["search", *common, "--strategy", "gumbel-dnas", "--epochs", str(args.search_epochs),
             "--out", str(search_dir)]) != 0:
        raise SystemExit("search failed")
    arch = search_dir / "architecture.json"
    if main(["arch", "show", str(arch)]) != 0:
        raise SystemExit(f"cannot read {arch}")
    # Same patients as the search: its split file (the test split was not touched by the search).
    if main(["retrain", *common, "--arch", str(arch), "--split-file", str(search_dir / "split.json"),
             "--epochs", str(args.epochs), "--out", str(retrain_dir)]) != 0:
        raise SystemExit("retrain failed")
    metrics = json.loads((retrain_dir / "eval_test" / "metrics.json").read_text())
    print(f"test accuracy of the searched architecture: {100 * metrics['accuracy']:.2f}% "
          f"(balanced {100 * metrics['balanced_accuracy']:.2f}%), details in {retrain_dir / 'eval_test'}")
    return metrics


if __name__ == "__main__":
    run(parse_args())

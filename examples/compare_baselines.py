"""Train and test the searched CovidNet3D and the baselines on the three datasets; one table.

Synthetic phantoms (no download; small models only on a CPU)::

    python examples/compare_baselines.py --synthetic --arch runs/example/search/architecture.json \
        --models covidnet3d mc3_18 --out runs/compare

The real datasets (GPU; every model, the paper's figures beside ours)::

    python examples/compare_baselines.py --root ccccii=/data/CC-CCII --root mosmed=/data/MosMedData \
        --root covidctset=/data/COVID-CTset --arch ccccii=arch_cc.json --arch mosmed=arch_mm.json \
        --arch covidctset=arch_ct.json --epochs 100 --precision bf16-mixed --out runs/compare

Writes ``OUT/comparison.md`` and ``OUT/comparison.csv`` (see ``nni_covid3d.compare``).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nni_covid3d.cli import main
from nni_covid3d.precision import add_precision_argument

DATASETS = ("ccccii", "mosmed", "covidctset")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", default=[], metavar="DATASET=DIR")
    parser.add_argument("--synthetic", action="store_true", help="write phantoms of all three datasets first")
    parser.add_argument("--patients", type=int, default=24, help="phantom patients per dataset (--synthetic)")
    parser.add_argument("--arch", action="append", default=[], metavar="[DATASET=]FILE",
                        help="architecture of covidnet3d (needed when it is among --models)")
    parser.add_argument("--models", nargs="+", default=["covidnet3d", "resnet3d101", "densenet3d121", "mc3_18"])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--depth", type=int, default=32, help="slices (DenseNet3D121 needs 32)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--accelerator", default="auto")
    add_precision_argument(parser)
    return parser.parse_args()


def run(args: argparse.Namespace) -> int:
    roots = list(args.root)
    if args.synthetic:
        from nni_covid3d.data import write_synthetic_dataset

        for seed, name in enumerate(DATASETS):
            root = write_synthetic_dataset(name, args.out / "data" / name, n_patients=args.patients, seed=seed,
                                           size=max(args.size, 64), slices=(args.depth, args.depth + 8))
            roots.append(f"{name}={root}")
    if not roots:
        raise SystemExit("give --root DATASET=DIR (repeatable) or --synthetic")
    datasets = [r.partition("=")[0] for r in roots]
    arch = [a for a in args.arch] if "covidnet3d" in args.models else []
    return main([
        "compare", "--datasets", *datasets, *[x for r in roots for x in ("--root", r)],
        "--models", *args.models, *[x for a in arch for x in ("--arch", a)], "--out", str(args.out),
        "--epochs", str(args.epochs), "--depth", str(args.depth), "--height", str(args.size),
        "--width", str(args.size), "--accelerator", args.accelerator, "--precision", args.precision,
    ])


if __name__ == "__main__":
    raise SystemExit(run(parse_args()))

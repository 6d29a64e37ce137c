"""``nni-covid3d synth``: write synthetic chest CT phantoms in a real dataset layout.

    nni-covid3d synth --layout ccccii --out data/ccccii --patients 30 --seed 0 --size 96 [--phantom intensity]
    nni-covid3d synth --layout ccccii --out data/ccccii-test --patients 1000 --seed 1 --size 96   # independent test cohort
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synth", help="write synthetic phantoms in the CC-CCII, MosMedData or COVID-CTset layout")
    parser.add_argument("--layout", required=True, choices=("ccccii", "mosmed", "covidctset"))
    parser.add_argument("--out", required=True, type=Path, help="dataset root to create")
    parser.add_argument("--patients", type=int, default=30, help="number of patients (default 30)")
    parser.add_argument("--seed", type=int, default=0,
                        help="everything is drawn from it; patients are numbered from seed x 100000, so a cohort "
                             "of another seed (an independent test cohort for benchmark --test-root) shares no patient")
    parser.add_argument("--size", type=int, default=512, help="in-plane size in pixels (default 512, as the real data)")
    parser.add_argument("--slices", type=int, nargs=2, metavar=("MIN", "MAX"), default=None, help="slices per scan")
    parser.add_argument("--variant", choices=("raw", "folds"), default="raw", help="covidctset: raw folders or the fold layout")
    parser.add_argument("--involvement", type=float, nargs=2, metavar=("MIN", "MAX"), default=None,
                        help="ccccii, covidctset: fraction of the lungs at abnormal density in every scan (shape phantoms) "
                             "or covered by a diseased scan's lesions (intensity phantoms); default 0.01 0.15")
    parser.add_argument("--phantom", choices=("shape", "intensity"), default="shape",
                        help="shape (default): classes differ only in the shape and place of abnormal tissue; "
                             "intensity: lesions add density to diseased scans, so the histogram shows the class")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nni_covid3d.cli import UserError
    from nni_covid3d.data import load_dataset, write_synthetic_dataset

    if args.out.exists() and any(args.out.iterdir()):
        raise UserError(f"{args.out}: output folder exists and is not empty")
    if args.size < 16:
        raise UserError(f"--size must be at least 16, got {args.size}")
    try:
        root = write_synthetic_dataset(
            args.layout, args.out, n_patients=args.patients, seed=args.seed, size=args.size,
            slices=tuple(args.slices) if args.slices else None, variant=args.variant,
            involvement=tuple(args.involvement) if args.involvement else None, phantom=args.phantom,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    print(load_dataset(args.layout, root).summary())
    return 0

"""``nni-covid3d demo``: the whole pipeline on synthetic phantoms (what ``make demo`` runs)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the whole pipeline on synthetic data (no download)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default: demo_output)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nni_covid3d.demo import run_demo

    return run_demo(args.out)

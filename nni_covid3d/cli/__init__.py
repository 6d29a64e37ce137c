"""The ``nni-covid3d`` command line.

Each command group lives in its own module of this package and exposes ``register(subparsers)``,
which adds its sub-parser(s) and sets ``func`` (a callable taking the parsed ``argparse.Namespace``
and returning an exit code). Modules import heavy libraries (torch, NNI, MONAI) inside their
command functions, so ``--help`` and ``--version`` stay fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from nni_covid3d._version import __version__

# Order is the order shown in ``--help``.
COMMAND_MODULES: tuple[str, ...] = (
    "nni_covid3d.cli.info",
    "nni_covid3d.cli.synth",
    "nni_covid3d.cli.data",
    "nni_covid3d.cli.demo",
    "nni_covid3d.cli.arch",
    "nni_covid3d.cli.train",
    "nni_covid3d.cli.nni",
    "nni_covid3d.cli.predict",
    "nni_covid3d.cli.cam",
    "nni_covid3d.cli.search",
    "nni_covid3d.cli.benchmark",
)


class UserError(Exception):
    """An error caused by the user's input; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nni-covid3d",
        description="Search, train and explain 3D CNNs for COVID-19 detection from chest CT (an NNI plugin).",
    )
    parser.add_argument("--version", action="version", version=f"nni-covid3d {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (UserError, FileNotFoundError, ValueError) as error:
        # Readers and validators raise these with messages that name the file and the problem.
        print(f"nni-covid3d {args.command}: error: {error}", file=sys.stderr)
        return 1

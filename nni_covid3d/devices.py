"""Where a run computes: the ``--accelerator``, ``--devices``, ``--num-nodes`` and ``--precision``
options, defined once for ``search``, ``train``/``retrain`` and the NNI trial."""
from __future__ import annotations

import argparse

from nni_covid3d.precision import add_precision_argument

__all__ = ["add_device_arguments", "parse_devices"]


def parse_devices(text: str) -> int | str:
    """``--devices``: a count (``"2"`` -> 2) or one of Lightning's strings (``"auto"``, ``"0,1"``)."""
    return int(text) if str(text).isdigit() else text


def add_device_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--accelerator``, ``--devices``, ``--num-nodes`` and ``--precision`` to ``parser``."""
    parser.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    parser.add_argument("--devices", type=parse_devices, default=1,
                        help="devices per machine (DDP when more than one)")
    parser.add_argument("--num-nodes", type=int, default=1,
                        help="machines of a multi-node DDP run, --devices each (under torchrun or srun; README)")
    add_precision_argument(parser)

"""The numeric precision of training and search: one option shared by every command.

``32-true`` (the default) trains in fp32; ``bf16-mixed`` and ``16-mixed`` run the forward pass under
autocast (bfloat16 / float16) with fp32 weights (Lightning's ``Trainer(precision=...)``); ``16-mixed``
adds loss scaling and needs a CUDA GPU. Checkpoints hold fp32 weights whatever the precision, and
inference (``evaluate``, ``predict``, ``cam``) always runs in fp32: it is a small share of the time,
and its probabilities and CAMs then do not depend on how the model was trained.
"""
from __future__ import annotations

import argparse

__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "PRECISION_HELP", "add_precision_argument", "check_precision"]

#: The precisions a run may ask for (Lightning's names).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
DEFAULT_PRECISION = "32-true"
PRECISION_HELP = ("numeric precision: fp32 (32-true, default), bfloat16 autocast (bf16-mixed; CPU or a GPU that has "
                  "it) or float16 autocast with loss scaling (16-mixed; CUDA GPU only)")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--precision {32-true, bf16-mixed, 16-mixed}`` (default ``32-true``) to ``parser``."""
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=PRECISIONS, help=PRECISION_HELP)


def check_precision(precision: str, accelerator: str = "auto") -> str:
    """``precision`` if this machine can run it with ``accelerator``, else a ``ValueError`` naming the option.

    Lightning would silently fall back from ``16-mixed`` to ``bf16-mixed`` on a CPU; this refuses instead.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "16-mixed":
        import torch

        if str(accelerator) == "cpu" or not torch.cuda.is_available():
            where = "--accelerator cpu" if str(accelerator) == "cpu" else "this machine has no CUDA GPU"
            raise ValueError(f"--precision 16-mixed (float16 autocast with loss scaling) needs a CUDA GPU, but {where}; "
                             "use --precision bf16-mixed or 32-true")
    return precision


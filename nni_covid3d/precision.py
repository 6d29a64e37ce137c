"""The numeric precision of training and search: one option shared by every command.

``32-true`` (the default) trains in fp32; ``bf16-mixed`` and ``16-mixed`` run the forward pass under
autocast (bfloat16 / float16) with fp32 weights (Lightning's ``Trainer(precision=...)``); ``16-mixed``
adds loss scaling and needs a CUDA GPU. Checkpoints hold fp32 weights whatever the precision.

Inference (``evaluate``, ``predict``, ``cam``) runs in fp32 unless its own ``--precision`` asks for
autocast (:func:`inference_autocast`), whatever the precision the model was trained in: its
probabilities and CAMs then do not depend on how the model was trained. Under autocast the
probabilities are still computed in fp32 from the logits. ``predict`` and ``cam`` run on the CPU, so
they offer ``32-true`` and ``bf16-mixed`` only (:data:`CPU_PRECISIONS`).
"""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["PRECISIONS", "CPU_PRECISIONS", "DEFAULT_PRECISION", "PRECISION_HELP", "add_precision_argument",
           "check_precision", "inference_autocast"]

#: The precisions a run may ask for (Lightning's names).
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
#: Those a CPU runs (float16 autocast with loss scaling needs a CUDA GPU).
CPU_PRECISIONS = ("32-true", "bf16-mixed")
DEFAULT_PRECISION = "32-true"
PRECISION_HELP = ("numeric precision: fp32 (32-true, default), bfloat16 autocast (bf16-mixed; CPU or a GPU that has "
                  "it) or float16 autocast with loss scaling (16-mixed; CUDA GPU only)")


def add_precision_argument(parser: argparse.ArgumentParser, choices: tuple[str, ...] = PRECISIONS) -> None:
    """Add ``--precision`` with ``choices`` (all three by default; default ``32-true``) to ``parser``."""
    parser.add_argument("--precision", default=DEFAULT_PRECISION, choices=choices,
                        help=PRECISION_HELP if choices == PRECISIONS else
                        "numeric precision: fp32 (32-true, default) or bfloat16 autocast (bf16-mixed)")


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


def inference_autocast(precision: str, device_type: str) -> Any:
    """The autocast context of an inference pass at ``precision`` on ``device_type`` (``"cpu"``, ``"cuda"``):
    bfloat16 or float16 autocast, or none for ``32-true``."""
    import torch

    check_precision(precision, "cpu" if device_type == "cpu" else "auto")
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    return torch.autocast(device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

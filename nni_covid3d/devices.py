"""Where and how a run computes: ``--accelerator``, ``--devices``, ``--num-nodes``, ``--precision``
and the data-loading options ``--workers``, ``--loader``, ``--augment-on``, ``--channels-last``, defined
once for ``search``, ``train``/``retrain`` and the NNI trial."""
from __future__ import annotations

import argparse

from nni_covid3d.precision import add_precision_argument

__all__ = ["LOADER_KINDS", "AUGMENT_ON", "CHANNELS_LAST_CHOICES", "add_device_arguments", "add_loader_arguments",
           "parse_devices", "parse_workers"]

#: ``--loader`` choices: PyTorch's DataLoader, MONAI's ThreadDataLoader, or the volumes cached on the
#: training device (``nni_covid3d.data.loading``).
LOADER_KINDS = ("torch", "thread", "device")
#: ``--augment-on`` choices: train-time augmentation per volume in the loader (MONAI transforms), or per
#: batch on the training device (``nni_covid3d.data.batch_augment``).
AUGMENT_ON = ("loader", "device")
#: ``--channels-last`` choices (``nni_covid3d.training.memory_format``).
CHANNELS_LAST_CHOICES = ("auto", "on", "off")


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


def parse_workers(text: str) -> int | None:
    """``--workers``: a count, or ``auto`` (``None``: chosen for the device, ``nni_covid3d.data.loading``)."""
    if text == "auto":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a number of worker processes or 'auto', got {text!r}")
    return int(text)


def add_loader_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add ``--workers``, ``--loader``, ``--augment-on`` and ``--channels-last``: how batches reach the device."""
    parser.add_argument("--workers", type=parse_workers, default=None, metavar="N|auto",
                        help="data loader worker processes (default auto: none on a CPU, up to 8 with pinned "
                             "memory on a GPU)")
    parser.add_argument("--loader", default="torch", choices=LOADER_KINDS,
                        help="torch: PyTorch's DataLoader; thread: MONAI's ThreadDataLoader (a background thread "
                             "fills a buffer of batches; suits data cached in memory); device: every preprocessed "
                             "volume held in GPU memory and batches built there, no workers (MONAI's CacheDataset + "
                             "ToDeviced; needs memory for the whole split; pair with --augment-on device)")
    parser.add_argument("--augment-on", default="loader", choices=AUGMENT_ON,
                        help="where train-time augmentation runs: loader (MONAI transforms per volume, default) or "
                             "device (the same augmentation on the whole batch once it is on the GPU)")
    parser.add_argument("--channels-last", default="auto", choices=CHANNELS_LAST_CHOICES,
                        help="3D convolutions in channels-last memory format: on, off, or auto (on where it "
                             "measured faster)")

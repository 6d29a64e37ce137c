"""How batches reach the model: the one DataLoader factory of every training, search and trial loop.

The loader's settings follow the device unless the user sets them (``--workers``, ``--loader``):

* on a CPU: no worker processes. The training step itself keeps the cores busy, and the cached
  volumes only need a crop, a flip and light augmentation per access;
* on a GPU: worker processes (up to 8, one core left for the training process), pinned memory and
  four batches prefetched per worker, so the next batches are ready while the GPU computes;
* ``--loader thread``: MONAI's ``ThreadDataLoader``, which also fills a buffer of batches from a
  background thread; it suits data cached in memory, where worker processes would copy the cache;
* ``--loader device``: MONAI's "fast training" recipe. Every preprocessed volume is held in the
  training device's memory (``CacheDataset`` + ``ToDeviced``, filled before the first epoch), and the
  slices are sampled there in the training process: no worker processes and no host-to-device copies
  of volumes. It needs device memory for the whole split (about 4 MB per scan at 60 x 128 x 128), and
  suits ``--augment-on device`` (the loader's per-volume augmentation would also run on the GPU, one
  volume at a time).

Training loaders never keep their workers between epochs: each epoch's workers are seeded from
(seed, epoch) (``training/resume.py``), which persistent workers would not see, and a resumed run
would then draw other augmentations.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from nni_covid3d.devices import LOADER_KINDS

if TYPE_CHECKING:
    from nni_covid3d.data.transforms import ScanDataset

__all__ = ["LOADER_KINDS", "drop_remainder", "uses_gpu", "default_workers", "loader_settings", "training_device",
           "scans_of", "make_loader"]

_MAX_GPU_WORKERS = 8
_PREFETCH_PER_WORKER = 4


def drop_remainder(n_samples: int, batch_size: int) -> bool:
    """Whether a training loader drops its last partial batch: yes when there is more than one batch.

    A last batch of a single volume breaks BatchNorm once the feature map is 1x1x1; a dataset smaller
    than one batch keeps its only (partial) batch rather than yielding nothing.
    """
    return n_samples > batch_size


def uses_gpu(accelerator: str = "auto") -> bool:
    """Whether a run with Lightning's ``accelerator`` computes on a CUDA GPU."""
    return str(accelerator) in ("gpu", "cuda") or (str(accelerator) == "auto" and torch.cuda.is_available())


def default_workers(accelerator: str = "auto", cpus: int | None = None) -> int:
    """Loader worker processes for a run on ``accelerator`` when the user sets none (module docstring)."""
    if not uses_gpu(accelerator):
        return 0
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(_MAX_GPU_WORKERS, cpus - 1))


def loader_settings(accelerator: str = "auto", workers: int | None = None, kind: str = "torch") -> tuple[int, bool]:
    """(worker processes, pinned memory) of a loader of ``kind`` for a run on ``accelerator``, with the
    user's ``--workers`` (``None``: chosen for the device); bad settings are refused naming the option."""
    if kind not in LOADER_KINDS:
        raise ValueError(f"--loader must be one of {', '.join(LOADER_KINDS)}, got {kind!r}")
    if workers is not None and workers < 0:
        raise ValueError(f"--workers must be 0 or more, got {workers}")
    if kind == "device":  # the volumes are on the device already
        if workers:
            raise ValueError("--loader device loads in the training process: --workers must be 0 or auto, "
                             f"got {workers}")
        return 0, False
    return (default_workers(accelerator) if workers is None else workers), uses_gpu(accelerator)


def training_device(accelerator: str = "auto") -> torch.device:
    """The device this process trains on: its local rank's GPU (``LOCAL_RANK``, set for every process of
    a DDP run), or the CPU. GPUs are counted as the process sees them: to train on particular GPUs with
    ``--loader device``, name them in ``CUDA_VISIBLE_DEVICES`` rather than in ``--devices``."""
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if uses_gpu(accelerator) else torch.device("cpu")


def scans_of(dataset: Dataset) -> ScanDataset:
    """The :class:`~nni_covid3d.data.transforms.ScanDataset` under ``dataset`` (through ``Subset``)."""
    from nni_covid3d.data.transforms import ScanDataset

    inner = dataset
    while isinstance(inner, Subset):
        inner = inner.dataset
    if not isinstance(inner, ScanDataset):
        raise ValueError(f"--loader device caches preprocessed scans on the device; it needs a dataset of scans "
                         f"(nni_covid3d.data.make_dataset), got {type(inner).__name__}")
    return inner


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool,
    seed: int | None = None,
    sampler: Sampler | None = None,
    accelerator: str = "auto",
    workers: int | None = None,
    kind: str = "torch",
    drop_last: bool | None = None,
    traced: bool = False,
) -> DataLoader:
    """A DataLoader over ``dataset`` with the device's settings (module docstring).

    Args:
        dataset: yields ``{"image": FloatTensor[1, D, H, W], "label": int, ...}``.
        batch_size: volumes per batch.
        train: shuffled (unless ``sampler``), drops a last partial batch (:func:`drop_remainder`),
            workers restarted every epoch; otherwise in order, every item, workers kept.
        seed: seeds the shuffle (``torch.Generator``); ``None`` leaves it to the global RNG.
        sampler: draws the training order instead of shuffling (e.g. class-balanced sampling).
        accelerator: Lightning's accelerator name; chooses the defaults.
        workers: worker processes; ``None`` chooses them for the device (:func:`default_workers`).
        kind: ``"torch"``, ``"thread"`` or ``"device"`` (:data:`LOADER_KINDS`; ``"device"`` caches the
            dataset's volumes on the training device first, and loads in this process).
        drop_last: overrides the rule above (NNI's DARTS family draws training-sized batches
            from its validation loader).
        traced: an ``nni.trace``-d loader, as NNI's evaluators need to serialise it.
    """
    n_workers, pin_memory = loader_settings(accelerator, workers, kind)
    if kind == "device":
        scans_of(dataset).cache_on(training_device(accelerator))
    options: dict[str, Any] = {
        "batch_size": batch_size,
        "shuffle": train and sampler is None,
        "sampler": sampler,
        "num_workers": n_workers,
        "generator": None if seed is None else torch.Generator().manual_seed(seed),
        "drop_last": (train and drop_remainder(len(dataset), batch_size)) if drop_last is None else drop_last,
        "pin_memory": pin_memory,
    }
    if n_workers > 0:
        options.update(persistent_workers=not train, prefetch_factor=_PREFETCH_PER_WORKER)
    if kind == "thread":
        from monai.data import ThreadDataLoader as loader_class
    else:
        loader_class = DataLoader
    if traced:
        import nni

        loader_class = nni.trace(loader_class)
    return loader_class(dataset, **options)

"""Exact, refusing resume for ``search``, ``train`` and ``retrain``.

A run killed at any point (even ``kill -9`` while a checkpoint is written) and resumed from its
``last.ckpt`` ends as the uninterrupted run with the same seed would have, losing at most the
interrupted epoch. Three pieces make it so:

* :class:`ResumableRun`, a Lightning callback, reseeds every random stream a training epoch draws
  from (the global torch / numpy / python RNGs, the training loaders' shuffling generators, the
  datasets' random augmentations) from ``(seed, epoch)`` alone before the epoch's first batch is
  drawn, so epoch ``k`` of a resumed run draws what epoch ``k`` of the uninterrupted run drew. It also
  stores the run's record (what a resume must match) in every checkpoint.
* :class:`AtomicCheckpointIO` writes checkpoints atomically (``nni_covid3d.atomic``), so
  ``last.ckpt`` is always a whole checkpoint.
* :func:`check_resume` refuses, before training starts, a damaged checkpoint (naming the file) or
  one whose run differs from the one being resumed (naming what differs).
"""
from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO
from torch.utils.data import ConcatDataset, DataLoader, Subset

from nni_covid3d.atomic import atomic_write_bytes, crash_spec, kill_this_process, remove_leftovers
from nni_covid3d.training.checkpoint import CheckpointError, load_checked, plain

__all__ = ["RUN_KEY", "ResumeError", "AtomicCheckpointIO", "ResumableRun", "epoch_seed", "dataset_fingerprint",
           "data_record", "read_training_checkpoint", "record_differences", "check_resume"]

#: Key of the run record inside a checkpoint.
RUN_KEY = "nni_covid3d_run"


class ResumeError(ValueError):
    """A resume that would not continue the checkpoint's run (different data, space or settings)."""


def epoch_seed(seed: int, epoch: int, stream: int = 0) -> int:
    """A 32-bit seed for random stream ``stream`` of epoch ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, stream]).generate_state(1)[0])


def _datasets(dataset: Any) -> Iterable[Any]:
    """``dataset`` and the datasets it wraps (``Subset``, ``ConcatDataset``)."""
    yield dataset
    if isinstance(dataset, Subset):
        yield from _datasets(dataset.dataset)
    elif isinstance(dataset, ConcatDataset):
        for part in dataset.datasets:
            yield from _datasets(part)


def _loaders(value: Any) -> Iterable[DataLoader]:
    """The DataLoaders in ``value`` (a loader, or a dict, list or tuple of them, nested)."""
    if isinstance(value, DataLoader):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _loaders(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _loaders(item)


def _generators(loader: DataLoader) -> Iterable[torch.Generator]:
    """The generators ``loader`` shuffles or samples with (its own, its sampler's)."""
    samplers = [getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
    for owner in (loader, *samplers):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            yield generator


class ResumableRun(pl.Callback):
    """Reseeds an epoch's random streams from ``(seed, epoch)``; stores ``record`` in every checkpoint.

    Args:
        seed: the run's seed.
        loaders: the training (and, if augmented, validation) loaders as built, or dicts or lists of
            them. Their generators (also those of loaders derived from them that share them, e.g.
            GumbelDNAS's weight and architecture loaders) and their datasets (``set_random_state``)
            are reseeded each epoch.
        record: what a resume must match (JSON-compatible; see :func:`check_resume`).

    With ``CRASH_ENV`` (``nni_covid3d.atomic``) set to ``batch:EPOCH:BATCH``, the process SIGKILLs
    itself before that training batch (crash tests).
    """

    def __init__(self, seed: int, loaders: Iterable[Any] = (), record: Mapping[str, Any] | None = None):
        self.seed = int(seed)
        self.loaders = list(_loaders(loaders))
        self.record = plain(record) if record is not None else None
        self._start_epoch = 0  # of this fit: the epochs its checkpoint finished
        self._first_epoch_seeded = False

    def reseed(self, epoch: int) -> None:
        """Seed every random stream of epoch ``epoch``."""
        torch.manual_seed(epoch_seed(self.seed, epoch, 0))
        np.random.seed(epoch_seed(self.seed, epoch, 1))
        random.seed(epoch_seed(self.seed, epoch, 2))
        seen: set[int] = set()
        stream = 3
        for loader in self.loaders:
            for owner in (*_generators(loader), *_datasets(loader.dataset)):
                if id(owner) in seen:
                    continue
                seen.add(id(owner))
                if isinstance(owner, torch.Generator):
                    owner.manual_seed(epoch_seed(self.seed, epoch, stream))
                elif callable(getattr(owner, "set_random_state", None)):
                    owner.set_random_state(epoch_seed(self.seed, epoch, stream))
                else:
                    continue
                stream += 1

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._start_epoch, self._first_epoch_seeded = 0, False  # before a checkpoint is restored

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # The epochs the checkpoint finished: the loops are restored only after ``on_fit_start``.
        progress = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        self._start_epoch = int(progress.get("processed", 0))
        if self._first_epoch_seeded:  # a strategy that restores after on_fit_start (e.g. FSDP)
            self.reseed(self._start_epoch)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning creates (and prefetches from) the first epoch's iterator of a fit before
        # ``on_train_epoch_start``: seed that epoch here.
        self.reseed(self._start_epoch)
        self._first_epoch_seeded = True

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._first_epoch_seeded:  # in on_fit_start
            self._first_epoch_seeded = False
            return
        self.reseed(trainer.current_epoch)  # later epochs' iterators are created after this hook

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        spec = crash_spec("batch")
        if spec is not None and [int(v) for v in spec] == [trainer.current_epoch, batch_idx]:
            kill_this_process()

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.record is not None:
            checkpoint[RUN_KEY] = self.record


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic writes: a killed write leaves the previous file whole."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buffer.getbuffer())


def dataset_fingerprint(dataset: Any) -> dict[str, Any]:
    """What identifies a dataset's items: their count and, for scan datasets, the source datasets and a
    hash of the scans and labels in order."""
    scans = getattr(dataset, "scans", None)
    if scans is None:
        return {"items": len(dataset)}
    keys = "\n".join(f"{scan.dataset}:{scan.key}:{scan.label}" for scan in scans)
    return {"items": len(scans), "datasets": sorted({scan.dataset for scan in scans}),
            "scans_sha1": hashlib.sha1(keys.encode()).hexdigest()[:16]}


def data_record(train: Any, val: Any, class_names: Iterable[str]) -> dict[str, Any]:
    """The ``dataset`` and ``split`` sections of a run record: what a resumed run must read."""
    train_fp, val_fp = dataset_fingerprint(train), dataset_fingerprint(val)
    sources = sorted(set(train_fp.get("datasets", [])) | set(val_fp.get("datasets", [])))
    return {"dataset": {"sources": sources, "class_names": list(class_names)},
            "split": {"train": train_fp, "val": val_fp}}


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """The Lightning training checkpoint at ``path`` (``weights_only``), after the file checks of
    ``read_checkpoint``: a damaged, cut or foreign file raises :class:`CheckpointError` naming it."""
    path = Path(path)
    checkpoint = load_checked(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict) or "loops" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning training checkpoint (no state_dict and loops)")
    return checkpoint


def record_differences(stored: Any, current: Any, where: str = "") -> list[str]:
    """``KEY: X in the checkpoint, Y now`` for each leaf that differs between two records."""
    if isinstance(stored, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(stored) | set(current), key=str):
            path = f"{where}.{key}" if where else str(key)
            found += record_differences(stored.get(key), current.get(key), path)
        return found
    return [] if stored == current else [f"{where}: {stored!r} in the checkpoint, {current!r} now"]


def check_resume(path: str | Path, record: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint at ``path``, after checking it can continue the run described by ``record``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: a damaged, cut or foreign file (naming it).
        ResumeError: the checkpoint's run differs: each differing setting is named with both values.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot resume: {path} does not exist")
    remove_leftovers(path.parent)
    checkpoint = read_training_checkpoint(path)
    stored = checkpoint.get(RUN_KEY)
    if not isinstance(stored, dict):
        raise ResumeError(f"cannot resume from {path}: it holds no record of its run (written by an older "
                          "version?), so an exact resume cannot be checked; start a new run")
    differences = record_differences(stored, plain(record))
    if differences:
        raise ResumeError(f"cannot resume from {path}: this run differs from the checkpoint's in "
                          + "; ".join(differences))
    return checkpoint

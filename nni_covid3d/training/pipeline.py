"""Train one model, select it on validation, evaluate the selected checkpoint on a held-out split.

The functions here work on any torch ``Dataset`` yielding ``{"image": FloatTensor[C, D, H, W],
"label": int}``; ``nni_covid3d.training.experiment`` wires them to the dataset readers and splits.

Layout of an output folder::

    out/checkpoints/best.ckpt      selected on the validation metric (``config.monitor``)
    out/checkpoints/last.ckpt      for ``resume``
    out/tensorboard/               TensorBoard logs
    out/csv/version_<n>/metrics.csv  per-step / per-epoch log of each (resumed) run (CSVLogger)
    out/training_curves.png        loss and accuracy per epoch
    out/history.json               the same, as JSON
    out/eval_<split>/metrics.json  evaluation of the selected checkpoint (+ roc.png, confusion.png,
                                   predictions.csv)
"""
from __future__ import annotations

import csv
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from nni_covid3d.atomic import atomic_write_text
from nni_covid3d.data.loading import loader_settings, make_loader
from nni_covid3d.metrics import (
    classification_metrics,
    plot_confusion_matrix,
    plot_roc,
    plot_training_curves,
    save_metrics,
)
from nni_covid3d.precision import DEFAULT_PRECISION, inference_autocast
from nni_covid3d.training.module import CovidClassifier, load_classifier, unpack_batch
from nni_covid3d.training.recorded import split_dataset
from nni_covid3d.training.resume import AtomicCheckpointIO, ResumableRun, check_resume, data_record

__all__ = [
    "TrainConfig",
    "TrainResult",
    "BALANCE_MODES",
    "MONITORS",
    "dataset_labels",
    "inverse_frequency_weights",
    "fit_classifier",
    "train_model",
    "predict",
    "evaluate_checkpoint",
    "evaluate_classifier",
]

BALANCE_MODES = ("none", "weights", "sampler")
# Validation metrics a checkpoint can be selected on, and their direction.
MONITORS = {"val_acc": "max", "val_bal_acc": "max", "val_loss": "min"}


@dataclass
class TrainConfig:
    """Training settings shared by ``train``, ``retrain`` and ``compare`` (paper defaults for Adam)."""

    epochs: int = 30
    batch_size: int = 4
    learning_rate: float = 1e-3
    weight_decay: float = 5e-4
    scheduler: str = "cosine"
    balance: str = "none"  # "weights": weighted loss; "sampler": class-balanced sampling
    monitor: str = "val_acc"
    seed: int = 0
    num_workers: int | None = None  # None: chosen for the device (nni_covid3d.data.loading)
    loader: str = "torch"  # nni_covid3d.data.loading.LOADER_KINDS
    channels_last: str = "auto"  # nni_covid3d.training.memory_format.CHANNELS_LAST_CHOICES
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1  # machines of a multi-node DDP run (torchrun, SLURM), ``devices`` each
    progress: bool = True
    precision: str = DEFAULT_PRECISION  # Lightning's ``Trainer(precision=...)``: nni_covid3d.precision.PRECISIONS

    def __post_init__(self) -> None:
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"balance must be one of {BALANCE_MODES}, got {self.balance!r}")
        if self.monitor not in MONITORS:
            raise ValueError(f"monitor must be one of {tuple(MONITORS)}, got {self.monitor!r}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(f"epochs and batch_size must be positive, got {self.epochs} and {self.batch_size}")
        from nni_covid3d.precision import PRECISIONS

        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        loader_settings(self.accelerator, self.num_workers, self.loader)  # refuses bad loader settings


@dataclass
class TrainResult:
    out_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    best_score: float | None
    history: list[dict[str, Any]] = field(default_factory=list)


def dataset_labels(dataset: Dataset) -> list[int]:
    """Labels of ``dataset`` without reading images when it exposes ``labels`` or ``scans``."""
    if hasattr(dataset, "labels"):
        return [int(label) for label in dataset.labels]
    if hasattr(dataset, "scans"):
        return [int(scan.label) for scan in dataset.scans]
    labels = []
    for i in range(len(dataset)):
        item = dataset[i]
        labels.append(int(item["label"] if isinstance(item, Mapping) else item[1]))
    return labels


def inverse_frequency_weights(labels: Sequence[int], num_classes: int) -> list[float]:
    """``N / (K * n_c)`` per class (1 for a balanced set); a class absent from ``labels`` gets 0."""
    counts = Counter(labels)
    total = len(labels)
    return [total / (num_classes * counts[c]) if counts[c] else 0.0 for c in range(num_classes)]


def _loader(dataset: Dataset, config: TrainConfig, *, sampler=None, train: bool = False) -> DataLoader:
    return make_loader(dataset, config.batch_size, train=train, seed=config.seed, sampler=sampler,
                       accelerator=config.accelerator, workers=config.num_workers, kind=config.loader)


#: TrainConfig fields a resume may change: where it runs, and ``epochs`` (to train longer; the
#: schedule then keeps the checkpoint's length, so only an unchanged ``epochs`` repeats a run exactly).
_RESUME_MAY_CHANGE = ("epochs", "num_workers", "loader", "channels_last", "accelerator", "devices", "num_nodes",
                      "progress")


def _run_record(classifier: CovidClassifier, train_dataset: Dataset, val_dataset: Dataset,
                config: TrainConfig) -> dict[str, Any]:
    """What a resumed fit must share with its checkpoint (``nni_covid3d.training.resume``)."""
    meta = classifier.checkpoint_metadata()
    return {
        **data_record(train_dataset, val_dataset, classifier.class_names),
        "model": {key: meta[key] for key in ("model_name", "arch", "in_channels", "preprocessing")},
        # fp32 is left out, so that checkpoints written before the precision option still resume.
        "training": {key: value for key, value in asdict(config).items()
                     if key not in _RESUME_MAY_CHANGE and (key, value) != ("precision", "32-true")},
    }


def _history(csv_dir: Path) -> list[dict[str, Any]]:
    """One row per epoch from the CSVLogger files of every run, in run order (a resumed run's
    values win), with the last value of each metric in the epoch."""
    rows: dict[int, dict[str, Any]] = {}
    runs = sorted(csv_dir.glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    for csv_path in runs:
        _read_csv_log(csv_path, rows)
    return [rows[e] for e in sorted(rows)]


def _read_csv_log(csv_path: Path, rows: dict[int, dict[str, Any]]) -> None:
    with csv_path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if not row.get("epoch"):
                continue
            epoch = int(float(row["epoch"]))
            target = rows.setdefault(epoch, {"epoch": epoch})
            for key, value in row.items():
                if key in ("epoch", "step") or value in ("", None):
                    continue
                name = "train_loss" if key == "train_loss_epoch" else key
                if key == "train_loss_step":
                    continue
                target[name] = float(value)


def fit_classifier(
    classifier: CovidClassifier,
    train_dataset: Dataset,
    val_dataset: Dataset,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train ``classifier`` on ``train_dataset``, keeping the checkpoint best on ``val_dataset``.

    Only the two given datasets are read. Inside an NNI trial the validation results reach NNI
    through an :class:`~nni_covid3d.nnictl.NniReporter` (added unless ``callbacks`` holds one). With ``resume``, training continues from
    ``out_dir/checkpoints/last.ckpt``; without it, an output folder that already holds checkpoints
    is refused (nothing is overwritten silently). Checkpoints are written atomically and every epoch
    is seeded from ``(config.seed, epoch)``, so a run resumed after a crash ends with the weights
    and scores of the uninterrupted run; a checkpoint of another run (data, split, model or
    settings) or a damaged one is refused with an error naming it (``nni_covid3d.training.resume``).
    """
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint
    from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

    from nni_covid3d.nnictl.reporter import NniReporter
    from nni_covid3d.precision import check_precision
    from nni_covid3d.training.memory_format import ChannelsLast3d, use_channels_last

    config = config or TrainConfig()
    check_precision(config.precision, config.accelerator)
    out_dir = Path(out_dir)
    ckpt_dir = out_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    record = _run_record(classifier, train_dataset, val_dataset, config)
    if resume:
        check_resume(last, record)  # a damaged file or another run's, before Lightning touches it
    elif ckpt_dir.is_dir() and any(ckpt_dir.glob("*.ckpt")):
        raise ValueError(f"{ckpt_dir} already holds checkpoints; resume (--resume) or choose another output folder")
    if len(train_dataset) == 0 or len(val_dataset) == 0:
        raise ValueError(f"empty split: {len(train_dataset)} training and {len(val_dataset)} validation samples")

    pl.seed_everything(config.seed, workers=True, verbose=False)
    sampler = None
    if config.balance == "sampler":
        labels = dataset_labels(train_dataset)
        weights = inverse_frequency_weights(labels, classifier.num_classes)
        sampler = WeightedRandomSampler(
            [weights[y] for y in labels], num_samples=len(labels), replacement=True,
            generator=torch.Generator().manual_seed(config.seed),
        )

    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir, filename="best", monitor=config.monitor, mode=MONITORS[config.monitor],
        save_top_k=1, auto_insert_metric_name=False, save_on_train_epoch_end=True,
    )
    # Its own callback, after the best one: ModelCheckpoint(save_last=True) writes last.ckpt only in
    # epochs that improve the best, and a resume must start from the epoch before the crash.
    last_checkpoint = ModelCheckpoint(dirpath=ckpt_dir, filename=last.stem, save_top_k=1, enable_version_counter=False,
                                      save_on_train_epoch_end=True)
    loggers = [
        TensorBoardLogger(out_dir, name="tensorboard", version=0, default_hp_metric=False),
        CSVLogger(out_dir, name="csv"),
    ]
    train_loader = _loader(train_dataset, config, sampler=sampler, train=True)
    layout = [ChannelsLast3d()] if use_channels_last(config.channels_last, config.accelerator) else []
    trainer = pl.Trainer(
        max_epochs=config.epochs,
        accelerator=config.accelerator,
        devices=config.devices,
        num_nodes=config.num_nodes,
        precision=config.precision,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        callbacks=[ResumableRun(config.seed, [train_loader], record), checkpoint, last_checkpoint,
                   LearningRateMonitor(logging_interval="epoch"), *layout, *callbacks,
                   *([] if any(isinstance(c, NniReporter) for c in callbacks) else [NniReporter()])],
        enable_progress_bar=config.progress,
        enable_model_summary=config.progress,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(
        classifier,
        train_loader,
        _loader(val_dataset, config),
        ckpt_path=str(last) if resume else None,
        weights_only=True,
    )
    history = _history(out_dir / "csv")
    if trainer.is_global_zero:  # the loggers write on rank 0 only; other ranks (nodes) may not see its files
        atomic_write_text(out_dir / "history.json", json.dumps(history, indent=2) + "\n")
        if history:
            plot_training_curves(history, out_dir / "training_curves.png")
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    score = checkpoint.best_model_score
    return TrainResult(
        out_dir=out_dir,
        best_checkpoint=best,
        last_checkpoint=last,
        best_score=float(score) if score is not None and math.isfinite(float(score)) else None,
        history=history,
    )


def train_model(
    model: str | nn.Module,
    train_dataset: Dataset,
    val_dataset: Dataset,
    out_dir: str | Path,
    *,
    class_names: Sequence[str],
    config: TrainConfig | None = None,
    in_channels: int = 1,
    arch: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    data_source: Mapping[str, Any] | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train ``model`` (a registry name, or a module with ``model_name``) from scratch; see :func:`fit_classifier`.

    ``config.balance == "weights"`` weights the loss by inverse class frequency of the training labels.
    ``preprocessing`` and ``data_source`` are stored in the checkpoints for ``evaluate``/``predict``.
    """
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    class_weights = None
    if config.balance == "weights":
        class_weights = inverse_frequency_weights(dataset_labels(train_dataset), len(class_names))
    if isinstance(model, nn.Module) and model_name is None:
        raise ValueError("give model_name for a model passed as a module (it is stored in the checkpoint)")
    module = model if isinstance(model, nn.Module) else None
    classifier = CovidClassifier(
        None if module is not None else model,  # a module is set below (nni.trace must not see a ModelSpace)
        class_names=class_names,
        in_channels=in_channels,
        arch=arch,
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        scheduler=config.scheduler,
        max_epochs=config.epochs,
        class_weights=class_weights,
        preprocessing=preprocessing,
        model_name=model_name,
        seed=config.seed,
    )
    if module is not None:
        classifier.set_model(module)
    classifier.data_source = dict(data_source) if data_source is not None else None
    return fit_classifier(classifier, train_dataset, val_dataset, out_dir, config, resume=resume, callbacks=callbacks)


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 4, num_workers: int = 0,
    device: str | torch.device = "cpu", progress: bool = True, description: str = "predict",
    precision: str = DEFAULT_PRECISION,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``int[N]`` and softmax probabilities ``float[N, K]`` of ``model`` over ``dataset`` (in order);
    the forward passes under ``precision``'s autocast (:func:`nni_covid3d.precision.inference_autocast`)."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    model = model.to(device).eval()
    labels, probs = [], []
    loader = make_loader(dataset, batch_size, train=False, workers=num_workers,
                         accelerator="gpu" if device.type == "cuda" else "cpu")
    autocast = inference_autocast(precision, device.type)
    for batch in tqdm(loader, desc=description, disable=not progress, leave=False):
        x, y = unpack_batch(batch)
        with autocast:
            logits = model(x.to(device))
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(y.cpu())
    return torch.cat(labels).numpy(), torch.cat(probs).numpy()


def evaluate_classifier(
    classifier: CovidClassifier,
    dataset: Dataset,
    out_dir: str | Path | None = None,
    *,
    split: str = "test",
    batch_size: int = 4,
    progress: bool = True,
    sample_ids: Sequence[str] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> dict[str, Any]:
    """Metrics of ``classifier`` on ``dataset``; with ``out_dir``, also metrics.json, roc.png,
    confusion.png and predictions.csv there. ``precision``: the forward passes' (:func:`predict`)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    labels, probs = predict(classifier.model, dataset, batch_size=batch_size, device=device, progress=progress,
                            description=f"evaluate {split}", precision=precision)
    names = classifier.class_names
    metrics = classification_metrics(labels, probs, names)
    metrics["split"] = split
    if out_dir is not None:
        out_dir = Path(out_dir)
        save_metrics(metrics, out_dir / "metrics.json")
        plot_roc(labels, probs, names, out_dir / "roc.png", title=f"ROC, {split} split (one-vs-rest)")
        plot_confusion_matrix(metrics["confusion_matrix"], names, out_dir / "confusion.png")
        ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(len(labels))]
        with (out_dir / "predictions.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["sample", "label", "predicted", *[f"p_{n}" for n in names]])
            for sample, y, p in zip(ids, labels, probs):
                writer.writerow([sample, names[y], names[int(p.argmax())], *[f"{v:.6f}" for v in p]])
    return metrics


def evaluate_checkpoint(
    checkpoint: str | Path,
    dataset: Dataset | None = None,
    *,
    split: str = "test",
    out_dir: str | Path | None = None,
    batch_size: int = 4,
    progress: bool = True,
    root: str | Path | None = None,
    dataset_factory: Callable[..., tuple[Dataset, list[str] | None]] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> dict[str, Any]:
    """Evaluate the model in ``checkpoint`` on ``dataset``, or on its recorded ``split`` when omitted.

    Without ``dataset``, the split is rebuilt from the checkpoint's data source (dataset name, root,
    split file, preprocessing; ``root`` overrides the recorded root) by
    :func:`nni_covid3d.training.recorded.split_dataset`. Results go to ``out_dir`` (default:
    ``OUT/eval_<split>`` for ``OUT/checkpoints/*.ckpt``, else ``eval_<split>_<name>`` beside the file).
    ``precision``: the forward passes' (:func:`predict`; fp32 by default, whatever the training's).
    """
    checkpoint = Path(checkpoint)
    classifier = load_classifier(checkpoint)
    sample_ids = None
    if dataset is None:
        dataset, sample_ids = (dataset_factory or split_dataset)(classifier, split=split, root=root)
    if out_dir is None:  # OUT/eval_<split> for OUT/checkpoints/x.ckpt, else beside the checkpoint
        if checkpoint.parent.name == "checkpoints":
            out_dir = checkpoint.parent.parent / f"eval_{split}"
        else:
            out_dir = checkpoint.parent / f"eval_{split}_{checkpoint.stem}"
    metrics = evaluate_classifier(classifier, dataset, out_dir, split=split, batch_size=batch_size,
                                  progress=progress, sample_ids=sample_ids, precision=precision)
    metrics["checkpoint"] = str(checkpoint)
    save_metrics(metrics, Path(out_dir) / "metrics.json")
    return metrics

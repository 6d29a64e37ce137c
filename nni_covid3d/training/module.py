"""``CovidClassifier``: the one Lightning module that trains every model, alone or as NNI's evaluator.

It follows NNI's ``SupervisedLearningModule`` (``nni/nas/evaluator/pytorch/lightning.py``): it subclasses
NNI's ``LightningModule`` (the model may be given now or set later by the evaluator through
``set_model``), is wrapped by ``nni.trace``, uses automatic optimisation and returns exactly one
optimizer (plus its scheduler) — what NNI's one-shot strategies need under Lightning 2. Metrics are
logged as torchmetrics objects, so they are epoch-level values even when a one-shot wrapper calls
``training_step``/``validation_step`` directly (it does not forward ``on_validation_epoch_end``).

Logged keys: ``train_loss``, ``train_acc``, ``val_loss``, ``val_acc``, ``val_bal_acc``. The module
does not report to NNI itself: :class:`nni_covid3d.nnictl.NniReporter` on the Trainer does (every
path of this project adds it; add it to your own Trainer when you run this module under nnictl).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import nni
import torch
import torchmetrics
from nni.nas.evaluator.pytorch import LightningModule
from torch import Tensor, nn

from nni_covid3d.data.batch_augment import BatchAugmentation
from nni_covid3d.training.checkpoint import CHECKPOINT_KEY, FORMAT_VERSION, load_model, plain, read_checkpoint

__all__ = ["CovidClassifier", "load_classifier", "unpack_batch"]


def unpack_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(image FloatTensor[B, C, D, H, W], label LongTensor[B])`` from a dict or a (x, y) sequence."""
    if isinstance(batch, Mapping):
        try:
            x, y = batch["image"], batch["label"]
        except KeyError as missing:
            raise KeyError(f"batch dict needs keys 'image' and 'label', got {sorted(batch)}") from missing
    elif isinstance(batch, (tuple, list)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
    else:
        raise TypeError(f"batch must be a dict with 'image'/'label' or an (image, label) pair, got {type(batch)}")
    return x, torch.as_tensor(y, device=x.device).long()


@nni.trace
class CovidClassifier(LightningModule):
    """Classify CT volumes ``FloatTensor[B, C, D, H, W]`` into ``num_classes`` classes.

    Parameters
    ----------
    model
        An ``nn.Module``, a model name for :func:`nni_covid3d.models.get_model`, or ``None`` (NNI's
        evaluator then calls ``set_model`` with each sampled architecture). Pass a fixed CovidNet3D
        model by name + ``arch`` or through ``set_model``: ``nni.trace`` tries to freeze a
        ``ModelSpace`` given as an argument.
    class_names
        Class names in label order; their number is the number of classes.
    in_channels, arch
        Passed to ``get_model`` when ``model`` is a name (``arch``: exported architecture dict).
    learning_rate, weight_decay
        Adam's (the paper's 1e-3 and 5e-4 by default).
    scheduler
        ``"cosine"`` (cosine annealing over ``max_epochs``, per epoch) or ``"none"``.
    max_epochs
        Length of the cosine schedule; defaults to the trainer's ``max_epochs``.
    class_weights
        Per-class weights of the cross-entropy loss (e.g. inverse class frequencies), or ``None``.
    preprocessing
        ``Preprocessing.to_dict()`` of the data this model is trained on; stored in checkpoints.
    model_name
        Name stored in checkpoints when ``model`` is a module (e.g. ``"covidnet3d"``).
    seed
        Seeds the train-time augmentation when ``preprocessing`` runs it on the device
        (``augment_on="device"``): each step's draws follow from (seed, epoch, step, rank).
    """

    def __init__(
        self,
        model: nn.Module | str | None = None,
        *,
        class_names: Sequence[str] = ("CP", "NCP", "Normal"),
        in_channels: int = 1,
        arch: Mapping[str, Any] | None = None,
        learning_rate: float = 1e-3,
        weight_decay: float = 5e-4,
        scheduler: str = "cosine",
        max_epochs: int | None = None,
        class_weights: Sequence[float] | None = None,
        preprocessing: Mapping[str, Any] | None = None,
        model_name: str | None = None,
        seed: int = 0,
    ):
        super().__init__()
        class_names = [str(name) for name in class_names]
        if len(class_names) < 2:
            raise ValueError(f"need at least two class names, got {class_names}")
        if scheduler not in ("cosine", "none"):
            raise ValueError(f"scheduler must be 'cosine' or 'none', got {scheduler!r}")
        if class_weights is not None:
            class_weights = [float(w) for w in class_weights]
            if len(class_weights) != len(class_names):
                raise ValueError(f"{len(class_weights)} class weights for {len(class_names)} classes")
        self.save_hyperparameters(
            "learning_rate", "weight_decay", "scheduler", "max_epochs", "class_weights", "in_channels", "seed"
        )
        self.class_names = class_names
        self.num_classes = len(class_names)
        self.preprocessing = dict(preprocessing) if preprocessing is not None else None
        self.batch_augmentation = BatchAugmentation.from_preprocessing(self.preprocessing)
        if arch is not None:
            from nni_covid3d.models import resolve_architecture

            arch = resolve_architecture(arch, len(class_names), in_channels)
        self.arch = arch
        # Where the training data came from ({"dataset", "root", "split_file", ...}); set by the pipeline.
        self.data_source: dict[str, Any] | None = None

        if isinstance(model, str):
            from nni_covid3d.models import get_model

            model_name = model_name or model
            model = get_model(model, num_classes=self.num_classes, in_channels=in_channels, arch=self.arch)
        self.model_name = model_name
        if model is not None:
            self.set_model(model)

        # Not persistent: the weights live in the hyper-parameters, the state dict holds only the model.
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.register_buffer("class_weight", weight, persistent=False)
        metric_args = {"task": "multiclass", "num_classes": self.num_classes}
        self.train_acc = torchmetrics.Accuracy(**metric_args)
        self.val_acc = torchmetrics.Accuracy(**metric_args)
        self.val_bal_acc = torchmetrics.Accuracy(average="macro", **metric_args)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``FloatTensor[B, num_classes]`` for volumes ``FloatTensor[B, C, D, H, W]``."""
        return self.model(x)

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy (class-weighted when ``class_weights`` was given) of logits ``[B, K]``, labels ``[B]``."""
        return nn.functional.cross_entropy(logits, target, weight=self.class_weight)

    def augment(self, x: Tensor, step: int) -> Tensor:
        """``x`` ``FloatTensor[B, C, D, H, W]`` augmented on its device when the preprocessing asks for it
        (one-shot strategies call :meth:`training_step` several times per batch index, with distinct
        ``step`` numbers; calls with the same step draw the same augmentation)."""
        if self.batch_augmentation is None:
            return x
        generator = BatchAugmentation.generator(self.hparams.seed, self.trainer.current_epoch, step,
                                                self.trainer.global_rank)
        return self.batch_augmentation(x, generator)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        x, y = unpack_batch(batch)
        x = self.augment(x, batch_idx)
        logits = self(x)
        loss = self.loss(logits, y)
        self.train_acc(logits, y)
        batch_size = y.shape[0]
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
        self.log("train_acc", self.train_acc, prog_bar=True, on_step=False, on_epoch=True, batch_size=batch_size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = unpack_batch(batch)
        logits = self(x)
        batch_size = y.shape[0]
        self.val_acc(logits, y)
        self.val_bal_acc(logits, y)
        self.log("val_loss", self.loss(logits, y), prog_bar=True, on_epoch=True, batch_size=batch_size)
        self.log("val_acc", self.val_acc, prog_bar=True, on_epoch=True, batch_size=batch_size)
        self.log("val_bal_acc", self.val_bal_acc, on_epoch=True, batch_size=batch_size)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.Adam(
            self.parameters(), lr=self.hparams.learning_rate, weight_decay=self.hparams.weight_decay
        )
        if self.hparams.scheduler == "none":
            return optimizer
        t_max = self.hparams.max_epochs
        if t_max is None:
            t_max = self._trainer_max_epochs()
        if t_max is None or t_max < 0 or math.isinf(t_max):
            raise ValueError("the cosine schedule needs max_epochs (set it here or on the Trainer)")
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(int(t_max), 1))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _trainer_max_epochs(self) -> int | None:
        """The attached Trainer's ``max_epochs``; ``None`` when no Trainer is attached."""
        try:
            return self.trainer.max_epochs
        except RuntimeError:  # Lightning: "... is not attached to a `Trainer`"
            return None

    # Checkpoints: our metadata in plain Python types, so ``torch.load(weights_only=True)`` reads it.
    def checkpoint_metadata(self) -> dict[str, Any]:
        """What a checkpoint needs to rebuild this classifier without repeated flags."""
        return plain({
            "format_version": FORMAT_VERSION,
            "model_name": self.model_name,
            "arch": self.arch,
            "class_names": list(self.class_names),
            "num_classes": self.num_classes,
            "in_channels": int(self.hparams.in_channels),
            "preprocessing": self.preprocessing,
            "data": self.data_source,
        })

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[CHECKPOINT_KEY] = self.checkpoint_metadata()


def load_classifier(path: str | Path) -> CovidClassifier:
    """A :class:`CovidClassifier` holding the checkpoint's trained model and metadata (eval mode)."""
    model, meta = load_model(path)
    hparams = read_checkpoint(path).get("hyper_parameters", {})
    # The model is set afterwards: nni.trace would try to freeze a fixed CovidNet3D (a ModelSpace) argument.
    classifier = CovidClassifier(
        None,
        class_names=meta["class_names"],
        in_channels=meta["in_channels"],
        arch=meta["arch"],
        preprocessing=meta["preprocessing"],
        model_name=meta["model_name"],
        learning_rate=hparams.get("learning_rate", 1e-3),
        weight_decay=hparams.get("weight_decay", 5e-4),
        class_weights=hparams.get("class_weights"),
    )
    classifier.set_model(model)
    classifier.model_name = meta["model_name"]
    classifier.data_source = meta.get("data")
    return classifier.eval()

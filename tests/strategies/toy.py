"""Small NNI model spaces and a runner for the strategy tests (CPU, seconds per search)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import InputChoice, LayerChoice, ModelSpace, Repeat
from nni.nas.space import RawFormatModelSpace
from torch.utils.data import TensorDataset


class MixedSpace(ModelSpace):
    """A small CNN space with a LayerChoice, a Repeat of mutable depth, a shared label and an InputChoice."""

    def __init__(self, num_classes: int = 2):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1)
        self.op = LayerChoice({
            "conv3": nn.Conv2d(8, 8, 3, padding=1),
            "conv5": nn.Conv2d(8, 8, 5, padding=2),
            "pool": nn.AvgPool2d(3, 1, 1),
        }, label="op")
        self.body = Repeat(lambda index: nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()), (1, 3), label="depth")
        # Two modules under one label: one decision.
        self.act_a = LayerChoice([nn.ReLU(), nn.Tanh()], label="act")
        self.act_b = LayerChoice([nn.ReLU(), nn.Tanh()], label="act")
        self.skip = InputChoice(2, 1, label="skip")
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act_a(self.stem(x))
        y = self.act_b(self.body(self.op(x)))
        z = self.skip([x, y])
        return self.head(z.mean(dim=(2, 3)))


def image_dataset(n: int, seed: int = 0, size: int = 8) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, size, size, generator=g)
    y = (x[:, :, : size // 2].mean(dim=(1, 2, 3)) > 0).long()
    return TensorDataset(x, y)


def make_evaluator(train: TensorDataset, val: TensorDataset, *, epochs: int, batch_size: int = 32,
                   learning_rate: float = 0.01, num_classes: int = 2, **trainer_kwargs: Any) -> Classification:
    trainer_kwargs.setdefault("enable_checkpointing", False)
    trainer_kwargs.setdefault("devices", 1)
    return Classification(
        train_dataloaders=DataLoader(train, batch_size=batch_size, shuffle=True),
        val_dataloaders=DataLoader(val, batch_size=batch_size),
        num_classes=num_classes, learning_rate=learning_rate, max_epochs=epochs,
        accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        num_sanity_val_steps=0, **trainer_kwargs,
    )


def run_search(space: ModelSpace, evaluator: Classification, strategy) -> Any:
    """Run a one-shot ``strategy`` without an experiment; returns the strategy (after the search)."""
    strategy(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    list(strategy.list_models())
    return strategy

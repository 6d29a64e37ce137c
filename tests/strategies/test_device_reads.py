"""A GumbelDNAS search step reads no tensor value back to Python: on a GPU every such read (``float(t)``,
``t.item()``, ``if t:``) waits until all queued work is done, and a launch-bound step then cannot run ahead.

Counted with a dispatch mode around every training step: the reads (``aten._local_scalar_dense``,
``is_nonzero``, ``equal``) outside the optimizers (Adam keeps its step counters on the CPU on purpose).
The paths' indices come back in one transfer per draw (``.tolist()`` / ``.cpu()``, not counted here;
``hard_gumbel_draws``, ``gumbel_max_indices``).
"""
from __future__ import annotations

import traceback

import pytest
import pytorch_lightning as pl
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from nni_covid3d.search import run_search
from tests.strategies.test_run_search import TINY_SPACE, tiny_data

READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.is_nonzero.default, torch.ops.aten.equal.default}


class CountReads(TorchDispatchMode):
    """Records where a tensor's value is read back to Python, outside ``torch.optim``."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in READS:
            stack = traceback.extract_stack()
            if not any("/torch/optim/" in frame.filename for frame in stack):
                ours = [frame for frame in stack if "/torch/" not in frame.filename and frame.filename != __file__]
                self.sites.append(f"{ours[-1].filename}:{ours[-1].lineno}: {ours[-1].line}")
        return func(*args, **(kwargs or {}))


class ReadsPerStep(pl.Callback):
    def __init__(self) -> None:
        self.mode = CountReads()
        self.steps = 0

    def on_train_batch_start(self, *args) -> None:
        self.mode.__enter__()

    def on_train_batch_end(self, *args) -> None:
        self.mode.__exit__(None, None, None)
        self.steps += 1


@pytest.mark.parametrize("options", [{}, {"arch_samples": 1}, {"arch_estimator": "straight_through"},
                                     {"weight_sampling": "fair"}], ids=["default", "one-path", "straight-through", "fair"])
def test_a_search_step_reads_nothing_back(options):
    reads = ReadsPerStep()
    run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=0, accelerator="cpu", strategy_options=options,
               callbacks=[reads])
    assert reads.steps == 4
    assert reads.mode.sites == []

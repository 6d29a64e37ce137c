"""Scoring fixed paths of a trained supernet with shared weights (BatchNorm recomputed per path)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from nni.nas.nn.pytorch import LayerChoice, ModelSpace

import nni_covid3d.strategies as strategies
from nni_covid3d.strategies.path_scoring import fix_path, recalibrate_batchnorm, score_paths

from .toy import image_dataset, make_evaluator, run_search


class NormSpace(ModelSpace):
    """Two candidates with BatchNorm after a shared stem: their statistics differ by design (x1 vs x4)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.op = LayerChoice({"small": nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)),
                               "large": nn.Sequential(nn.Conv2d(4, 4, 5, padding=2), nn.BatchNorm2d(4))}, label="op")
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.op(self.stem(x))).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def searched():
    train, val = image_dataset(64, seed=0), image_dataset(32, seed=1)
    return run_search(NormSpace(), make_evaluator(train, val, epochs=2, batch_size=16), strategies.GumbelDNAS()), val


def _batches(dataset, size=16):
    images, labels = dataset.tensors
    return [(images[i:i + size], labels[i:i + size]) for i in range(0, len(images), size)]


def test_scores_are_each_paths_accuracy_and_leave_the_supernet_as_it_was(searched):
    strategy, val = searched
    module = strategy.oneshot_module
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    batches = _batches(val)
    scores = score_paths(module, [{"op": "small"}, {"op": "large"}], [x for x, _ in batches], batches)
    after = module.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # weights and BatchNorm statistics restored
    for name, score in zip(("small", "large"), scores):
        # The same path run by hand: its candidate only, BatchNorm from the recalibration batches.
        candidate = module.model.op[name]
        norm = candidate[1]
        with torch.no_grad():
            stem = module.model.stem(val.tensors[0])
            pre = candidate[0](stem)
            normed = (pre - pre.mean(dim=(0, 2, 3), keepdim=True)) / torch.sqrt(
                pre.var(dim=(0, 2, 3), unbiased=True, keepdim=True) + norm.eps) * norm.weight[:, None, None] \
                + norm.bias[:, None, None]
            logits = module.model.head(torch.relu(normed).mean(dim=(2, 3)))
        expected = float((logits.argmax(1) == val.tensors[1]).float().mean())
        assert score == pytest.approx(expected, abs=1 / 32 + 1e-6)


def test_recalibration_sets_running_statistics_to_the_batches_average():
    norm = nn.BatchNorm1d(3, momentum=0.1)
    batches = [torch.randn(8, 3) * 2 + 5, torch.randn(8, 3) * 2 + 5]
    recalibrate_batchnorm(norm, batches)
    expected_mean = torch.stack([b.mean(0) for b in batches]).mean(0)
    assert torch.allclose(norm.running_mean, expected_mean, atol=1e-5)
    assert norm.momentum == 0.1 and not norm.training


def test_darts_supernets_have_no_single_path_to_score():
    train, val = image_dataset(32, seed=0), image_dataset(16, seed=1)
    strategy = run_search(NormSpace(), make_evaluator(train, val, epochs=1, batch_size=16), strategies.get("darts"))
    with pytest.raises(ValueError, match="single-path"):
        fix_path(strategy.oneshot_module, {"op": "small"})

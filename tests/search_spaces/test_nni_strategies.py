"""NNI's own one-shot strategies (DARTS, GumbelDARTS, RandomOneShot) on the unchanged CovidNet3D space."""
from __future__ import annotations

import pytest
import torch
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import InputChoice, LayerChoice
from nni.nas.space import RawFormatModelSpace
from nni.nas.strategy import DARTS, GumbelDARTS, Proxyless, RandomOneShot
from torch.utils.data import TensorDataset

from nni_covid3d.search_spaces import (
    CovidNet3DSpace,
    UnsupportedStrategyError,
    build_model,
    export_architecture,
    is_weighted_sum_strategy,
    validate_for_strategy,
)


def _evaluator() -> Classification:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 1, 8, 32, 32, generator=g), torch.tensor([0, 1, 2, 0])
    data = TensorDataset(x, y)
    return Classification(
        train_dataloaders=DataLoader(data, batch_size=2),
        val_dataloaders=DataLoader(data, batch_size=2),
        num_classes=3, learning_rate=0.01, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, num_sanity_val_steps=0,
    )


# The real space class and stage layout ([4, 4, 4, 4, 4, 1] cells, all eight candidates, depth choices),
# with narrow widths so that a weighted-sum supernet trains for a step in seconds on a CPU.
TINY = {"preset": "S", "widths": [8, 8, 16, 16, 16, 16], "stem_channels": 8, "first_block_channels": 8, "head_channels": 32}


def _search(space: CovidNet3DSpace, strategy) -> dict:
    strategy(RawFormatModelSpace(space, _evaluator()), SequentialExecutionEngine())
    best = next(strategy.list_models())
    return best.sample


@pytest.mark.slow
@pytest.mark.parametrize("strategy_cls", [DARTS, GumbelDARTS])
def test_weighted_sum_strategies_search_the_space(strategy_cls) -> None:
    torch.manual_seed(0)
    space = CovidNet3DSpace(**TINY)  # one-shot strategies mutate the space in place: a fresh one per search
    labels = set(space.simplify())
    strategy = strategy_cls()
    sample = _search(space, strategy)
    assert set(sample) == labels
    # The architecture logits took gradient steps (DARTS starts them at randn * 1e-3).
    alphas = strategy.oneshot_module.arch_parameters() if hasattr(strategy.oneshot_module, "arch_parameters") else []
    assert alphas and any(a.grad is not None and a.grad.abs().sum() > 0 for a in alphas)
    model = build_model(export_architecture(TINY, sample)).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 32, 32)).shape == (1, 3)


@pytest.mark.slow
def test_random_one_shot_searches_the_shape_changing_space() -> None:
    torch.manual_seed(0)
    space = CovidNet3DSpace(**TINY, search_downsampling=True)
    sample = _search(space, RandomOneShot())
    arch = export_architecture({**TINY, "search_downsampling": True}, sample)
    assert {arch["choices"][f"s{i}_down"] for i in (1, 2, 3, 5)} <= {"2x2x2", "1x2x2"}
    model = build_model(arch).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 32, 32)).shape == (1, 3)


@pytest.mark.parametrize("strategy_cls", [DARTS, GumbelDARTS, Proxyless])
def test_weighted_sum_strategy_on_downsampling_choices_is_a_clear_error(strategy_cls) -> None:
    space = CovidNet3DSpace("S", widths=[8] * 6, head_channels=16, search_downsampling=True)
    with pytest.raises(UnsupportedStrategyError, match=r"s1_down, s2_down, s3_down, s5_down give different tensor shapes"):
        strategy_cls().mutate_model(space)
    # Refused before any module was replaced: the space is still a plain NNI space.
    assert any(type(m) is LayerChoice for m in space.modules()) and any(type(m) is InputChoice for m in space.modules())
    assert not any(type(m).__module__.startswith("nni.nas.oneshot") for m in space.modules())
    with pytest.raises(UnsupportedStrategyError):
        validate_for_strategy(space, strategy_cls())


def test_strategy_classification() -> None:
    assert is_weighted_sum_strategy(DARTS()) and is_weighted_sum_strategy(GumbelDARTS())
    assert not is_weighted_sum_strategy(RandomOneShot())

    class SinglePathDarts(DARTS):
        weighted_sum = False

    assert not is_weighted_sum_strategy(SinglePathDarts())
    validate_for_strategy({"preset": "S", "search_downsampling": True}, SinglePathDarts())
    validate_for_strategy({"preset": "S"}, DARTS())  # no shape-changing choice: fine

"""GumbelDNAS on the CovidNet3D space (tiny widths and input)."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from nni_covid3d.search_spaces import CovidNet3DSpace, UnsupportedStrategyError
from nni_covid3d.strategies import GumbelDNAS, get

from .toy import make_evaluator, run_search


def _tiny_space() -> CovidNet3DSpace:
    return CovidNet3DSpace("S", num_classes=3, widths=(8, 8, 8, 8, 8, 8), n_cells=(2, 2, 1, 1, 1, 1),
                           head_channels=16, stem_channels=8, first_block_channels=8, search_downsampling=True)


@pytest.mark.slow
def test_gumbel_dnas_searches_covidnet3d_including_shape_changing_choices(tmp_path):
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 8, 32, 32), torch.randint(0, 3, (8,))
    evaluator = make_evaluator(TensorDataset(x, y), TensorDataset(x[:4], y[:4]), epochs=1, batch_size=2, num_classes=3)
    space = _tiny_space()
    labels = set(space.simplify())
    assert any(label.endswith("_down") for label in labels) and any(label.endswith("_depth") for label in labels)
    strategy = run_search(space, evaluator, GumbelDNAS(size_budget_mb=0.05))
    exported = strategy.export()
    assert set(exported) == labels
    model = next(strategy.list_models()).executable_model().eval()
    assert model(torch.randn(1, 1, 8, 32, 32)).shape == (1, 3)
    start = GumbelDNAS().mutate_model(_tiny_space())  # same seed: the logits the search started from
    start_alphas = {label: a for m in start.modules() if hasattr(m, "label_alphas") for label, a in m.label_alphas().items()}
    moved = [label for label, a in strategy.oneshot_module.label_alphas().items() if not torch.equal(a, start_alphas[label])]
    assert sorted(moved) == sorted(labels)


def test_weighted_sum_darts_is_refused_on_shape_changing_choices():
    with pytest.raises(UnsupportedStrategyError):
        get("darts").mutate_model(_tiny_space())


def test_candidate_checkpointing_changes_memory_not_results():
    """Same seed with and without activation checkpointing: identical logits, weights and BatchNorm
    statistics (the recomputed forward must not update them twice); checkpointed candidates did run
    again during backward."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    from nni_covid3d.search_spaces.ops import MBConv3d

    x, y = torch.randn(8, 1, 8, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 2] * 2 + [0, 1])

    def run(checkpoint_candidates: bool):
        torch.manual_seed(0)
        evaluator = make_evaluator(TensorDataset(x, y), TensorDataset(x[:4], y[:4]), epochs=1, batch_size=2, num_classes=3)
        space = CovidNet3DSpace("S", num_classes=3, widths=(8, 8, 8, 8, 8, 8), n_cells=(2, 2, 1, 1, 1, 1),
                                head_channels=16, stem_channels=8, first_block_channels=8)
        calls = []
        handle = register_module_forward_pre_hook(lambda module, *_: calls.append(1) if isinstance(module, MBConv3d) else None)
        try:
            strategy = run_search(space, evaluator, GumbelDNAS(checkpoint_candidates=checkpoint_candidates, arch_split="val"))
        finally:
            handle.remove()
        return strategy.oneshot_module, len(calls)

    (plain, plain_calls), (checkpointed, checkpointed_calls) = run(False), run(True)
    assert checkpointed_calls > plain_calls  # the recomputation ran
    for label, alpha in plain.label_alphas().items():
        torch.testing.assert_close(checkpointed.label_alphas()[label], alpha, rtol=0, atol=1e-6)
    reference = plain.model.state_dict()
    state = checkpointed.model.state_dict()
    assert any("running_mean" in key for key in state)
    for key, value in reference.items():
        torch.testing.assert_close(state[key], value, rtol=1e-5, atol=1e-6, msg=key)

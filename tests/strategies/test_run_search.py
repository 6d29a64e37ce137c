"""``nni_covid3d.search.run_search``: the library entry point behind ``search``, the DNAS trial and ``benchmark``."""
from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import Dataset

from nni_covid3d.data import Preprocessing
from nni_covid3d.search import SearchData, run_search
from nni_covid3d.search_spaces import build_model

TINY_SPACE = {"preset": "S", "widths": [8] * 6, "n_cells": [2, 1, 1, 1, 1, 1], "head_channels": 16}


class Volumes(Dataset):
    """``{"image": FloatTensor[1, 8, 32, 32], "label": int}``; class 1 is brighter. Counts reads."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.labels = [i % 2 for i in range(n)]
        self.images = torch.randn(n, 1, 8, 32, 32, generator=generator) + torch.tensor(self.labels).view(-1, 1, 1, 1, 1)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        self.reads += 1
        return {"image": self.images[index], "label": self.labels[index]}


def tiny_data() -> SearchData:
    return SearchData(Volumes(16, seed=0), Volumes(6, seed=1), [f"p{i // 2}" for i in range(16)], ["a", "b"],
                      Preprocessing(depth=8, height=32, width=32))


def test_run_search_exports_a_buildable_architecture_and_writes_its_files(tmp_path):
    data = tiny_data()
    result = run_search(data, TINY_SPACE, epochs=2, batch_size=4, seed=0, out_dir=tmp_path, accelerator="cpu",
                        metadata={"dataset": "toy"})
    assert len(result.history) == 2 and all(0.0 <= h["default"] <= 1.0 for h in result.history)
    assert result.architecture["metadata"]["dataset"] == "toy"
    assert result.architecture["metadata"]["strategy"] == "gumbel-dnas"
    assert json.loads(result.architecture_path.read_text())["choices"] == result.architecture["choices"]
    assert set(json.loads((tmp_path / "arch_probs.json").read_text())) == set(result.architecture["choices"])
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert build_model(result.architecture).eval()(torch.zeros(1, 1, 8, 32, 32)).shape == (1, 2)
    assert data.val.reads > 0  # validation scored the architecture


def test_a_resumed_search_keeps_the_history_of_the_epochs_before_the_resume(tmp_path):
    first = run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=0, out_dir=tmp_path, accelerator="cpu")
    resumed = run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=0, out_dir=tmp_path,
                         accelerator="cpu", resume=True)  # from the last epoch's checkpoint: nothing left to train
    assert resumed.history == first.history and len(resumed.history) == 2


def test_run_search_is_deterministic_for_a_seed():
    first = run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=3, accelerator="cpu")
    second = run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=3, accelerator="cpu")
    assert first.architecture["choices"] == second.architecture["choices"]
    assert first.probabilities == second.probabilities


def test_the_thread_loader_searches_exactly_as_the_torch_loader_and_channels_last_runs():
    torch_run = run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=3, accelerator="cpu")
    thread_run = run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=3, accelerator="cpu",
                            loader="thread")
    # The same batches in the same order (GumbelDNAS's own weight/architecture loaders stay PyTorch's).
    assert thread_run.probabilities == torch_run.probabilities
    channels_last = run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=3, accelerator="cpu",
                               channels_last="on")
    assert set(channels_last.architecture["choices"]) == set(torch_run.architecture["choices"])
    assert build_model(channels_last.architecture).eval()(torch.zeros(1, 1, 8, 32, 32)).shape == (1, 2)


def test_nni_strategies_run_through_the_same_entry_point():
    result = run_search(tiny_data(), TINY_SPACE, strategy="random-oneshot", epochs=1, batch_size=4, accelerator="cpu")
    assert result.probabilities is None and result.architecture["metadata"]["strategy"] == "random-oneshot"


@pytest.mark.parametrize("strategy, options, resume, message", [
    ("darts", {"size_budget_mb": 1.0}, False, "size_budget_mb applies to the gumbel-dnas strategy only"),
    ("proxyless", {}, True, "resume applies to the gumbel-dnas strategy only"),
    ("nas-bench", {}, False, "unknown strategy 'nas-bench'"),
])
def test_run_search_refuses_options_its_strategy_does_not_take(strategy, options, resume, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        run_search(tiny_data(), TINY_SPACE, strategy=strategy, strategy_options=options, resume=resume, out_dir=tmp_path)


def test_run_search_needs_patient_ids_for_every_training_item():
    data = tiny_data()
    data.train_patients = data.train_patients[:-1]
    with pytest.raises(ValueError, match="15 patient ids for 16 training items"):
        run_search(data, TINY_SPACE, epochs=1)


def test_run_search_refuses_a_hold_out_that_leaves_a_part_with_one_scan():
    data = tiny_data()
    data.train_patients = ["p0"] + ["p1"] * 15  # holding out either patient leaves one part a single scan
    with pytest.raises(ValueError, match="each needs at least 2"):
        run_search(data, TINY_SPACE, epochs=1, seed=0)

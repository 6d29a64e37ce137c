"""The DataLoader factory: settings chosen for the device, the thread loader, and the cache warm-up."""
from __future__ import annotations

import pytest
import torch
from monai.data import ThreadDataLoader

from nni_covid3d.data import Preprocessing, load_dataset, make_dataset
from nni_covid3d.data.loading import default_workers, make_loader
from tests.training.helpers import BlobVolumes


def test_a_cpu_run_loads_in_process_and_a_gpu_run_gets_workers_and_pinned_memory():
    assert default_workers("cpu") == 0
    assert default_workers("gpu", cpus=16) == 8  # capped
    assert default_workers("gpu", cpus=4) == 3  # one core left for the training process
    loader = make_loader(BlobVolumes(10), 4, train=True, seed=0, accelerator="cpu")
    assert (loader.num_workers, loader.pin_memory, loader.drop_last) == (0, False, True)
    loader = make_loader(BlobVolumes(10), 4, train=False, accelerator="cpu", workers=2)
    assert (loader.num_workers, loader.persistent_workers, loader.prefetch_factor, loader.drop_last) == (2, True, 4, False)
    # Training workers restart every epoch (their seeds follow the epoch; a resume must redraw the same).
    assert make_loader(BlobVolumes(10), 4, train=True, accelerator="cpu", workers=2).persistent_workers is False


def test_the_thread_loader_yields_the_batches_of_the_torch_loader():
    data = BlobVolumes(10)
    torch_batches = list(make_loader(data, 4, train=True, seed=3, accelerator="cpu"))
    thread_loader = make_loader(data, 4, train=True, seed=3, accelerator="cpu", kind="thread")
    assert isinstance(thread_loader, ThreadDataLoader)
    thread_batches = list(thread_loader)
    assert len(thread_batches) == len(torch_batches) == 2  # the last partial batch dropped
    for a, b in zip(torch_batches, thread_batches):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])


def test_bad_loader_settings_are_refused_naming_the_option():
    with pytest.raises(ValueError, match="--loader must be one of torch, thread"):
        make_loader(BlobVolumes(4), 2, train=False, kind="fast")
    with pytest.raises(ValueError, match="--workers must be 0 or more"):
        make_loader(BlobVolumes(4), 2, train=False, workers=-1)


def test_the_cache_is_filled_before_training_and_not_again(ccccii_root, tmp_path, capsys):
    scans = load_dataset("ccccii", ccccii_root).scans[:4]
    preprocessing = Preprocessing(depth=4, height=16, width=16)
    dataset = make_dataset(scans, preprocessing, train=False, cache_dir=tmp_path, progress=True)
    entries = sorted(tmp_path.rglob("*.pt"))
    assert len(entries) == 4  # filled when made, not during the first epoch
    assert "caching 4 of 4 scans" in capsys.readouterr().err
    assert dataset.base.warm(progress=False) == 0  # nothing left to compute
    again = make_dataset(scans, preprocessing, train=False, cache_dir=tmp_path, progress=True)
    assert "caching 0 of 4 scans" in capsys.readouterr().err
    assert torch.equal(again[0]["image"], dataset[0]["image"])


def test_a_training_run_with_the_thread_loader_repeats_the_torch_loaders_run(tmp_path):
    from nni_covid3d.training.pipeline import TrainConfig, train_model
    from tests.training.helpers import CLASSES, tiny_arch

    losses = {}
    for kind in ("torch", "thread"):
        config = TrainConfig(epochs=2, batch_size=4, progress=False, accelerator="cpu", loader=kind)
        result = train_model("covidnet3d", BlobVolumes(12), BlobVolumes(3, seed=1), tmp_path / kind,
                             class_names=CLASSES, config=config, arch=tiny_arch())
        losses[kind] = [row["train_loss"] for row in result.history]
    assert losses["thread"] == losses["torch"]

"""The DataLoader factory: settings chosen for the device, the thread loader, and the cache warm-up."""
from __future__ import annotations

import shutil

import pytest
import torch
from monai.data import CacheDataset, ThreadDataLoader
from torch.utils.data import Subset

from nni_covid3d.data import DataError, Preprocessing, load_dataset, make_dataset
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
    with pytest.raises(ValueError, match="--loader device caches preprocessed scans .* got BlobVolumes"):
        make_loader(BlobVolumes(4), 2, train=False, kind="device")


@pytest.mark.parametrize("command", [["search"], ["train", "--model", "mc3_18"]])
def test_the_commands_refuse_workers_for_the_device_loader_before_reading_anything(command, tmp_path, capsys):
    from nni_covid3d.cli import main

    code = main([*command, "--dataset", "ccccii", "--root", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--accelerator", "cpu", "--loader", "device", "--workers", "2"])
    assert code == 1
    assert "--loader device loads in the training process: --workers must be 0 or auto, got 2" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_nni_trial_refuses_workers_for_the_device_loader_before_reading_anything(tmp_path, capsys):
    from nni_covid3d.nnictl.trial import main

    code = main(["arch", "--loader", "device", "--workers", "2", "--accelerator", "cpu",
                 "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out")])
    assert code == 1
    assert "error: --loader device loads in the training process: --workers must be 0" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out" / "result.json").exists()


PREPROCESSING = Preprocessing(depth=4, height=16, width=16)


def test_the_device_loader_holds_the_volumes_on_the_training_device_and_yields_the_torch_loaders_batches(ccccii_root):
    scans = load_dataset("ccccii", ccccii_root).scans[:7]
    epochs = {}
    for kind in ("torch", "device"):
        dataset = make_dataset(scans, PREPROCESSING, train=True, seed=5)
        loader = make_loader(dataset, 3, train=True, seed=3, accelerator="cpu", kind=kind)
        assert (loader.num_workers, loader.pin_memory) == (0, False)
        epochs[kind] = [list(loader) for _ in range(2)]  # random slices per access: two epochs differ
    assert dataset.cached_on == torch.device("cpu") and isinstance(dataset.base, CacheDataset)
    assert len(dataset.base._cache) == 7  # filled when the loader was made
    for torch_epoch, device_epoch in zip(epochs["torch"], epochs["device"]):
        assert len(torch_epoch) == len(device_epoch) == 2
        for a, b in zip(torch_epoch, device_epoch):
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(epochs["device"][0][0]["image"], epochs["device"][1][0]["image"])


def test_the_device_loader_caches_the_scans_under_a_subset_once_and_needs_no_workers(ccccii_root):
    dataset = make_dataset(load_dataset("ccccii", ccccii_root).scans[:4], PREPROCESSING, train=False)
    make_loader(Subset(dataset, [0, 2]), 2, train=False, accelerator="cpu", kind="device")
    cache = dataset.base
    make_loader(Subset(dataset, [1, 3]), 2, train=False, accelerator="cpu", kind="device")
    assert dataset.base is cache and isinstance(cache, CacheDataset)  # one cache for every part
    with pytest.raises(ValueError, match="--loader device loads in the training process: --workers must be 0"):
        make_loader(dataset, 2, train=False, accelerator="cpu", kind="device", workers=2)


def test_the_device_loader_names_a_damaged_file_when_it_fills_its_cache(ccccii_root, tmp_path):
    root = tmp_path / "cc"
    shutil.copytree(ccccii_root, root)
    scan = load_dataset("ccccii", root).scans[0]
    scan.paths[0].write_bytes(scan.paths[0].read_bytes()[:120])  # header intact, pixel data cut
    dataset = make_dataset([scan], PREPROCESSING, train=False)
    with pytest.raises(DataError, match=f"{scan.paths[0].name}: cannot decode image"):
        make_loader(dataset, 1, train=False, accelerator="cpu", kind="device")


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

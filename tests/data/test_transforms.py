"""MONAI preprocessing: windowing, depth resampling, augmentation, output format, caching."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nni_covid3d.data.transforms as transforms
from nni_covid3d.data import Preprocessing, load_dataset, make_dataset
from nni_covid3d.data.transforms import WindowIntensityd, depth_indices


@pytest.fixture(scope="module")
def scans(ccccii_root):
    return load_dataset("ccccii", ccccii_root).scans[:4]


def test_preprocessing_dict_roundtrip_and_presets():
    prep = Preprocessing(depth=8, hu_window=(-1000, 400))
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    assert Preprocessing.retrain().shape == (1, 32, 128, 128) and Preprocessing.search().shape == (1, 16, 64, 64)
    with pytest.raises(ValueError, match="unknown preprocessing setting"):
        Preprocessing.from_dict({"depht": 3})
    assert Preprocessing(depth=8).cache_key() == Preprocessing(depth=32).cache_key()  # depth is applied after the cache
    assert Preprocessing(height=32).cache_key() != Preprocessing(height=64).cache_key()
    assert Preprocessing(hu_window=(-1000, 400)).cache_key() != Preprocessing().cache_key()


def test_window_maps_hu_and_gray_ranges_to_unit_interval():
    window = WindowIntensityd("image", hu_window=(-1200, 600), gray_range=(0, 255))
    hu = window({"image": np.array([[[[-2000.0, -1200.0, -300.0, 600.0, 2000.0]]]]), "kind": "hu"})["image"]
    np.testing.assert_allclose(np.asarray(hu).ravel(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    gray = window({"image": np.array([[[[0.0, 127.5, 255.0]]]]), "kind": "gray8"})["image"]
    np.testing.assert_allclose(np.asarray(gray).ravel(), [0.0, 0.5, 1.0], atol=1e-6)


def test_depth_indices_eval_centred_train_random_ordered():
    np.testing.assert_array_equal(depth_indices(8, 4), [1, 3, 5, 7])
    np.testing.assert_array_equal(depth_indices(3, 6), [0, 0, 1, 1, 2, 2])  # repeats, in order
    rng = np.random.default_rng(0)
    draws = [tuple(depth_indices(40, 8, rng.uniform(0, 1, 8))) for _ in range(20)]
    assert len(set(draws)) > 1
    for draw in draws:
        assert list(draw) == sorted(draw) and len(set(draw)) == 8 and all(5 * k <= i < 5 * (k + 1) for k, i in enumerate(draw))


def test_dataset_output_format_eval_deterministic_train_random(scans):
    torch.manual_seed(0)
    prep = Preprocessing(depth=6, height=24, width=24)
    eval_set = make_dataset(scans, prep, train=False)
    item = eval_set[0]
    assert set(item) == {"image", "label", "scan"}
    assert type(item["image"]) is torch.Tensor and item["image"].dtype == torch.float32
    assert tuple(item["image"].shape) == (1, 6, 24, 24) and item["label"] == scans[0].label
    torch.testing.assert_close(eval_set[0]["image"], item["image"])
    train_set = make_dataset(scans, prep, train=True, seed=0)
    first, second = train_set[0]["image"], train_set[0]["image"]
    assert tuple(first.shape) == (1, 6, 24, 24) and not torch.equal(first, second)
    again = make_dataset(scans, prep, train=True, seed=0)[0]["image"]
    torch.testing.assert_close(again, first)  # seeded
    loader = torch.utils.data.DataLoader(eval_set, batch_size=2)
    batch = next(iter(loader))
    assert tuple(batch["image"].shape) == (2, 1, 6, 24, 24) and batch["label"].dtype == torch.int64


def test_disk_cache_skips_decoding_and_is_keyed_on_settings(scans, tmp_path, monkeypatch):
    calls = []
    real_read = transforms.read_scan

    def counting_read(paths):
        calls.append(paths[0])
        return real_read(paths)

    monkeypatch.setattr(transforms, "read_scan", counting_read)
    prep = Preprocessing(depth=4, height=16, width=16)
    data = make_dataset(scans, prep, train=True, cache_dir=tmp_path)
    first_epoch = [data[i]["image"] for i in range(len(data))]
    assert len(calls) == len(scans)
    second_epoch = [data[i]["image"] for i in range(len(data))]
    assert len(calls) == len(scans)  # second epoch: no decoding
    assert any(not torch.equal(a, b) for a, b in zip(first_epoch, second_epoch))  # augmentation after the cache
    fresh = make_dataset(scans, prep, train=False, cache_dir=tmp_path)  # a new dataset object reuses the disk cache
    _ = [fresh[i] for i in range(len(fresh))]
    assert len(calls) == len(scans)
    changed = make_dataset(scans, Preprocessing(depth=4, height=16, width=16, hu_window=(-1000, 0)), train=False, cache_dir=tmp_path)
    _ = changed[0]
    assert len(calls) == len(scans) + 1  # a changed setting never reads the old cache
    assert len(list(tmp_path.glob("prep-*"))) == 2
    memory = make_dataset(scans, prep, train=False, cache_in_memory=True)
    n = len(calls)
    _ = [memory[i] for i in range(len(memory)) for _ in range(2)]
    assert len(calls) == n


def test_augmentation_is_in_plane_and_never_mixes_slices():
    from nni_covid3d.data.transforms import per_access_transforms

    prep = Preprocessing(depth=5, height=20, width=20, affine_prob=1.0, flip_prob=1.0, intensity_prob=0.0)
    post = per_access_transforms(prep, train=True)
    post.set_random_state(seed=3)
    image = 100.0 * torch.arange(5, dtype=torch.float32).view(1, 5, 1, 1).repeat(1, 1, 20, 20)
    image[:, :, :, :10] += 10.0  # a left/right edge the flip and rotation move
    out = post({"image": image, "label": 0, "scan": "x"})["image"]
    assert tuple(out.shape) == (1, 5, 20, 20) and not torch.equal(out, image)
    for k in range(5):  # each slice keeps values between its own two levels: nothing from its neighbours
        assert out[0, k].min() >= 100 * k - 1e-3 and out[0, k].max() <= 100 * k + 10 + 1e-3
        assert out[0, k].max() - out[0, k].min() > 9  # the edge is still there


def test_loader_workers_draw_different_augmentations(scans):
    torch.manual_seed(0)
    data = make_dataset([scans[0]] * 4, Preprocessing(depth=4, height=16, width=16), train=True, cache_in_memory=True)
    loader = torch.utils.data.DataLoader(data, batch_size=1, num_workers=2)  # item 0 -> worker 0, item 1 -> worker 1
    images = [batch["image"] for batch in loader]
    assert not torch.equal(images[0], images[1])

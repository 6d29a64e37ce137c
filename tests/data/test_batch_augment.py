"""``--augment-on device``: the loader's augmentation, drawn per volume, applied to whole batches on the device."""
from __future__ import annotations

import math

import pytest
import torch
from monai.transforms import Affine, Flip

from nni_covid3d.data import Preprocessing
from nni_covid3d.data.batch_augment import BatchAugmentation
from nni_covid3d.data.transforms import per_access_transforms

AUGMENTATION = BatchAugmentation.from_preprocessing(Preprocessing(augment_on="device").to_dict())


def _monai_reference(volume: torch.Tensor, params, i: int) -> torch.Tensor:
    """Volume ``i`` of a batch augmented by MONAI's transforms with the batch's parameters ``params``."""
    c, d, h, w = volume.shape
    slices = volume.reshape(c * d, h, w)
    if params.flip[i]:
        slices = Flip(spatial_axis=1)(slices)
    if params.affine[i]:
        affine = Affine(rotate_params=float(params.angle[i]), scale_params=params.scale[i].tolist(),
                        translate_params=params.shift[i].tolist(), padding_mode="border", mode="bilinear",
                        image_only=True)
        slices = torch.as_tensor(affine(slices))
    slices = torch.as_tensor(slices) * (1 + float(params.intensity_factor[i])) + float(params.intensity_offset[i])
    return slices.reshape(c, d, h, w)


@pytest.mark.parametrize("seed", range(4))
def test_each_volume_is_augmented_as_monai_transforms_would_with_the_same_parameters(seed):
    images = torch.rand(6, 1, 3, 20, 28, generator=torch.Generator().manual_seed(seed))
    params = AUGMENTATION.draw(6, 20, 28, BatchAugmentation.generator(seed, 0, 0))
    assert params.flip.any() and params.affine.any() and not params.affine.all()  # a mix of every case
    out = AUGMENTATION.apply(images, params)
    assert out.shape == images.shape and out.dtype == torch.float32
    for i in range(6):
        torch.testing.assert_close(out[i], _monai_reference(images[i], params, i), rtol=0, atol=2e-5)


def test_the_draws_follow_the_preprocessing_ranges_and_probabilities():
    p = Preprocessing()
    params = AUGMENTATION.draw(4000, 64, 48, BatchAugmentation.generator(0, 0, 0))
    for drawn, prob in ((params.flip, p.flip_prob), (params.affine, p.affine_prob),
                        (params.intensity_factor != 0, p.intensity_prob), (params.intensity_offset != 0, p.intensity_prob)):
        assert abs(drawn.double().mean().item() - prob) < 0.04
    for values, bound in ((params.angle, math.radians(p.rotate_degrees)), (params.scale - 1, p.scale_range),
                          (params.shift[:, 0], p.translate_fraction * 64), (params.shift[:, 1], p.translate_fraction * 48),
                          (params.intensity_factor, p.intensity_scale), (params.intensity_offset, p.intensity_shift)):
        assert values.abs().max() <= bound and values.abs().max() > 0.95 * bound


def test_a_step_draws_the_same_augmentation_every_time_and_ranks_steps_and_epochs_differ():
    images = torch.rand(8, 1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    first = AUGMENTATION(images, BatchAugmentation.generator(3, 1, 5, rank=0))
    assert torch.equal(first, AUGMENTATION(images, BatchAugmentation.generator(3, 1, 5, rank=0)))
    for other in ((3, 1, 5, 1), (3, 1, 6, 0), (3, 2, 5, 0), (4, 1, 5, 0)):
        assert not torch.equal(first, AUGMENTATION(images, BatchAugmentation.generator(*other[:3], rank=other[3])))


def test_under_bf16_autocast_the_augmented_batch_is_the_fp32_one():
    images = torch.rand(4, 1, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    params = AUGMENTATION.draw(4, 16, 16, BatchAugmentation.generator(0, 0, 0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = AUGMENTATION.apply(images, params)
    assert mixed.dtype == torch.float32
    assert torch.equal(mixed, AUGMENTATION.apply(images, params))


def test_device_augmentation_leaves_the_loader_only_the_depth_sampling():
    names = [type(t).__name__ for t in per_access_transforms(Preprocessing(augment_on="device"), train=True).transforms]
    assert names == ["RandDepthSampled", "EnsureTyped"]
    loader_side = [type(t).__name__ for t in per_access_transforms(Preprocessing(), train=True).transforms]
    assert "InPlaned" in loader_side and "RandScaleIntensityd" in loader_side
    assert BatchAugmentation.from_preprocessing(Preprocessing().to_dict()) is None
    assert BatchAugmentation.from_preprocessing(Preprocessing(augment=False, augment_on="device").to_dict()) is None
    assert BatchAugmentation.from_preprocessing(Preprocessing.from_dict(
        {k: v for k, v in Preprocessing().to_dict().items() if k != "augment_on"}).to_dict()) is None  # older records


def test_an_unknown_place_is_refused_naming_the_setting_and_the_choices(capsys):
    with pytest.raises(ValueError, match=r"augment_on must be one of loader, device, got 'gpu'"):
        Preprocessing(augment_on="gpu")
    from nni_covid3d.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--dataset", "ccccii", "--root", ".", "--out", "x", "--augment-on", "gpu"])
    assert "--augment-on: invalid choice: 'gpu'" in capsys.readouterr().err


def test_a_run_augmented_on_the_device_trains_on_augmented_batches_validates_on_plain_ones_and_repeats(tmp_path):
    from nni_covid3d.training.pipeline import TrainConfig, train_model
    from tests.training.helpers import CLASSES, BlobVolumes, tiny_arch

    val = BlobVolumes(3, seed=1)
    seen: dict[str, list[torch.Tensor]] = {}
    histories = {}
    for name, preprocessing in (("device", Preprocessing(augment_on="device")), ("again", Preprocessing(augment_on="device")),
                                ("plain", Preprocessing(augment=False))):
        inputs: list[tuple[bool, torch.Tensor]] = []
        config = TrainConfig(epochs=2, batch_size=4, progress=False, accelerator="cpu", seed=0)

        class Recorded(torch.nn.Module):  # the real model, its inputs recorded
            def __init__(self) -> None:
                super().__init__()
                from nni_covid3d.search_spaces import build_model

                self.net = build_model(tiny_arch())

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                inputs.append((self.training, x.detach().clone()))
                return self.net(x)

        torch.manual_seed(0)  # the same initial weights for every run
        result = train_model(Recorded(), BlobVolumes(12), val, tmp_path / name, class_names=CLASSES, config=config,
                             model_name="recorded", preprocessing=preprocessing.to_dict())
        histories[name] = [row["train_loss"] for row in result.history]
        seen[name] = inputs
    originals = BlobVolumes(12).images
    training = [x for train, x in seen["device"] if train]
    assert training and not any(torch.equal(x[0], original) for x in training for original in originals)
    assert all(any(torch.equal(x[0], original) for original in originals) for train, x in seen["plain"] if train)
    assert all(torch.equal(x, val.images[: len(x)]) for train, x in seen["device"] if not train)
    assert histories["device"] == histories["again"] != histories["plain"]


def test_a_search_augments_on_the_device_and_its_paths_compare_the_same_augmented_batch(monkeypatch):
    from nni_covid3d.search import run_search
    from nni_covid3d.training.module import CovidClassifier
    from tests.strategies.test_run_search import TINY_SPACE, tiny_data

    calls: list[tuple[tuple[int, int], torch.Tensor, torch.Tensor]] = []
    real_augment = CovidClassifier.augment

    def recorded(self, x, step):
        out = real_augment(self, x, step)
        calls.append(((self.trainer.current_epoch, step), x.clone(), out.detach().clone()))
        return out

    monkeypatch.setattr(CovidClassifier, "augment", recorded)
    data = tiny_data()
    data.preprocessing = Preprocessing(depth=8, height=32, width=32, augment_on="device")
    run_search(data, TINY_SPACE, epochs=2, batch_size=4, seed=0, accelerator="cpu")
    arch_steps = [(x, out) for (_, step), x, out in calls if step % 2 == 0]
    weight_steps = [(x, out) for (_, step), x, out in calls if step % 2 == 1]
    assert arch_steps and weight_steps
    assert all(not torch.equal(x, out) for x, out in arch_steps + weight_steps)
    by_step: dict[tuple[int, int], list[torch.Tensor]] = {}
    for (epoch, step), _, out in calls:
        if step % 2 == 0:
            by_step.setdefault((epoch, step), []).append(out)
    # the architecture step's paths (two by default) see one augmented batch
    assert all(len(outs) == 2 and torch.equal(outs[0], outs[1]) for outs in by_step.values())

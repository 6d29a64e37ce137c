"""What only a CUDA GPU shows: float16 and bfloat16 numerics of the search and of retraining, checkpoints
across precisions and devices, channels-last convolutions and the batch augmentation on the GPU.

Skipped where torch sees no CUDA device; ``benchmarks/gpu/run_all.sh`` runs them first on the GPU machine.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_lightning import Callback

from nni_covid3d.data import Preprocessing
from nni_covid3d.data.batch_augment import BatchAugmentation
from nni_covid3d.search import run_search
from nni_covid3d.search_spaces import build_model
from nni_covid3d.strategies.planted import PROBLEMS
from nni_covid3d.training import load_model
from nni_covid3d.training.memory_format import to_channels_last_3d
from nni_covid3d.training.pipeline import TrainConfig, predict, train_model
from tests.strategies.test_precision import first_architecture, search_planted
from tests.strategies.test_run_search import TINY_SPACE, Volumes, tiny_data

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(autouse=True)
def exact_fp32_convolutions():
    """fp32 on the GPU without TF32, so that an fp32 result is a reference for the mixed precisions."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_gumbel_dnas_finds_the_planted_answer_on_the_gpu(precision):
    export, module = search_planted("information", 0, accelerator="gpu", precision=precision)
    assert export == PROBLEMS["information"].answer(0)
    alphas = module.arch_parameters()
    assert all(a.is_cuda and a.dtype == torch.float32 and torch.isfinite(a).all() for a in alphas)
    assert any(float(a.detach().std()) > 0.05 for a in alphas)  # the logits learned
    scaler = getattr(module.trainer.precision_plugin, "scaler", None)
    if precision == "16-mixed":  # loss scaling ran through both optimizers and never overflowed for good
        assert scaler is not None and 1 <= scaler.get_scale() < float("inf")
    else:
        assert scaler is None


class StopAfterFirstEpoch(Callback):
    """Ends the fit after its first epoch, as an interrupted run would (its checkpoint is written)."""

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.should_stop = True


def test_a_16_mixed_search_saves_fp32_state_and_the_loss_scale_and_resumes(tmp_path):
    options = dict(epochs=3, batch_size=4, seed=0, accelerator="gpu", precision="16-mixed", out_dir=tmp_path)
    first = run_search(tiny_data(), TINY_SPACE, callbacks=[StopAfterFirstEpoch()], **options)
    assert len(first.history) == 1
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert all(v.dtype in (torch.float32, torch.int64) for v in checkpoint["state_dict"].values())
    assert 1 <= checkpoint["MixedPrecision"]["scale"] < float("inf")  # the loss scale, for the resume

    resumed = run_search(tiny_data(), TINY_SPACE, resume=True, **options)
    assert len(resumed.history) == 3 and resumed.history[0] == first.history[0]
    assert all(np.isfinite(row["val_loss"]) for row in resumed.history)
    for dist in resumed.probabilities.values():
        assert abs(sum(dist.values()) - 1.0) < 1e-6


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_a_mixed_precision_retrain_on_the_gpu_learns_and_its_checkpoint_predicts_on_the_cpu(precision, tmp_path):
    config = TrainConfig(epochs=4, batch_size=4, learning_rate=3e-3, scheduler="none", accelerator="gpu",
                         progress=False, precision=precision)
    result = train_model("covidnet3d", Volumes(16, seed=0), Volumes(6, seed=1), tmp_path, class_names=["a", "b"],
                         config=config, arch=first_architecture())
    losses = [row["train_loss"] for row in result.history if "train_loss" in row]
    assert len(losses) == 4 and all(np.isfinite(losses)) and losses[-1] < losses[0], losses

    model, _ = load_model(result.best_checkpoint)
    assert all(p.dtype == torch.float32 and not p.is_cuda for p in model.parameters())
    data = Volumes(6, seed=1)
    labels_cpu, on_cpu = predict(model, data, batch_size=3, progress=False)
    for inference in ("32-true", precision):
        labels, on_gpu = predict(model, data, batch_size=3, progress=False, device="cuda", precision=inference)
        assert (labels == labels_cpu).all() and on_gpu.dtype == np.float32  # the same scans, in order
        np.testing.assert_allclose(on_gpu, on_cpu, atol=1e-4 if inference == "32-true" else 0.03)


def test_channels_last_convolutions_on_the_gpu_give_the_channels_first_logits_and_gradients():
    torch.manual_seed(0)
    first = build_model(first_architecture()).cuda()
    last = to_channels_last_3d(build_model(first_architecture()).cuda())
    last.load_state_dict(first.state_dict())
    x = torch.randn(4, 1, 8, 32, 32, device="cuda")
    torch.manual_seed(1)
    out_first = first(x)
    torch.manual_seed(1)  # the same dropout masks
    out_last = last(x)
    torch.testing.assert_close(out_last, out_first, rtol=1e-4, atol=1e-5)
    out_first.square().sum().backward()
    out_last.square().sum().backward()
    for (name, a), b in zip(first.named_parameters(), last.parameters()):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-3, atol=1e-5, msg=name)


def test_the_batch_augmentation_on_the_gpu_equals_the_cpu_one():
    augmentation = BatchAugmentation.from_preprocessing(Preprocessing(augment_on="device").to_dict())
    images = torch.rand(8, 1, 6, 40, 48, generator=torch.Generator().manual_seed(0))
    on_cpu = augmentation(images, BatchAugmentation.generator(1, 2, 3))
    on_gpu = augmentation(images.cuda(), BatchAugmentation.generator(1, 2, 3))
    assert on_gpu.is_cuda and on_gpu.dtype == torch.float32
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=0, atol=1e-4)


def test_the_device_loader_holds_the_volumes_on_the_gpu_and_a_search_runs_from_them(tmp_path):
    from nni_covid3d.cli import main
    from nni_covid3d.data import load_dataset, make_dataset, write_synthetic_dataset
    from nni_covid3d.data.loading import make_loader
    from tests.strategies.test_search_cli import TINY

    root = write_synthetic_dataset("ccccii", tmp_path / "data", n_patients=8, seed=0, size=32, slices=(8, 10))
    preprocessing = Preprocessing(depth=8, height=32, width=32, augment_on="device")
    dataset = make_dataset(load_dataset("ccccii", root).scans, preprocessing, train=True)
    loader = make_loader(dataset, 2, train=True, seed=0, accelerator="gpu", kind="device")
    assert (loader.num_workers, loader.pin_memory) == (0, False)
    assert dataset.cached_on == torch.device("cuda", 0) and next(iter(loader))["image"].is_cuda

    out = tmp_path / "search"
    assert main(["search", "--dataset", "ccccii", "--root", str(root), "--strategy", "gumbel-dnas", "--out", str(out),
                 *TINY, "--epochs", "2", "--accelerator", "gpu", "--loader", "device", "--augment-on", "device",
                 "--precision", "bf16-mixed"]) == 0
    assert (out / "architecture.json").is_file()

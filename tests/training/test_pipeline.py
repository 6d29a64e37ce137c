"""Training pipeline on small synthetic volumes: selection on val, test read once afterwards,
checkpoints (weights_only), resume, class balancing, and the module inside NNI's one-shot search."""
from __future__ import annotations

import json
import pickle

import pytest
import pytorch_lightning as pl
import torch

from nni_covid3d.training import CheckpointError, CovidClassifier, load_model, read_checkpoint
from nni_covid3d.training.pipeline import (
    TrainConfig,
    dataset_labels,
    evaluate_checkpoint,
    inverse_frequency_weights,
    train_model,
)
from tests.training.helpers import CLASSES, BlobVolumes, SpyDataset, tiny_arch

FAST = dict(batch_size=4, progress=False, accelerator="cpu", devices=1)


class _FitEnd(pl.Callback):
    def __init__(self, log):
        self.events = log

    def on_fit_end(self, trainer, module):
        self.events.append(("fit_end", None))


def test_test_split_is_read_only_after_training_with_the_selected_checkpoint(tmp_path):
    log: list = []
    train = SpyDataset(BlobVolumes(12, seed=0), "train", log)
    val = SpyDataset(BlobVolumes(6, seed=1), "val", log)
    test = SpyDataset(BlobVolumes(6, seed=2), "test", log)
    result = train_model(
        "covidnet3d", train, val, tmp_path / "run", class_names=CLASSES, arch=tiny_arch(),
        config=TrainConfig(epochs=3, **FAST), callbacks=[_FitEnd(log)],
    )
    assert [name for name, _ in log].count("test") == 0  # training never touched the test split
    assert {name for name, _ in log} == {"train", "val", "fit_end"}
    metrics = evaluate_checkpoint(result.best_checkpoint, test, progress=False)
    fit_end = log.index(("fit_end", None))
    test_reads = [i for i, (name, _) in enumerate(log) if name == "test"]
    assert test_reads and min(test_reads) > fit_end
    assert sorted(index for name, index in log if name == "test") == list(range(len(test)))  # once each
    assert metrics["n"] == 6 and metrics["checkpoint"] == str(result.best_checkpoint)
    # The selected checkpoint is the best validation epoch.
    val_scores = [row["val_acc"] for row in result.history]
    assert len(val_scores) == 3 and result.best_score == pytest.approx(max(val_scores))
    saved = json.loads((tmp_path / "run" / "eval_test" / "metrics.json").read_text())
    assert saved["accuracy"] == pytest.approx(metrics["accuracy"])
    for name in ("roc.png", "confusion.png", "predictions.csv"):
        assert (tmp_path / "run" / "eval_test" / name).stat().st_size > 0
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 0
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def test_checkpoint_is_weights_only_and_self_describing(tmp_path):
    arch = tiny_arch()
    result = train_model(
        "covidnet3d", BlobVolumes(8, num_classes=2), BlobVolumes(4, seed=1, num_classes=2), tmp_path,
        class_names=["Normal", "NCP"],
        arch=arch, preprocessing={"depth": 8, "height": 16, "width": 16},
        data_source={"dataset": "mosmed", "root": str(tmp_path)}, config=TrainConfig(epochs=1, **FAST),
    )
    raw = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    meta = raw["nni_covid3d"]
    assert meta["model_name"] == "covidnet3d" and meta["class_names"] == ["Normal", "NCP"]
    assert meta["arch"]["choices"] == arch["choices"] and meta["arch"]["space"]["num_classes"] == 2
    assert meta["preprocessing"] == {"depth": 8, "height": 16, "width": 16}
    assert meta["data"]["dataset"] == "mosmed"
    model, _ = load_model(result.best_checkpoint)
    x = BlobVolumes(2, seed=5).images
    state = {k[len("_model."):]: v for k, v in raw["state_dict"].items() if k.startswith("_model.")}
    reference, _ = load_model(result.best_checkpoint)
    reference.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x)) and model(x).shape == (2, 2)


def test_foreign_files_are_refused_clearly(tmp_path):
    plain_ckpt = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, plain_ckpt)
    with pytest.raises(CheckpointError, match="plain.ckpt is not an nni-covid3d checkpoint"):
        read_checkpoint(plain_ckpt)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.ckpt"):
        read_checkpoint(garbage)
    unsafe = tmp_path / "unsafe.ckpt"
    unsafe.write_bytes(pickle.dumps({"nni_covid3d": {}, "state_dict": {}, "obj": _Unsafe()}))
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(unsafe)
    with pytest.raises(FileNotFoundError, match="missing.ckpt"):
        read_checkpoint(tmp_path / "missing.ckpt")


class _Unsafe:
    pass


def test_resume_continues_and_fresh_run_refuses_to_overwrite(tmp_path):
    kwargs = dict(class_names=CLASSES, arch=tiny_arch())
    train, val = BlobVolumes(8), BlobVolumes(3, seed=1)
    train_model("covidnet3d", train, val, tmp_path, config=TrainConfig(epochs=1, **FAST), **kwargs)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        train_model("covidnet3d", train, val, tmp_path, config=TrainConfig(epochs=1, **FAST), **kwargs)
    result = train_model("covidnet3d", train, val, tmp_path, config=TrainConfig(epochs=2, **FAST), resume=True, **kwargs)
    assert [row["epoch"] for row in result.history] == [0, 1]
    assert read_checkpoint(result.last_checkpoint)["global_step"] == 4  # 2 epochs x 2 batches
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train_model("covidnet3d", train, val, tmp_path / "new", config=TrainConfig(epochs=1, **FAST), resume=True, **kwargs)


def test_class_balancing_options(tmp_path):
    labels = [1] * 9 + [0] * 3
    assert inverse_frequency_weights(labels, 3) == pytest.approx([12 / 9, 12 / 27, 0.0])
    data = BlobVolumes(labels=labels)
    assert dataset_labels(data) == labels
    assert dataset_labels(torch.utils.data.TensorDataset(data.images, torch.tensor(labels))) == labels
    result = train_model(
        "covidnet3d", data, BlobVolumes(3, seed=1), tmp_path, class_names=CLASSES, arch=tiny_arch(),
        config=TrainConfig(epochs=1, balance="weights", **FAST),
    )
    hparams = read_checkpoint(result.best_checkpoint)["hyper_parameters"]
    assert hparams["class_weights"] == pytest.approx([12 / 9, 12 / 27, 0.0])
    with pytest.raises(ValueError, match="balance"):
        TrainConfig(balance="oversample")


def test_balanced_sampler_draws_the_minority_class_as_often_as_the_majority(tmp_path):
    labels = [1] * 18 + [0] * 2
    reads: list = []
    train = SpyDataset(BlobVolumes(labels=labels), "train", reads)
    train_model(
        "covidnet3d", train, BlobVolumes(3, seed=1), tmp_path, class_names=CLASSES, arch=tiny_arch(),
        config=TrainConfig(epochs=1, balance="sampler", **FAST),
    )
    drawn = [labels[index] for name, index in reads if name == "train"]
    assert len(drawn) == 20  # one epoch of len(train) draws, with replacement
    assert drawn.count(0) >= 6  # 2 of 20 without balancing; 10 expected with it


def test_classifier_accepts_tuple_batches_and_cosine_schedule():
    torch.manual_seed(0)
    data = BlobVolumes(8)
    tuples = torch.utils.data.TensorDataset(data.images, torch.tensor(data.labels))
    classifier = CovidClassifier("covidnet3d", arch=tiny_arch(), class_names=CLASSES, max_epochs=3)
    trainer = pl.Trainer(max_epochs=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(classifier, torch.utils.data.DataLoader(tuples, batch_size=4))
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 3
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-9)  # cosine reached 0
    assert trainer.optimizers[0].param_groups[0]["weight_decay"] == 5e-4


def test_classifier_is_the_evaluator_of_nni_one_shot_search():
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.nn.pytorch import LayerChoice, ModelSpace
    from nni.nas.space import RawFormatModelSpace
    from nni.nas.strategy import DARTS
    from torch import nn

    class Space(ModelSpace):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv3d(1, 4, 3, padding=1)
            self.block = LayerChoice([nn.Conv3d(4, 4, 3, padding=1), nn.Identity()], label="block")
            self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3))

        def forward(self, x):
            return self.head(self.block(self.stem(x)))

    torch.manual_seed(0)
    evaluator = Lightning(
        CovidClassifier(class_names=CLASSES),
        Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                enable_checkpointing=False, enable_model_summary=False),
        train_dataloaders=DataLoader(BlobVolumes(8), batch_size=4),
        val_dataloaders=DataLoader(BlobVolumes(4, seed=1), batch_size=4),
    )
    strategy = DARTS()
    strategy(RawFormatModelSpace(Space(), evaluator), SequentialExecutionEngine())
    [exported] = list(strategy.list_models())
    assert exported.sample["block"] in (0, 1)
    metrics = evaluator.trainer.callback_metrics
    assert "train_loss" in metrics and "train_acc" in metrics
    # The architecture weights moved: DARTS trained them through our training_step.
    probs = [float(metrics[f"prob/block/{i}"]) for i in (0, 1)]
    assert probs != pytest.approx([0.5, 0.5], abs=1e-6)

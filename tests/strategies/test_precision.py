"""Mixed precision on the CPU: GumbelDNAS under bf16-mixed (and a CPU float16 plugin), retrain, checkpoints, CLI."""
from __future__ import annotations

import pytest
import torch
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.space import RawFormatModelSpace

from nni_covid3d.cli import main
from nni_covid3d.search import run_search
from nni_covid3d.search_spaces import CovidNet3DSpace, export_architecture
from nni_covid3d.strategies import get
from nni_covid3d.strategies.planted import PROBLEMS
from nni_covid3d.strategies.supermodules import _scale, hard_gumbel_draws
from nni_covid3d.training import load_model
from nni_covid3d.training.pipeline import TrainConfig, train_model
from tests.strategies.test_run_search import TINY_SPACE, Volumes


def search_planted(name: str, seed: int, accelerator: str = "cpu", **trainer_options) -> tuple[dict, object]:
    """GumbelDNAS (defaults) on a planted problem, with extra Trainer options; (export, one-shot module)."""
    problem = PROBLEMS[name]
    torch.manual_seed(seed)
    evaluator = Classification(
        train_dataloaders=DataLoader(problem.make_data(seed, problem.n_train, "train"), batch_size=problem.batch_size,
                                     shuffle=True),
        val_dataloaders=DataLoader(problem.make_data(seed, problem.n_arch, "arch"), batch_size=problem.batch_size,
                                   shuffle=True),
        num_classes=2, learning_rate=problem.learning_rate, max_epochs=problem.epochs, accelerator=accelerator,
        devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=0, **trainer_options,
    )
    strategy = get("gumbel-dnas", seed=seed, arch_split="val")
    strategy(RawFormatModelSpace(problem.build_space(seed), evaluator), SequentialExecutionEngine())
    export = strategy.oneshot_module.export()
    return {label: export[label] for label in problem.answer(seed)}, strategy.oneshot_module


def test_draws_and_straight_through_gradient_stay_fp32_under_autocast():
    alphas = {"a": torch.tensor([0.3, -0.2, 0.1], requires_grad=True)}
    plain = hard_gumbel_draws(alphas, 2.0, torch.Generator().manual_seed(5))["a"]
    activation = torch.randn(4, 8, 6, 6, 6, generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        draw = hard_gumbel_draws(alphas, 2.0, torch.Generator().manual_seed(5))["a"]
        out = _scale(activation.bfloat16(), draw.weight)
    assert draw.index == plain.index and draw.weight.dtype == torch.float32
    assert float(draw.weight.detach()) == 1.0 and out.dtype == torch.bfloat16
    assert torch.equal(out, activation.bfloat16())  # the subnet's activation, unchanged
    out.float().sum().backward()
    # d/d alpha through the weight: sum(activation) summed in fp32 (exact for these bf16 values).
    expected = torch.autograd.grad(plain.weight * activation.bfloat16().double().sum().float(), alphas["a"])[0]
    assert torch.allclose(alphas["a"].grad, expected, rtol=1e-5, atol=1e-6)


def test_gumbel_dnas_finds_the_planted_answer_under_bf16_mixed():
    export, module = search_planted("information", 0, precision="bf16-mixed")
    assert export == PROBLEMS["information"].answer(0)
    assert all(alpha.dtype == torch.float32 for alpha in module.arch_parameters())
    assert module.trainer.precision == "bf16-mixed"


def test_gumbel_dnas_steps_both_optimizers_with_loss_scaling_under_a_float16_plugin(monkeypatch):
    # Lightning's 16-mixed plugin on the CPU (float16 autocast + GradScaler): the mechanics of manual
    # optimisation with loss scaling; float16 numerics on a GPU are not covered here.
    from pytorch_lightning.plugins import MixedPrecision

    from nni_covid3d.strategies.gumbel_dnas.lightning import GumbelDNASLightningModule

    clipped_norms: list[float] = []
    clip = GumbelDNASLightningModule.clip_gradients

    def recording_clip(self, optimizer, *args, **kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        clipped_norms.append(float(torch.stack([g.norm() for g in grads]).norm()))
        return clip(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(GumbelDNASLightningModule, "clip_gradients", recording_clip)
    plugin = MixedPrecision("16-mixed", "cpu")
    export, module = search_planted("information", 0, plugins=[plugin])
    assert plugin.scaler is not None and 0 < plugin.scaler.get_scale() < float("inf")
    # Every weight step clipped (clip value 5) gradients already unscaled: the scale is 2**16.
    assert len(clipped_norms) == PROBLEMS["information"].epochs * module.trainer.num_training_batches
    assert 0 < max(clipped_norms) < 100, clipped_norms
    alphas = module.arch_parameters()
    assert all(torch.isfinite(a).all() and a.dtype == torch.float32 for a in alphas)
    assert any(float(a.detach().std()) > 0.05 for a in alphas)  # the logits learned
    assert export == PROBLEMS["information"].answer(0)


def first_architecture() -> dict:
    space = CovidNet3DSpace(num_classes=2, **TINY_SPACE)
    sample = {label: mutable.default() for label, mutable in space.simplify().items()}
    return export_architecture(space.config, sample)


def test_retrain_under_bf16_mixed_learns_and_its_checkpoint_predicts_in_fp32(tmp_path):
    config = TrainConfig(epochs=4, batch_size=4, learning_rate=3e-3, scheduler="none", accelerator="cpu",
                         progress=False, precision="bf16-mixed")
    result = train_model("covidnet3d", Volumes(16, seed=0), Volumes(6, seed=1), tmp_path, class_names=["a", "b"],
                         config=config, arch=first_architecture())
    losses = [row["train_loss"] for row in result.history if "train_loss" in row]
    assert len(losses) == 4 and losses[-1] < losses[0], losses
    model, meta = load_model(result.best_checkpoint)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.no_grad():
        logits = model(Volumes(6, seed=1).images)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


@pytest.mark.parametrize("command", [["search"], ["train", "--model", "mc3_18"]])
def test_cli_refuses_16_mixed_without_a_gpu(command, tmp_path, capsys):
    code = main([*command, "--dataset", "ccccii", "--root", str(tmp_path), "--out", str(tmp_path / "out"),
                 "--accelerator", "cpu", "--precision", "16-mixed"])
    assert code == 1
    error = capsys.readouterr().err
    assert "--precision 16-mixed" in error and "needs a CUDA GPU" in error
    assert not (tmp_path / "out").exists()  # refused before anything is read or written


def test_run_search_of_covidnet3d_under_bf16_mixed_exports_an_fp32_search(tmp_path):
    from tests.strategies.test_run_search import tiny_data

    result = run_search(tiny_data(), TINY_SPACE, epochs=2, batch_size=4, seed=0, accelerator="cpu",
                        precision="bf16-mixed", out_dir=tmp_path)
    assert result.architecture_path.is_file() and len(result.history) == 2
    for dist in result.probabilities.values():
        assert abs(sum(dist.values()) - 1.0) < 1e-6
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert all(v.dtype in (torch.float32, torch.int64) for v in state.values())  # fp32 weights and logits

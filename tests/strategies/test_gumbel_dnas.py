"""GumbelDNAS: gradients, single-path execution, planted search, resume, export, errors, logging."""
from __future__ import annotations

import json
import weakref
from collections import defaultdict

import pytest
import pytorch_lightning as pl
import torch
import torch.nn as nn

import nni
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, MutableConv2d

import nni_covid3d.strategies as strategies
from nni_covid3d.strategies import GumbelDNAS, TemperatureSchedule
from nni_covid3d.strategies.supermodules import GumbelLayerChoice, GumbelRepeat, hard_gumbel_draw

from .toy import MixedSpace, image_dataset, make_evaluator, run_search


def _alphas(strategy: GumbelDNAS) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in strategy.oneshot_module.label_alphas().items()}


class PathRecorder(pl.Callback):
    """Records, per supernet forward, which candidates of every choice ran (forward hooks)."""

    def __init__(self):
        self.passes: list[dict[str, list]] = []
        self.alpha_grads: list[dict[str, torch.Tensor]] = []

    def on_fit_start(self, trainer, module):
        module.model.register_forward_pre_hook(
            lambda model, _: self.passes.append(defaultdict(list, training=model.training, grad=torch.is_grad_enabled())))
        for name, sub in module.model.named_modules():
            if isinstance(sub, GumbelLayerChoice):
                for cand in sub.names:
                    sub[cand].register_forward_hook(
                        lambda *_, n=name, c=cand: self.passes[-1][n].append(c))
            if isinstance(sub, GumbelRepeat):
                for i, block in enumerate(sub.blocks):
                    block.register_forward_hook(lambda *_, n=name, i=i: self.passes[-1][n].append(i))

    def on_train_batch_end(self, trainer, module, *args):
        self.alpha_grads.append({k: a.grad.clone() for k, a in module.label_alphas().items() if a.grad is not None})


def test_straight_through_draw_is_one_hot_with_gradient():
    alpha = nn.Parameter(torch.tensor([0.1, 0.5, -0.3]))
    draw = hard_gumbel_draw(alpha, tau=1.0, generator=torch.Generator().manual_seed(0))
    assert draw.weight.item() == pytest.approx(1.0)
    draw.weight.backward()
    assert alpha.grad.abs().sum() > 0
    # Same seed, same draw (what keeps DDP ranks in lock-step).
    again = hard_gumbel_draw(alpha, tau=1.0, generator=torch.Generator().manual_seed(0))
    assert again.index == draw.index


@pytest.mark.parametrize("estimator", ["score_function", "straight_through"])
def test_alpha_gradients_and_exactly_one_candidate_per_choice(estimator):
    torch.manual_seed(0)
    recorder = PathRecorder()
    evaluator = make_evaluator(image_dataset(128), image_dataset(32, seed=1), epochs=1, batch_size=16,
                               callbacks=[recorder])
    strategy = run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0, arch_estimator=estimator))

    assert recorder.alpha_grads, "no training step ran"
    for grads in recorder.alpha_grads:
        assert set(grads) == {"op", "depth", "act", "skip"}
        for label, grad in grads.items():
            assert torch.isfinite(grad).all()
    # Some steps leave a label without gradient (the score function: both paths drew the same value;
    # straight-through: the skip InputChoice dropped the path through it); over the steps, all move.
    for label in ("op", "depth", "act", "skip"):
        assert any(grads[label].abs().sum() > 0 for grads in recorder.alpha_grads), f"{label} never got a gradient"

    # Training passes: 2 or 3 per batch (arch + weight step); validation passes run the argmax path.
    assert len(recorder.passes) >= 2 * len(recorder.alpha_grads)
    for ran in recorder.passes:
        assert len(ran["op"]) == 1
        assert len(ran["act_a"]) == 1 and len(ran["act_b"]) == 1
        assert ran["act_a"] == ran["act_b"], "modules sharing a label must share the draw"
        assert ran["body"] == list(range(len(ran["body"]))) and 1 <= len(ran["body"]) <= 3
    drawn_ops = {ran["op"][0] for ran in recorder.passes}
    assert len(drawn_ops) > 1, "the draw never changed"
    assert set(strategy.export()) == {"op", "depth", "act", "skip"}


def test_choice_credit_moves_only_the_two_candidates_of_one_label_per_step():
    torch.manual_seed(0)
    recorder = PathRecorder()
    evaluator = make_evaluator(image_dataset(128), image_dataset(32, seed=1), epochs=4, batch_size=16,
                               callbacks=[recorder])
    run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0, warmup_epochs=0, arch_credit="choice"))

    assert recorder.alpha_grads, "no training step ran"
    credited = []
    for grads in recorder.alpha_grads:
        moved = {label: grad for label, grad in grads.items() if grad.abs().sum() > 0}
        assert len(moved) <= 1, f"one comparison moved several labels: {sorted(moved)}"
        for label, grad in moved.items():
            # Two candidates, opposite amounts: the others keep their logits.
            assert int((grad != 0).sum()) == 2 and float(grad.sum()) == pytest.approx(0.0, abs=1e-6)
            credited.append(label)
    # Labels are credited in turn; one whose change leaves the loss as it was (op while skip bypasses
    # it) gets no gradient that step.
    assert len(set(credited)) >= 3, credited
    # Independent paths (the default) move several labels in one step.
    recorder = PathRecorder()
    evaluator = make_evaluator(image_dataset(128), image_dataset(32, seed=1), epochs=1, batch_size=16,
                               callbacks=[recorder])
    run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0, warmup_epochs=0))
    assert any(sum(g.abs().sum() > 0 for g in grads.values()) > 1 for grads in recorder.alpha_grads)


def test_choice_credit_needs_two_score_function_paths():
    with pytest.raises(ValueError, match="arch_credit='choice'"):
        GumbelDNAS(arch_credit="choice", arch_samples=4)
    with pytest.raises(ValueError, match="arch_credit='choice'"):
        GumbelDNAS(arch_credit="choice", arch_estimator="straight_through")


class _Saved:
    """What autograd holds for one tensor saved for backward (weak-referenceable)."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor.detach()  # no grad_fn: a saved output must not hold its own graph node


class ArchActivationWatcher(pl.Callback):
    """Counts, at the start of each weight-step forward, the tensors that the architecture step's
    autograd graph still holds (saved-tensor hooks around the architecture-step forward)."""

    def __init__(self):
        self.arch_saved: list[weakref.ref] = []
        self.alive_at_weight_step: list[int] = []
        self.training_passes = 0
        self._hooks = None

    def on_fit_start(self, trainer, module):
        module.model.register_forward_pre_hook(self._pass_starts)
        module.model.register_forward_hook(self._pass_ends)

    def _pack(self, tensor):
        saved = _Saved(tensor)
        self.arch_saved.append(weakref.ref(saved))
        return saved

    def _pass_starts(self, model, args):
        if not model.training:
            return
        if self.training_passes % 2 == 0:  # passes alternate: architecture step, weight step
            self.arch_saved = []
            self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda saved: saved.tensor)
            self._hooks.__enter__()
        else:
            self.alive_at_weight_step.append(sum(ref() is not None for ref in self.arch_saved))
        self.training_passes += 1

    def _pass_ends(self, model, args, output):
        if self._hooks is not None:
            self._hooks.__exit__(None, None, None)
            self._hooks = None


def test_architecture_step_activations_are_freed_before_the_weight_step():
    # The backward pass to the logits never runs the nodes before the first choice, so their saved
    # activations live as long as the architecture loss does: it must be gone before the weight step.
    torch.manual_seed(0)
    watcher = ArchActivationWatcher()
    evaluator = make_evaluator(image_dataset(64), image_dataset(32, seed=1), epochs=1, callbacks=[watcher])
    run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0, warmup_epochs=0, arch_estimator="straight_through"))
    assert watcher.alive_at_weight_step, "no weight step ran"
    assert watcher.alive_at_weight_step == [0] * len(watcher.alive_at_weight_step)


def _training_ops(recorder: PathRecorder) -> tuple[list[str], list[str]]:
    """(ops of the weight passes, ops of the architecture passes) in order, from a PathRecorder."""
    training = [ran for ran in recorder.passes if ran["training"]]
    weight = [ran["op"][0] for ran in training if ran["grad"]]
    arch = [ran["op"][0] for ran in training if not ran["grad"]]
    return weight, arch


def test_warmup_trains_every_candidate_equally_then_weights_stay_fair():
    torch.manual_seed(0)
    recorder = PathRecorder()
    # 64 samples, half for the architecture: 1 weight step (batch 32) per epoch; 12 epochs, 3 of warm-up.
    evaluator = make_evaluator(image_dataset(64), image_dataset(32, seed=1), epochs=12, callbacks=[recorder])
    strategy = run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0, arc_learning_rate=0.1))
    assert strategy.oneshot_module.warmup_epochs == 3  # a quarter of 12 epochs
    weight_ops, arch_ops = _training_ops(recorder)
    assert len(weight_ops) == 12 and len(arch_ops) == 2 * 9  # two forward-only paths per architecture step
    for cycle in range(4):  # every candidate once in each cycle of 3 weight steps, warm-up or not
        assert sorted(weight_ops[3 * cycle: 3 * cycle + 3]) == ["conv3", "conv5", "pool"], weight_ops


def test_weights_can_follow_the_logits_after_warmup():
    torch.manual_seed(0)
    recorder = PathRecorder()
    evaluator = make_evaluator(image_dataset(64), image_dataset(32, seed=1), epochs=12, callbacks=[recorder])
    strategy = run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0, arc_learning_rate=0.5, weight_sampling="gumbel"))
    favourite = strategy.export()["op"]
    weight_ops, _ = _training_ops(recorder)
    assert weight_ops[3:].count(favourite) > 5, (favourite, weight_ops)


def test_export_is_argmax_of_logits_not_a_sample():
    torch.manual_seed(0)
    evaluator = make_evaluator(image_dataset(32), image_dataset(16, seed=1), epochs=1)
    strategy = run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0))
    with torch.no_grad():
        for label, alpha in strategy.oneshot_module.label_alphas().items():
            alpha.zero_()
            alpha[-1] = 5.0
    for _ in range(5):
        assert strategy.export() == {"op": "pool", "depth": 3, "act": 1, "skip": [1]}
    model = next(strategy.list_models()).executable_model()
    assert isinstance(model.op, nn.AvgPool2d) and len(model.body) == 3


def test_resume_matches_uninterrupted_run(tmp_path):
    train, val = image_dataset(64), image_dataset(32, seed=1)

    def search(epochs, seed, **kwargs):
        torch.manual_seed(seed)
        evaluator = make_evaluator(train, val, epochs=epochs, default_root_dir=str(tmp_path))
        strategy = run_search(MixedSpace(), evaluator, GumbelDNAS(seed=0, arc_learning_rate=0.05, **kwargs))
        return strategy

    straight = search(2, seed=0)
    search(1, seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    # A different global seed: everything must come back from the checkpoint.
    resumed = search(2, seed=123, checkpoint_dir=tmp_path / "ckpt", resume_from="last")

    a, b = _alphas(straight), _alphas(resumed)
    for label in a:
        torch.testing.assert_close(a[label], b[label], rtol=0, atol=1e-6)
    assert float(resumed.oneshot_module.temperature) == float(straight.oneshot_module.temperature)
    wa = straight.oneshot_module.model.head.weight
    wb = resumed.oneshot_module.model.head.weight
    torch.testing.assert_close(wa, wb, rtol=0, atol=1e-6)
    # A straight run with different logits start proves the comparison can fail.
    other = search(2, seed=0, warmup_epochs=1)
    assert any(not torch.allclose(a[k], v) for k, v in _alphas(other).items())


def test_checkpoint_holds_logits_temperature_optimizers_and_settings(tmp_path):
    torch.manual_seed(0)
    evaluator = make_evaluator(image_dataset(32), image_dataset(16, seed=1), epochs=1, default_root_dir=str(tmp_path))
    run_search(MixedSpace(), evaluator, GumbelDNAS(checkpoint_dir=tmp_path / "c"))
    ckpt = torch.load(tmp_path / "c" / "last.ckpt", weights_only=True)
    keys = ckpt["state_dict"].keys()
    assert "temperature" in keys
    assert any(k.endswith("_arch_alpha") for k in keys)
    assert len(ckpt["optimizer_states"]) == 2  # weights + logits
    assert ckpt["gumbel_dnas"]["settings"]["seed"] == 0  # what a resume must match; randomness needs no state


def test_size_budget_steers_to_small_candidates():
    torch.manual_seed(0)
    evaluator = make_evaluator(image_dataset(64), image_dataset(16, seed=1), epochs=3)
    strategy = run_search(MixedSpace(), evaluator,
                          GumbelDNAS(seed=0, arc_learning_rate=0.05, size_budget_mb=1e-4, penalty_weight=100.0,
                                     warmup_epochs=0))
    exported = strategy.export()
    assert exported["op"] == "pool" and exported["depth"] == 1, exported
    expected, argmax_size = strategy.oneshot_module.expected_size_mb()
    params_mb = sum(p.numel() for p in next(strategy.list_models()).executable_model().parameters()) * 4 / 2**20
    assert argmax_size == pytest.approx(params_mb, rel=1e-6)


def test_flops_budget_steers_to_cheap_candidates():
    from nni_covid3d.strategies.supermodules import count_flops

    torch.manual_seed(0)
    evaluator = make_evaluator(image_dataset(64), image_dataset(16, seed=1), epochs=3)
    strategy = run_search(MixedSpace(), evaluator,
                          GumbelDNAS(seed=0, arc_learning_rate=0.05, flops_budget=1e3, penalty_weight=100.0,
                                     warmup_epochs=0))
    exported = strategy.export()
    assert exported["op"] == "pool" and exported["depth"] == 1, exported
    model = next(strategy.list_models()).executable_model().eval()
    _, argmax_flops = strategy.oneshot_module.expected_flops()
    assert argmax_flops == pytest.approx(count_flops(model, torch.randn(1, 1, 8, 8)), rel=1e-6)


def test_temperature_schedules():
    exp = TemperatureSchedule(5.0, 0.5, "exponential")
    lin = TemperatureSchedule(5.0, 0.5, "linear")
    assert [round(exp.at(e, 1, 4), 4) for e in range(4)] == [5.0, 5.0, round(5.0 * 0.1 ** 0.5, 4), 0.5]
    assert [lin.at(e, 0, 4) for e in range(4)] == pytest.approx([5.0, 3.5, 2.0, 0.5])
    assert TemperatureSchedule.parse(1.0).at(3, 0, 10) == 1.0
    with pytest.raises(ValueError, match="init >= final"):
        TemperatureSchedule(0.5, 1.0)


def test_per_epoch_tensorboard_logging(tmp_path):
    from pytorch_lightning.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    evaluator = make_evaluator(image_dataset(32), image_dataset(16, seed=1), epochs=2)
    evaluator.trainer.loggers = [TensorBoardLogger(str(tmp_path), name="search")]
    run_search(MixedSpace(), evaluator, GumbelDNAS(temperature=(2.0, 1.0)))
    events = EventAccumulator(str(next(tmp_path.glob("search/version_*")))).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"gumbel/temperature", "entropy/op", "prob/op/conv3", "prob/skip/1", "arch/expected_size_mb", "val_acc"} <= tags
    assert [e.value for e in events.Scalars("gumbel/temperature")] == pytest.approx([2.0, 1.0])


def test_the_reporter_callback_reports_a_search_to_nni_inside_a_trial(monkeypatch):
    from nni_covid3d.nnictl import NniReporter, reporter as reporter_module

    reported = {"intermediate": [], "final": []}
    monkeypatch.setattr(reporter_module, "in_nni_trial", lambda: True)
    monkeypatch.setattr(nni, "report_intermediate_result", reported["intermediate"].append)
    monkeypatch.setattr(nni, "report_final_result", reported["final"].append)
    torch.manual_seed(0)
    evaluator = make_evaluator(image_dataset(32), image_dataset(16, seed=1), epochs=2, callbacks=[NniReporter()])
    run_search(MixedSpace(), evaluator, GumbelDNAS())
    assert len(reported["intermediate"]) == 2
    assert all(0.0 <= entry["default"] <= 1.0 for entry in reported["intermediate"])
    # NNI's own Classification evaluator (used here) adds a bare float of its own; ours is the dict.
    assert [entry for entry in reported["final"] if isinstance(entry, dict)] == reported["intermediate"][-1:]


def test_export_file_written(tmp_path):
    torch.manual_seed(0)
    evaluator = make_evaluator(image_dataset(32), image_dataset(16, seed=1), epochs=1)
    strategy = run_search(MixedSpace(), evaluator, GumbelDNAS(export_path=tmp_path / "arch.json"))
    assert json.loads((tmp_path / "arch.json").read_text()) == strategy.export()


class _MutableOpSpace(ModelSpace):
    def __init__(self):
        super().__init__()
        self.conv = MutableConv2d(1, 4, kernel_size=nni.choice("ks", [3, 5]), padding=2)
        self.choice = LayerChoice([nn.Identity(), nn.ReLU()], label="act")

    def forward(self, x):
        return self.choice(self.conv(x)).mean(dim=(2, 3))


def test_unsupported_mutable_is_named():
    with pytest.raises(TypeError, match=r"module `conv` of type MutableConv2d holds mutables \['ks'\]"):
        GumbelDNAS().mutate_model(_MutableOpSpace())


def test_arch_split_is_disjoint_and_seeded():
    from nni.nas.evaluator.pytorch import DataLoader

    loader = DataLoader(image_dataset(40), batch_size=8, shuffle=True)
    loaders = GumbelDNAS(arch_split=0.25, seed=3).train_dataloader(lambda: loader, lambda: None)
    w, a = loaders["train"].dataset.indices, loaders["arch"].dataset.indices
    assert len(a) == 10 and len(w) == 30 and not set(w) & set(a)
    assert a == GumbelDNAS(arch_split=0.25, seed=3).train_dataloader(lambda: loader, lambda: None)["arch"].dataset.indices
    explicit = GumbelDNAS(arch_split=[0, 1, 2]).train_dataloader(lambda: loader, lambda: None)
    assert explicit["arch"].dataset.indices == [0, 1, 2]
    val = GumbelDNAS(arch_split="val")
    assert val.train_dataloader(lambda: loader, lambda: "V")["arch"] == "V" and val.val_dataloader(None, None) is None


def test_registry():
    assert type(strategies.get("gumbel-dnas", warmup_epochs=2)) is GumbelDNAS
    assert strategies.get("gumbel-dnas", warmup_epochs=2).warmup_epochs == 2
    import nni.nas.strategy as nni_strategy

    for name, cls in [("darts", nni_strategy.DARTS), ("gumbel-darts", nni_strategy.GumbelDARTS),
                      ("proxyless", nni_strategy.Proxyless), ("random-oneshot", nni_strategy.RandomOneShot)]:
        assert type(strategies.get(name)) is cls
    with pytest.raises(ValueError, match="unknown search strategy 'enas'"):
        strategies.get("enas")


def test_runs_through_nas_experiment_on_the_sequential_engine():
    from nni.nas.experiment import NasExperiment

    torch.manual_seed(0)
    strategy = GumbelDNAS()
    experiment = NasExperiment(MixedSpace(), make_evaluator(image_dataset(32), image_dataset(16, seed=1), epochs=1), strategy)
    assert experiment.config.execution_engine.name == "sequential"
    experiment.run()
    assert experiment.export_top_models(formatter="dict") == [strategy.export()]
    # Stop it here: left to NNI's exit handler, it logs to streams pytest has closed by then.
    experiment.stop()


class _GradNorms(pl.Callback):
    def __init__(self):
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, module, optimizer):
        if getattr(optimizer, "is_arch_optimizer", False):
            return
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


def test_strategy_clips_weight_gradients():
    torch.manual_seed(0)
    norms = _GradNorms()
    evaluator = make_evaluator(image_dataset(32), image_dataset(16, seed=1), epochs=1, callbacks=[norms])
    run_search(MixedSpace(), evaluator, GumbelDNAS(gradient_clip_val=1e-3))
    assert norms.norms and max(norms.norms) <= 1e-3 * 1.001


def test_arch_split_keeps_a_part_smaller_than_a_batch():
    from nni.nas.evaluator.pytorch import DataLoader

    loader = DataLoader(image_dataset(10), batch_size=4, shuffle=True, drop_last=True)
    loaders = GumbelDNAS(arch_split=[0, 1, 2]).train_dataloader(lambda: loader, lambda: None)
    assert [len(b[0]) for b in loaders["arch"]] == [3]
    assert [len(b[0]) for b in loaders["train"]] == [4]  # 7 weight samples, drop_last kept

"""The Lightning module of a GumbelDNAS search: draws, architecture and weight steps, epoch hooks, checkpoints."""
from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any, Sequence

import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from nni.mutable import Sample
from torch.nn.parallel import DistributedDataParallel

from nni_covid3d.compat import DartsLightningModule
from nni_covid3d.training.checkpoint import plain
from nni_covid3d.training.resume import ResumeError, record_differences

from ..supermodules import Draw, GumbelSuperNetModule, gumbel_max_indices, hard_gumbel_draws, keep_batchnorm_stats
from .cost import FlopsTable, expected_size_mb
from .settings import SearchSettings

__all__ = ["GumbelDNASLightningModule"]

#: Draws of one step are seeded by (seed, epoch, batch, phase), phase < PHASES: architecture paths use
#: 0, 1, ..., the weight path drawn from the logits uses the last.
PHASES = 64
WEIGHT_PHASE = PHASES - 1


def _all_reduce_mean(tensors: list[torch.Tensor]) -> None:
    """Average ``tensors`` in place over DDP ranks (no-op without an initialised process group)."""
    if not tensors or not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for t in tensors:
        t.copy_(flat[offset: offset + t.numel()].view_as(t))
        offset += t.numel()


def _fp32(like: torch.Tensor) -> torch.autocast:
    """Autocast off on ``like``'s device: what runs inside stays fp32 under mixed precision."""
    return torch.autocast(like.device.type, enabled=False)


def check_ddp_allows_unused_parameters(model: nn.Module | None) -> None:
    """Refuse a DDP-wrapped ``model`` whose DDP expects a gradient for every parameter.

    A single-path step leaves the candidates it did not draw without gradient; DDP must be built
    with ``find_unused_parameters=True`` (Lightning: ``strategy="ddp_find_unused_parameters_true"``).
    """
    if isinstance(model, DistributedDataParallel) and not model.find_unused_parameters:
        raise RuntimeError(
            "GumbelDNAS trains one candidate per choice each step, so under DDP the candidates not drawn get no "
            "gradient: build the Trainer with strategy='ddp_find_unused_parameters_true' (or "
            "pytorch_lightning.strategies.DDPStrategy(find_unused_parameters=True))"
        )


class GumbelDNASLightningModule(DartsLightningModule):
    """Search logic of :class:`GumbelDNAS` (wraps the evaluator's LightningModule).

    ``batch`` in :meth:`training_step` is ``{"train": weight batch, "arch": architecture batch}``.
    Validation runs the current argmax architecture (the one that would be exported).

    Mixed precision (``Trainer(precision="bf16-mixed" | "16-mixed")``): the network runs under
    autocast, while the logits, the Gumbel noise, the softmax, the score-function surrogate and the
    cost penalties stay fp32, and the straight-through weight's gradient is summed in fp32
    (``supermodules._scale``). Both optimizers step through Lightning's precision plugin. Under
    16-mixed the architecture loss is scaled by the run's GradScaler before its gradient is taken
    and weight gradients are clipped after unscaling (:meth:`advance_optimization`); this is tested
    on the CPU with a float16 plugin, but not yet on a GPU.
    """

    def __init__(self, training_module: pl.LightningModule, settings: SearchSettings = SearchSettings()):
        super().__init__(training_module, arc_learning_rate=settings.arc_learning_rate,
                         gradient_clip_val=settings.gradient_clip_val, warmup_epochs=settings.warmup_epochs or 0)
        self.settings = settings
        self._flops: FlopsTable | None = None
        self._gumbel_modules: list[GumbelSuperNetModule] | None = None
        self.register_buffer("temperature", torch.tensor(float(settings.temperature.init)))
        self._temperature_value: float | None = None  # the buffer's value on the host (:meth:`tau`)
        # Moving average of the architecture loss: the score-function baseline when one path is drawn.
        self.register_buffer("loss_baseline", torch.tensor(float("nan")))
        #: Callbacks the search adds to the Trainer when the fit starts (:meth:`configure_callbacks`).
        self.search_callbacks: list[pl.Callback] = []

    # ----------------------------------------------------------------- choices and draws
    def gumbel_modules(self) -> list[GumbelSuperNetModule]:
        # Found once: the supernet's structure is fixed by now, and walking every module several
        # times a step cost ~7 ms of Python per step (tiny input, CPU): launch-bound GPU steps feel it.
        if self._gumbel_modules is None:
            self._gumbel_modules = [m for m in self.supernet_modules() if isinstance(m, GumbelSuperNetModule)]
        return self._gumbel_modules

    def label_alphas(self) -> dict[str, nn.Parameter]:
        """``{label: alpha}`` over the whole supernet, sorted by label (the draw order)."""
        alphas: dict[str, nn.Parameter] = {}
        for module in self.gumbel_modules():
            alphas.update(module.label_alphas())
        return dict(sorted(alphas.items()))

    def tau(self) -> float:
        """The temperature as a Python float, kept on the host when an epoch sets it (or read from its
        buffer once) rather than read at every draw: on a GPU each read waits for all queued work."""
        if self._temperature_value is None:
            self._temperature_value = float(self.temperature)
        return self._temperature_value

    def _step_generator(self, phase: int) -> torch.Generator:
        """A generator seeded by (seed, epoch, batch, phase) only: all DDP ranks draw the same path,
        and a resumed run draws what the uninterrupted run would have."""
        step_seed = ((self.settings.seed * 1_000_003 + self.trainer.current_epoch) * 1_000_003 + self._batch_idx) * PHASES + phase
        return torch.Generator().manual_seed(step_seed % (2**63))

    def draw(self, phase: int) -> dict[str, Draw]:
        """Draw every label with straight-through Gumbel noise (the draw carries d loss / d alpha)."""
        draws = hard_gumbel_draws(self.label_alphas(), self.tau(), self._step_generator(phase))
        return self._use(draws)

    def sample(self, phase: int) -> dict[str, Draw]:
        """Draw every label from ``softmax(alpha / temperature)`` (Gumbel-max), without gradient."""
        return self._use(self.sample_paths([phase])[0])

    def sample_paths(self, phases: Sequence[int]) -> list[dict[str, Draw]]:
        """:meth:`sample`'s draws for each of ``phases``, not yet used. The logits reach the host in one
        transfer for all phases: on a GPU, one wait per architecture step instead of one between the
        forward passes of its paths."""
        alphas = self.label_alphas()
        flat = torch.cat([alpha.detach().float().reshape(-1) for alpha in alphas.values()]).cpu()
        on_host = dict(zip(alphas, flat.split([alpha.numel() for alpha in alphas.values()])))
        return [{label: Draw(index) for label, index in
                 gumbel_max_indices(on_host, self.tau(), self._step_generator(phase)).items()} for phase in phases]

    def one_label_apart(self) -> list[dict[str, Draw]]:
        """Two paths that differ at one label (``arch_credit="choice"``): a path drawn as :meth:`sample`
        does, and a copy whose credited label takes another candidate, drawn from that label's
        distribution without the first one's candidate. Labels are credited in turn (a seeded order that
        changes every cycle over the labels), so each gets its share of the comparisons."""
        first = self.sample_paths([0])[0]
        labels = [label for label, alpha in self.label_alphas().items() if alpha.numel() > 1]
        if not labels:
            return [first, dict(first)]
        step = self.trainer.current_epoch * max(1, int(self.trainer.num_training_batches)) + self._batch_idx
        cycle, offset = divmod(step, len(labels))
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(
            (self.settings.seed * 1_000_003 + cycle) % (2**63)))
        label = labels[int(order[offset])]
        probs = F.softmax(self.label_alphas()[label].detach().float().cpu() / self.tau(), -1)
        probs[first[label].index] = 0.0
        if float(probs.sum()) <= 0.0:  # every other candidate has underflowed: take one uniformly
            probs = torch.ones_like(probs)
            probs[first[label].index] = 0.0
        other = int(torch.multinomial(probs, 1, generator=self._step_generator(1)).item())
        return [first, {**first, label: Draw(other)}]

    def fair_draws(self) -> dict[str, Draw]:
        """Every label's candidates in turn, in a seeded order (no gradient).

        Weight step ``t`` of the fit (counted over epochs) takes position ``t mod K`` of a permutation
        of the K candidates that changes every K steps: over any K consecutive steps of one cycle each
        candidate is trained exactly once, whatever the logits say (FairNAS-style strict fairness).
        """
        step = self.trainer.current_epoch * max(1, int(self.trainer.num_training_batches)) + self._batch_idx
        draws = {}
        for position, (label, alpha) in enumerate(self.label_alphas().items()):
            k = alpha.numel()
            cycle, offset = divmod(step, k)
            cycle_seed = ((self.settings.seed * 1_000_003 + cycle) * 1_000_003 + position) % (2**63)
            order = torch.randperm(k, generator=torch.Generator().manual_seed(cycle_seed))
            draws[label] = Draw(order.tolist()[offset])
        return self._use(draws)

    def _use(self, draws: dict[str, Draw]) -> dict[str, Draw]:
        self._set_draws(draws)
        self._last_draws = draws
        return draws

    def argmax_draws(self) -> dict[str, Draw]:
        draws = {label: Draw(int(torch.argmax(alpha.detach()).item())) for label, alpha in self.label_alphas().items()}
        return self._use(draws)

    def _set_draws(self, draws: dict[str, Draw]) -> None:
        for module in self.gumbel_modules():
            module.set_draws(draws)

    def resample(self) -> Sample:
        """NNI's API (used by DARTS-style callers): a fresh draw; returns the sample."""
        self._batch_idx = getattr(self, "_batch_idx", 0)
        draws = self.draw(phase=0)
        return self._sample_of(draws)

    def _sample_of(self, draws: dict[str, Draw]) -> Sample:
        values: dict[str, list[Any]] = {}
        for module in self.gumbel_modules():
            values.update(module.label_values())
        return {label: values[label][d.index] for label, d in draws.items()}

    # ----------------------------------------------------------------- resource constraint
    def expected_size_mb(self) -> tuple[torch.Tensor, float]:
        """(expected parameter size in MB under softmax(alpha), differentiable; size of the argmax subnet)."""
        return expected_size_mb(self.model, self.gumbel_modules(), self.label_alphas())

    def expected_flops(self) -> tuple[torch.Tensor, float]:
        """(expected FLOPs per sample under softmax(alpha), differentiable; FLOPs of the argmax subnet)."""
        if self._flops is None:
            raise RuntimeError("FLOPs are measured at the first architecture step")
        return self._flops.expected(self.label_alphas())

    # ----------------------------------------------------------------- optimisation
    def configure_architecture_optimizers(self):
        params = self.arch_parameters()
        if not params:
            raise ValueError("No architecture parameters found: the model space has no choice to search.")
        return torch.optim.Adam(params, self.arc_learning_rate, betas=self.settings.arc_betas, weight_decay=self.settings.arc_weight_decay)

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.label_alphas().values())

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        self._batch_idx = batch_idx
        searching = self.trainer.current_epoch >= self.warmup_epochs
        if searching:
            self.architecture_step(batch["arch"], batch_idx)
        # Weight step on a fresh path; the weight optimiser never holds the logits.
        if searching and self.settings.weight_sampling == "gumbel":
            self.sample(phase=WEIGHT_PHASE)
        else:
            self.fair_draws()
        output = self.training_module.training_step(batch["train"], 2 * batch_idx + 1)
        self.advance_optimization(self._loss(output), batch_idx, self.gradient_clip_val)
        self.advance_lr_schedulers(batch_idx)
        return output

    def architecture_step(self, batch: Any, batch_idx: int) -> None:
        """One update of the logits on a held-out batch.

        The gradient comes from :meth:`score_function_loss` or :meth:`straight_through_loss` (plus the
        cost penalties), averaged over ranks by hand since this bypasses DDP's reducer. A method of its
        own so that its graph is gone before the weight step allocates its own.
        """
        arc_optim = self.architecture_optimizers()
        if self.settings.arch_estimator == "straight_through":
            arch_loss = self.straight_through_loss(batch, batch_idx)
        else:
            arch_loss = self.score_function_loss(batch, batch_idx)
        with _fp32(arch_loss):
            arch_loss = self._add_penalties(arch_loss.float())
        scaler = self._grad_scaler()
        alphas = self.arch_parameters()
        # 16-mixed: the loss is scaled like the weight step's; the optimizer step unscales the gradients
        # and skips the update when they overflowed (Lightning's precision plugin, GradScaler).
        grads = torch.autograd.grad(scaler.scale(arch_loss) if scaler is not None else arch_loss, alphas,
                                    allow_unused=True)
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
        _all_reduce_mean(grads)
        arc_optim.zero_grad()
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        arc_optim.step()

    def _add_penalties(self, arch_loss: torch.Tensor) -> torch.Tensor:
        """``arch_loss`` plus the FLOPs and size budget penalties (those that are set)."""
        if self.settings.flops_budget is not None:
            expected_flops, _ = self.expected_flops()
            penalty = self.settings.penalty_weight * F.relu(expected_flops / self.settings.flops_budget - 1.0)
            self.log("arch/flops_penalty", penalty.detach())
            arch_loss = arch_loss + penalty
        if self.settings.size_budget_mb is not None:
            expected, _ = self.expected_size_mb()
            penalty = self.settings.penalty_weight * F.relu(expected / self.settings.size_budget_mb - 1.0)
            self.log("arch/size_penalty", penalty.detach())
            arch_loss = arch_loss + penalty
        return arch_loss

    def _grad_scaler(self) -> torch.amp.GradScaler | None:
        """The loss scaler of a 16-mixed run (``None`` under 32-true and bf16-mixed)."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def advance_optimization(self, loss: Any, batch_idx: int, gradient_clip_val: float | None = None,
                             gradient_clip_algorithm: str | None = None) -> None:
        """NNI's weight step; under 16-mixed the gradients are clipped after they are unscaled.

        NNI clips between backward and the optimizer step, where 16-mixed gradients are still
        multiplied by the loss scale; here the clipping moves to :meth:`on_before_optimizer_step`,
        which Lightning's precision plugin calls after unscaling.
        """
        if self._grad_scaler() is None or not gradient_clip_val:
            return super().advance_optimization(loss, batch_idx, gradient_clip_val, gradient_clip_algorithm)
        self._deferred_clip = (gradient_clip_val, gradient_clip_algorithm)
        try:
            super().advance_optimization(loss, batch_idx, None, None)
        finally:
            self._deferred_clip = None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        deferred = getattr(self, "_deferred_clip", None)
        if deferred is not None and not getattr(optimizer, "is_arch_optimizer", False):
            self.clip_gradients(optimizer, *deferred)

    def _arch_forward(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The architecture batch's loss through the current path (FLOPs measured on the first call)."""
        def forward() -> Any:
            return self.training_module.training_step(batch, 2 * batch_idx)

        if self.settings.flops_budget is not None and self._flops is None:
            self._flops, output = FlopsTable.measure(self.model, self.gumbel_modules(), forward, self._last_draws)
            return self._loss(output)
        return self._loss(forward())

    def score_function_loss(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Surrogate whose gradient is the score-function (REINFORCE) estimate of d E[loss] / d alpha.

        ``arch_samples`` paths are drawn from ``softmax(alpha / temperature)`` and run forward only
        (no activations kept, BatchNorm statistics untouched) on the same batch. Each path's log
        probability is weighted by its loss minus the mean loss of the other paths (leave-one-out
        baseline; with one path, a moving average of past losses): paths that do better than the
        others on the same batch gain probability. Losses are averaged over DDP ranks first.
        """
        paths = (self.one_label_apart() if self.settings.arch_credit == "choice"
                 else self.sample_paths(range(self.settings.arch_samples)))
        losses = []
        with torch.no_grad(), keep_batchnorm_stats(self.model):
            for path in paths:
                self._use(path)
                losses.append(self._arch_forward(batch, batch_idx).detach().float())
        loss = torch.stack(losses)
        _all_reduce_mean([loss])
        if len(losses) > 1:
            advantage = loss - (loss.sum() - loss) / (len(losses) - 1)
        else:
            # torch.where, not `if`: the choice stays on the device (no wait for the GPU)
            baseline = torch.where(torch.isfinite(self.loss_baseline), self.loss_baseline, loss[0])
            advantage = loss - baseline
            self.loss_baseline.copy_(0.9 * baseline + 0.1 * loss[0])
        tau = self.tau()
        alphas = self.label_alphas()
        surrogate = torch.zeros((), device=loss.device)
        credited = list(alphas)
        if self.settings.arch_credit == "choice":
            # The labels both paths share contribute (adv_0 + adv_1) * d log p = 0: left out, not rounded.
            credited = [label for label in alphas if paths[0][label].index != paths[1][label].index]
        with _fp32(loss):  # the logits' log-probabilities in fp32 under mixed precision
            for path, adv in zip(paths, advantage):
                log_prob = sum((F.log_softmax(alphas[label].float() / tau, -1)[path[label].index]
                                for label in credited), torch.zeros((), device=loss.device))
                surrogate = surrogate + adv * log_prob
        self.log("arch/loss", loss.mean())
        return surrogate / len(paths)

    def straight_through_loss(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The loss of one path drawn with straight-through Gumbel-Softmax (its gradient reaches alpha
        through the drawn candidate's output scale only)."""
        self.draw(phase=0)
        loss = self._arch_forward(batch, batch_idx)
        self.log("arch/loss", loss.detach())
        return loss

    @staticmethod
    def _loss(output: Any) -> torch.Tensor:
        return output["loss"] if isinstance(output, dict) else output

    def validation_step(self, batch: Any, batch_idx: int):
        self.argmax_draws()
        return self.training_module.validation_step(batch, batch_idx)

    # ----------------------------------------------------------------- fit and epoch hooks
    def configure_callbacks(self) -> list[pl.Callback]:
        """Lightning's hook for a module's own callbacks: the search's (set by :class:`GumbelDNAS`)."""
        return list(self.search_callbacks)

    def on_fit_start(self):
        check_ddp_allows_unused_parameters(self.trainer.strategy.model)
        self.warmup_epochs = self.settings.warmup_for(self.trainer.max_epochs)
        return super().on_fit_start()

    def on_train_epoch_start(self):
        tau = self.settings.temperature.at(self.trainer.current_epoch, self.warmup_epochs, self.trainer.max_epochs)
        self.temperature.fill_(tau)
        self._temperature_value = float(torch.tensor(tau, dtype=self.temperature.dtype))  # the buffer's value
        return super().on_train_epoch_start()

    def on_train_epoch_end(self):
        metrics: dict[str, float] = {"gumbel/temperature": self.tau()}
        for label, alpha in self.label_alphas().items():
            probs = F.softmax(alpha.detach().float(), -1)
            metrics[f"entropy/{label}"] = float(-(probs * probs.clamp_min(1e-12).log()).sum())
        self.log_probs(self.export_probs())  # NNI's: prob/<label>/<value>
        expected, argmax_size = self.expected_size_mb()
        metrics["arch/expected_size_mb"] = float(expected.detach())
        metrics["arch/argmax_size_mb"] = argmax_size
        if self._flops is not None:
            expected_flops, argmax_flops = self.expected_flops()
            metrics["arch/expected_gflops"] = float(expected_flops.detach()) / 1e9
            metrics["arch/argmax_gflops"] = argmax_flops / 1e9
        self.log_dict(metrics)
        return super().on_train_epoch_end()

    def on_fit_end(self):
        if self.trainer.is_global_zero and self.settings.export_path is not None:
            self.settings.export_path.parent.mkdir(parents=True, exist_ok=True)
            self.settings.export_path.write_text(json.dumps(self.export(), indent=2, default=str) + "\n")
        return self.training_module.on_fit_end()

    # ----------------------------------------------------------------- checkpoints
    def _settings_record(self) -> dict[str, Any]:
        """The settings a resumed search must share with its checkpoint (the export path may change)."""
        # The default credit is left out, so that checkpoints written before the option still resume.
        return plain({key: value for key, value in asdict(self.settings).items()
                      if key != "export_path" and not (key == "arch_credit" and value == "path")})

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Logits, temperature and loss baseline (buffers) and both optimisers are saved by Lightning;
        # randomness needs no state: every epoch is seeded from (seed, epoch) (ResumableRun).
        checkpoint["gumbel_dnas"] = {"settings": self._settings_record()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._temperature_value = None  # the buffer is about to be restored
        stored = checkpoint.get("gumbel_dnas", {}).get("settings")
        differences = record_differences(stored, self._settings_record()) if stored is not None else []
        if differences:
            raise ResumeError(f"cannot resume from {self.trainer.ckpt_path}: the search settings differ: "
                              + "; ".join(differences))

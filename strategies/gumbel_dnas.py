"""GumbelDNAS: single-path one-shot NAS with Gumbel sampling for NNI 3.0.

Used exactly like ``nni.nas.strategy.DARTS``::

    NasExperiment(space, evaluator, GumbelDNAS(size_budget_mb=10.0)).run()

Every step runs single paths only (one candidate per label, shared by all modules carrying the label
and by all DDP ranks), so memory is one subnet's. Updates alternate: the logits on a held-out part
of the training data (architecture step: by default two paths drawn from ``softmax(alpha / tau)``
run forward and are compared by their losses, a score-function estimate), the weights on the rest
(weight step: every candidate in turn, so the candidates compared were trained alike). A warm-up
trains the weights alone. The export is the argmax of the logits.

Each of these choices was kept because the planted-problem suite (``strategies/planted.py``,
``benchmarks/bench_planted.py``) showed it finds the known best architecture more often.
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import nni.nas.strategy  # noqa: F401  (import first: importing the one-shot module first breaks NNI's strategy package)
from nni.mutable import Sample
from nni.nas.evaluator.pytorch.lightning import Lightning, SupervisedLearningModule
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.oneshot.pytorch.differentiable import DartsLightningModule
from nni.nas.oneshot.pytorch.strategy import DARTS, MutationHook
from nni.nas.evaluator.pytorch import DataLoader as TracedDataLoader
from torch.utils.data import DataLoader, RandomSampler, Subset

from .supermodules import (
    BYTES_PER_MB,
    Draw,
    GumbelInputChoice,
    GumbelLayerChoice,
    GumbelRepeat,
    GumbelSuperNetModule,
    check_categorical,
    gumbel_max_indices,
    hard_gumbel_draws,
    keep_batchnorm_stats,
    parameter_bytes,
    reject_unsupported,
)

_logger = logging.getLogger(__name__)

__all__ = ["GumbelDNAS", "GumbelDNASLightningModule", "TemperatureSchedule", "patient_holdout_indices", "split_train_loader"]

ArchSplit = float | Sequence[int] | Literal["val"]
ArchEstimator = Literal["score_function", "straight_through"]
WeightSampling = Literal["fair", "gumbel"]


@dataclass(frozen=True)
class TemperatureSchedule:
    """Gumbel-Softmax temperature per epoch, annealed from ``init`` to ``final`` over the search epochs.

    ``mode``: ``"exponential"`` (geometric: ``init * (final / init) ** progress``), ``"linear"`` or
    ``"constant"``. Warm-up epochs stay at ``init``; ``progress`` runs 0 -> 1 from the first search
    epoch to the last.
    """

    init: float = 5.0
    final: float = 0.5
    mode: Literal["exponential", "linear", "constant"] = "exponential"

    def __post_init__(self) -> None:
        if not self.init >= self.final > 0:
            raise ValueError(f"temperature must satisfy init >= final > 0, got init={self.init}, final={self.final}")
        if self.mode not in ("exponential", "linear", "constant"):
            raise ValueError(f"temperature mode must be exponential, linear or constant, got {self.mode!r}")

    @classmethod
    def parse(cls, value: TemperatureSchedule | float | tuple[float, float] | dict) -> TemperatureSchedule:
        if isinstance(value, TemperatureSchedule):
            return value
        if isinstance(value, (int, float)):
            return cls(float(value), float(value), "constant")
        if isinstance(value, dict):
            return cls(**value)
        if isinstance(value, (tuple, list)) and len(value) == 2:
            return cls(float(value[0]), float(value[1]))
        raise ValueError(f"invalid temperature {value!r}: use a float, (init, final), a dict or a TemperatureSchedule")

    def at(self, epoch: int, warmup_epochs: int, max_epochs: int | None) -> float:
        if self.mode == "constant" or self.init == self.final:
            return self.init
        search_epochs = max(1, (max_epochs or 1) - warmup_epochs)
        progress = min(1.0, max(0.0, (epoch - warmup_epochs) / max(1, search_epochs - 1)))
        if self.mode == "linear":
            return self.init + (self.final - self.init) * progress
        return self.init * (self.final / self.init) ** progress


def split_train_loader(loader: DataLoader, arch_indices: Sequence[int]) -> tuple[DataLoader, DataLoader]:
    """Split ``loader``'s dataset into (weight loader, arch loader) by dataset index.

    Both loaders copy ``loader``'s batch size, shuffling, workers and collate function.
    """
    if not isinstance(loader, DataLoader) or loader.batch_size is None:
        raise TypeError(
            "GumbelDNAS splits the training DataLoader into weight and architecture parts; it needs a "
            f"torch DataLoader with a batch_size, got {type(loader).__name__}. Pass arch_split='val' to use "
            "the evaluator's validation loader for architecture steps instead."
        )
    n = len(loader.dataset)  # type: ignore[arg-type]
    arch = sorted({int(i) for i in arch_indices})
    if not arch or arch[0] < 0 or arch[-1] >= n:
        raise ValueError(f"architecture indices must be a non-empty subset of range({n})")
    arch_set = set(arch)
    weight = [i for i in range(n) if i not in arch_set]
    if not weight:
        raise ValueError("the architecture part takes every training sample; nothing left for the weights")
    shuffle = isinstance(loader.sampler, RandomSampler)

    def make(indices: list[int]) -> DataLoader:
        return TracedDataLoader(
            Subset(loader.dataset, indices), batch_size=loader.batch_size, shuffle=shuffle,
            num_workers=loader.num_workers, collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
            # A part smaller than one batch keeps its partial batch rather than yielding nothing.
            drop_last=loader.drop_last and len(indices) > loader.batch_size, worker_init_fn=loader.worker_init_fn, generator=loader.generator,
            persistent_workers=loader.persistent_workers if loader.num_workers > 0 else False,
        )

    return make(weight), make(arch)


def patient_holdout_indices(groups: Sequence[str], fraction: float, seed: int = 0) -> list[int]:
    """Dataset indices of a seeded ``fraction`` of the groups (e.g. patient ids, one per sample).

    Use as ``GumbelDNAS(arch_split=...)`` so architecture steps see whole held-out patients.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    unique = sorted(set(groups))
    if len(unique) < 2:
        raise ValueError(f"need at least two patients to hold some out for architecture steps, got {len(unique)}")
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = min(len(unique) - 1, max(1, round(fraction * len(unique))))
    held = {unique[i] for i in order[:n_held]}
    return [i for i, group in enumerate(groups) if group in held]


def _in_nni_trial() -> bool:
    import nni

    return nni.get_trial_id() != "STANDALONE" or nni.get_experiment_id() != "STANDALONE"


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


def _numpy_state_to_tensors(state: tuple) -> tuple:
    # Lightning loads checkpoints with weights_only=True, which refuses numpy arrays.
    name, keys, pos, has_gauss, cached = state
    return (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_tensors(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


class GumbelDNASLightningModule(DartsLightningModule):
    """Search logic of :class:`GumbelDNAS` (wraps the evaluator's LightningModule).

    ``batch`` in :meth:`training_step` is ``{"train": weight batch, "arch": architecture batch}``.
    Validation runs the current argmax architecture (the one that would be exported).
    """

    def __init__(
        self,
        training_module: pl.LightningModule,
        *,
        arc_learning_rate: float = 0.03,
        arc_betas: tuple[float, float] = (0.5, 0.999),
        arc_weight_decay: float = 1e-3,
        gradient_clip_val: float | None = 5.0,
        warmup_epochs: int | None = None,
        warmup_fraction: float = 0.25,
        temperature: TemperatureSchedule = TemperatureSchedule(),
        arch_estimator: ArchEstimator = "score_function",
        arch_samples: int = 2,
        weight_sampling: WeightSampling = "fair",
        size_budget_mb: float | None = None,
        flops_budget: float | None = None,
        penalty_weight: float = 1.0,
        seed: int = 0,
        export_path: str | Path | None = None,
        report_metric: str = "val_acc",
    ):
        super().__init__(training_module, arc_learning_rate=arc_learning_rate,
                         gradient_clip_val=gradient_clip_val, warmup_epochs=warmup_epochs or 0)
        #: ``None``: resolved from ``warmup_fraction`` of the trainer's ``max_epochs`` at fit start.
        self.requested_warmup_epochs = warmup_epochs
        self.warmup_fraction = warmup_fraction
        self.arch_estimator = arch_estimator
        self.arch_samples = arch_samples
        self.weight_sampling = weight_sampling
        self.arc_betas = tuple(arc_betas)
        self.arc_weight_decay = arc_weight_decay
        self.temperature_schedule = temperature
        self.size_budget_mb = size_budget_mb
        self.flops_budget = flops_budget
        self.penalty_weight = penalty_weight
        self.seed = seed
        self.export_path = Path(export_path) if export_path is not None else None
        self.report_metric = report_metric
        self._flops: tuple[float, list[dict[str, list[float]]]] | None = None  # (base, per-module costs)
        self._gumbel_modules: list[GumbelSuperNetModule] | None = None
        self.register_buffer("temperature", torch.tensor(float(temperature.init)))
        # Moving average of the architecture loss: the score-function baseline when one path is drawn.
        self.register_buffer("loss_baseline", torch.tensor(float("nan")))
        self._last_reported: float | None = None

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

    def _step_generator(self, phase: int) -> torch.Generator:
        """A generator seeded by (seed, epoch, batch, phase) only: all DDP ranks draw the same path,
        and a resumed run draws what the uninterrupted run would have."""
        step_seed = ((self.seed * 1_000_003 + self.trainer.current_epoch) * 1_000_003 + self._batch_idx) * 64 + phase
        return torch.Generator().manual_seed(step_seed % (2**63))

    def draw(self, phase: int) -> dict[str, Draw]:
        """Draw every label with straight-through Gumbel noise (the draw carries d loss / d alpha)."""
        draws = hard_gumbel_draws(self.label_alphas(), float(self.temperature), self._step_generator(phase))
        return self._use(draws)

    def sample(self, phase: int) -> dict[str, Draw]:
        """Draw every label from ``softmax(alpha / temperature)`` (Gumbel-max), without gradient."""
        indices = gumbel_max_indices(self.label_alphas(), float(self.temperature), self._step_generator(phase))
        return self._use({label: Draw(index) for label, index in indices.items()})

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
            cycle_seed = ((self.seed * 1_000_003 + cycle) * 1_000_003 + position) % (2**63)
            order = torch.randperm(k, generator=torch.Generator().manual_seed(cycle_seed))
            draws[label] = Draw(int(order[offset]))
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
        model = self.model
        exclude: set[int] = set()
        for module in self.gumbel_modules():
            exclude.update(id(p) for p in module.parameters())
        base = parameter_bytes(model, exclude) / BYTES_PER_MB
        alphas = self.label_alphas()
        expected = torch.zeros((), device=next(iter(alphas.values())).device)
        argmax_size = base
        for module in self.gumbel_modules():
            for label, costs in module.candidate_costs().items():
                cost = torch.tensor(costs, device=expected.device)
                expected = expected + (F.softmax(alphas[label], -1) * cost).sum()
                argmax_size += costs[int(torch.argmax(alphas[label].detach()).item())]
        return expected + base, argmax_size

    def _measure_flops(self, run_forward: Callable[[], Any]) -> None:
        """Per-candidate FLOPs (per sample) from the inputs of one forward, measured once per fit.

        ``base`` is the FLOPs outside the choices: the whole drawn path minus its drawn candidates.
        """
        from .supermodules import count_flops

        modules = self.gumbel_modules()
        captured: list[tuple] = []
        hook = self.model.register_forward_pre_hook(lambda m, args: captured.append(args) if not captured else None)
        for module in modules:
            module.capture_input = True
        try:
            output = run_forward()
        finally:
            hook.remove()
            for module in modules:
                module.capture_input = False
        was_training = self.model.training
        self.model.eval()  # batch-1 counting: no BatchNorm statistics updates
        try:
            costs = [module.candidate_flops() for module in modules]
            first = tuple(a[:1] if isinstance(a, torch.Tensor) else a for a in captured[0])
            total = count_flops(self.model, *first)
        finally:
            self.model.train(was_training)
        drawn = 0.0
        for module, module_costs in zip(modules, costs):
            for label, values in module_costs.items():
                drawn += values[self._last_draws[label].index]
        self._flops = (total - drawn, costs)
        return output

    def expected_flops(self) -> tuple[torch.Tensor, float]:
        """(expected FLOPs per sample under softmax(alpha), differentiable; FLOPs of the argmax subnet)."""
        if self._flops is None:
            raise RuntimeError("FLOPs are measured at the first architecture step")
        base, costs = self._flops
        alphas = self.label_alphas()
        expected = torch.zeros((), device=next(iter(alphas.values())).device)
        argmax_flops = base
        for module_costs in costs:
            for label, values in module_costs.items():
                expected = expected + (F.softmax(alphas[label], -1) * torch.tensor(values, device=expected.device)).sum()
                argmax_flops += values[int(torch.argmax(alphas[label].detach()).item())]
        return expected + base, argmax_flops

    # ----------------------------------------------------------------- optimisation
    def configure_architecture_optimizers(self):
        params = self.arch_parameters()
        if not params:
            raise ValueError("No architecture parameters found: the model space has no choice to search.")
        return torch.optim.Adam(params, self.arc_learning_rate, betas=self.arc_betas, weight_decay=self.arc_weight_decay)

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.label_alphas().values())

    def training_step(self, batch: dict[str, Any], batch_idx: int):
        self._batch_idx = batch_idx
        searching = self.trainer.current_epoch >= self.warmup_epochs
        if searching:
            self.architecture_step(batch["arch"], batch_idx)
        # Weight step on a fresh path; the weight optimiser never holds the logits.
        if searching and self.weight_sampling == "gumbel":
            self.sample(phase=63)
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
        if self.arch_estimator == "straight_through":
            arch_loss = self.straight_through_loss(batch, batch_idx)
        else:
            arch_loss = self.score_function_loss(batch, batch_idx)
        if self.flops_budget is not None:
            expected_flops, _ = self.expected_flops()
            penalty = self.penalty_weight * F.relu(expected_flops / self.flops_budget - 1.0)
            self.log("arch/flops_penalty", penalty.detach())
            arch_loss = arch_loss + penalty
        if self.size_budget_mb is not None:
            expected, _ = self.expected_size_mb()
            penalty = self.penalty_weight * F.relu(expected / self.size_budget_mb - 1.0)
            self.log("arch/size_penalty", penalty.detach())
            arch_loss = arch_loss + penalty
        alphas = self.arch_parameters()
        grads = torch.autograd.grad(arch_loss, alphas, allow_unused=True)
        grads = [torch.zeros_like(a) if g is None else g for a, g in zip(alphas, grads)]
        _all_reduce_mean(grads)
        arc_optim.zero_grad()
        for alpha, grad in zip(alphas, grads):
            alpha.grad = grad
        arc_optim.step()

    def _arch_forward(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The architecture batch's loss through the current path (FLOPs measured on the first call)."""
        def forward() -> Any:
            return self.training_module.training_step(batch, 2 * batch_idx)

        if self.flops_budget is not None and self._flops is None:
            return self._loss(self._measure_flops(forward))
        return self._loss(forward())

    def score_function_loss(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """Surrogate whose gradient is the score-function (REINFORCE) estimate of d E[loss] / d alpha.

        ``arch_samples`` paths are drawn from ``softmax(alpha / temperature)`` and run forward only
        (no activations kept, BatchNorm statistics untouched) on the same batch. Each path's log
        probability is weighted by its loss minus the mean loss of the other paths (leave-one-out
        baseline; with one path, a moving average of past losses): paths that do better than the
        others on the same batch gain probability. Losses are averaged over DDP ranks first.
        """
        paths, losses = [], []
        with torch.no_grad(), keep_batchnorm_stats(self.model):
            for phase in range(self.arch_samples):
                paths.append(self.sample(phase))
                losses.append(self._arch_forward(batch, batch_idx).detach().float())
        loss = torch.stack(losses)
        _all_reduce_mean([loss])
        if len(losses) > 1:
            advantage = loss - (loss.sum() - loss) / (len(losses) - 1)
        else:
            baseline = self.loss_baseline if torch.isfinite(self.loss_baseline) else loss[0]
            advantage = loss - baseline
            self.loss_baseline.copy_(0.9 * baseline + 0.1 * loss[0])
        tau = float(self.temperature)
        alphas = self.label_alphas()
        surrogate = torch.zeros((), device=loss.device)
        for path, adv in zip(paths, advantage):
            log_prob = sum(F.log_softmax(alphas[label] / tau, -1)[draw.index] for label, draw in path.items())
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

    # ----------------------------------------------------------------- epoch hooks
    def on_fit_start(self):
        if self.requested_warmup_epochs is None:
            max_epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 0
            self.warmup_epochs = int(round(self.warmup_fraction * max_epochs))
        return super().on_fit_start()

    def on_train_epoch_start(self):
        tau = self.temperature_schedule.at(self.trainer.current_epoch, self.warmup_epochs, self.trainer.max_epochs)
        self.temperature.fill_(tau)
        return super().on_train_epoch_start()

    def on_train_epoch_end(self):
        metrics: dict[str, float] = {"gumbel/temperature": float(self.temperature)}
        for label, alpha in self.label_alphas().items():
            probs = F.softmax(alpha.detach().float(), -1)
            metrics[f"entropy/{label}"] = float(-(probs * probs.clamp_min(1e-12).log()).sum())
        for label, dist_ in self.export_probs().items():
            for value, p in dist_.items():
                metrics[f"prob/{label}/{value}"] = float(p)
        expected, argmax_size = self.expected_size_mb()
        metrics["arch/expected_size_mb"] = float(expected.detach())
        metrics["arch/argmax_size_mb"] = argmax_size
        if self._flops is not None:
            expected_flops, argmax_flops = self.expected_flops()
            metrics["arch/expected_gflops"] = float(expected_flops.detach()) / 1e9
            metrics["arch/argmax_gflops"] = argmax_flops / 1e9
        self.log_dict(metrics)
        return super().on_train_epoch_end()

    def on_validation_epoch_end(self):
        if self.trainer.sanity_checking:
            return
        value = self.trainer.callback_metrics.get(self.report_metric)
        if value is None:
            return
        self._last_reported = float(value)
        if _in_nni_trial() and self.trainer.is_global_zero:
            import nni

            nni.report_intermediate_result(self._last_reported)

    def on_fit_end(self):
        reported = False
        if self.trainer.is_global_zero:
            if self._last_reported is not None and _in_nni_trial():
                import nni

                nni.report_final_result(self._last_reported)
                reported = True
            if self.export_path is not None:
                self.export_path.parent.mkdir(parents=True, exist_ok=True)
                self.export_path.write_text(json.dumps(self.export(), indent=2, default=str) + "\n")
        # The evaluator's module may report a final result of its own in on_fit_end (NNI's
        # SupervisedLearningModule does nothing else there): one final result per trial.
        if reported or isinstance(self.training_module, SupervisedLearningModule):
            return None
        return self.training_module.on_fit_end()

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Logits, temperature (buffer) and both optimisers are saved by Lightning; add the RNGs so a
        # resumed run shuffles and initialises as the uninterrupted one would have.
        checkpoint["gumbel_dnas"] = {
            "seed": self.seed,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_state_to_tensors(np.random.get_state()),
            "python_rng": random.getstate(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("gumbel_dnas")
        if state is None:
            return
        self.seed = state["seed"]
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(_numpy_state_from_tensors(state["numpy_rng"]))
        random.setstate(state["python_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


class GumbelDNAS(DARTS):
    """Single-path NAS with Gumbel sampling of the logits (an NNI one-shot strategy).

    Supported mutables: ``LayerChoice``, ``InputChoice`` (``n_chosen=1``) and ``Repeat`` with a
    categorical depth; anything else raises a ``TypeError`` naming the module or label.

    Parameters
    ----------
    arc_learning_rate, arc_betas, arc_weight_decay
        Adam for the architecture logits (defaults 0.03, (0.5, 0.999), 1e-3; the learning rate chosen
        on the planted problems: NNI's DARTS default of 3e-4 suits its full-gradient estimator).
    gradient_clip_val
        Weight-gradient norm clip, applied by the strategy (Lightning's trainer clipping does not
        act in one-shot). ``None`` disables it.
    warmup_epochs, warmup_fraction
        Epochs of weight steps only, every candidate trained in turn (see ``weight_sampling``); when
        ``warmup_epochs`` is ``None`` (default), ``warmup_fraction`` (default 0.25) of ``max_epochs``.
    temperature
        A :class:`TemperatureSchedule`, a float (constant), ``(init, final)`` (exponential) or a dict.
        Paths are drawn from ``softmax(alpha / temperature)``: a high temperature explores.
    arch_estimator, arch_samples
        How the logits learn. ``"score_function"`` (default): ``arch_samples`` paths (default 2) run
        forward only on the same architecture batch, and each path's probability moves by how much
        better its loss is than the other paths' (REINFORCE with a leave-one-out baseline; a moving
        average with one path). ``"straight_through"``: one path forward and backward, the gradient
        of the loss with respect to the drawn candidate's output scale (the original single-path
        estimator; it does not compare candidates, see ``benchmarks/RESULTS.md``).
    weight_sampling
        The path of each weight step after warm-up: ``"fair"`` (default) keeps training every
        candidate in turn, so the candidates the logits compare were trained alike; ``"gumbel"``
        draws from the logits, so the favoured candidates train more (as in SNAS / GDAS).
    arch_split
        Data for the architecture steps: a fraction of the training loader's samples (default 0.5,
        a seeded split), explicit dataset indices (e.g. whole held-out patients), or ``"val"`` for the
        evaluator's validation loader as NNI's DARTS does. Unless ``"val"``, the evaluator's
        validation loader evaluates the argmax architecture every epoch.
    size_budget_mb, flops_budget, penalty_weight
        Optional model-size budget (MB of parameters) and/or FLOPs budget (per sample, at the
        training input size): each adds ``penalty_weight * relu(E[cost] / budget - 1)`` to the arch
        loss, ``E[cost]`` being the expected cost under ``softmax(alpha)`` from per-candidate costs
        (parameters counted directly; FLOPs counted once on the first architecture batch). An
        ``InputChoice`` costs nothing by itself.
    seed
        Seeds the Gumbel noise (per step; identical on all DDP ranks) and the ``arch_split`` split.
    export_path
        If given, rank 0 writes the exported sample (JSON) there at the end of the search.
    checkpoint_dir, resume_from
        Save a Lightning checkpoint every epoch under ``checkpoint_dir`` (``last.ckpt`` kept);
        resume from ``resume_from`` (a path, or ``"last"`` for ``checkpoint_dir/last.ckpt``).
    report_metric
        The logged validation metric reported to NNI (intermediate per epoch, final at the end)
        when running inside an NNI trial.
    checkpoint_candidates
        Run each drawn ``LayerChoice`` candidate under activation checkpointing: its inner
        activations are recomputed in backward instead of stored. Cuts activation memory (for large
        3D inputs) at the cost of one more forward of the candidates per step; results are unchanged.
    """

    #: One candidate runs per choice, so candidates may differ in output shape (read by search spaces).
    weighted_sum = False

    def __init__(
        self,
        *,
        arc_learning_rate: float = 0.03,
        arc_betas: tuple[float, float] = (0.5, 0.999),
        arc_weight_decay: float = 1e-3,
        gradient_clip_val: float | None = 5.0,
        warmup_epochs: int | None = None,
        warmup_fraction: float = 0.25,
        temperature: TemperatureSchedule | float | tuple[float, float] | dict = TemperatureSchedule(),
        arch_estimator: ArchEstimator = "score_function",
        arch_samples: int = 2,
        weight_sampling: WeightSampling = "fair",
        arch_split: ArchSplit = 0.5,
        size_budget_mb: float | None = None,
        flops_budget: float | None = None,
        penalty_weight: float = 1.0,
        seed: int = 0,
        export_path: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        resume_from: str | Path | None = None,
        report_metric: str = "val_acc",
        checkpoint_candidates: bool = False,
        **kwargs: Any,
    ):
        super().__init__(arc_learning_rate=arc_learning_rate, gradient_clip_val=gradient_clip_val,
                         warmup_epochs=warmup_epochs or 0, **kwargs)
        if warmup_epochs is not None and warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")
        if not 0.0 <= warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must lie in [0, 1), got {warmup_fraction}")
        if arch_estimator not in ("score_function", "straight_through"):
            raise ValueError(f"arch_estimator must be 'score_function' or 'straight_through', got {arch_estimator!r}")
        if arch_samples < 1:
            raise ValueError(f"arch_samples must be >= 1, got {arch_samples}")
        if weight_sampling not in ("fair", "gumbel"):
            raise ValueError(f"weight_sampling must be 'fair' or 'gumbel', got {weight_sampling!r}")
        self.warmup_epochs = warmup_epochs  # type: ignore[assignment]  (None: a fraction of the budget)
        self.warmup_fraction = warmup_fraction
        self.arch_estimator = arch_estimator
        self.arch_samples = arch_samples
        self.weight_sampling = weight_sampling
        self.arc_betas = arc_betas
        self.arc_weight_decay = arc_weight_decay
        self.temperature = TemperatureSchedule.parse(temperature)
        if isinstance(arch_split, float) and not 0.0 < arch_split < 1.0:
            raise ValueError(f"arch_split fraction must lie in (0, 1), got {arch_split}")
        if isinstance(arch_split, str) and arch_split != "val":
            raise ValueError(f"arch_split must be a fraction, a list of indices or 'val', got {arch_split!r}")
        if size_budget_mb is not None and size_budget_mb <= 0:
            raise ValueError(f"size_budget_mb must be positive, got {size_budget_mb}")
        if flops_budget is not None and flops_budget <= 0:
            raise ValueError(f"flops_budget must be positive, got {flops_budget}")
        self.flops_budget = flops_budget
        self.arch_split = arch_split
        self.size_budget_mb = size_budget_mb
        self.penalty_weight = penalty_weight
        self.seed = seed
        self.export_path = export_path
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume_from = resume_from
        self.report_metric = report_metric
        self.checkpoint_candidates = checkpoint_candidates

    # ----------------------------------------------------------------- supernet
    def default_mutation_hooks(self) -> list[MutationHook]:
        return [GumbelLayerChoice.mutate, GumbelInputChoice.mutate, GumbelRepeat.mutate, reject_unsupported]

    def run_hook(self, hook: MutationHook, name: str, module: nn.Module, memo: dict[str, Any]):
        if not memo.get("_validated"):
            memo.update(self._arch_parameters)
            memo["_validated"] = True
        return hook(module, name, memo, {})

    def mutate_model(self, model: ModelSpace) -> ModelSpace:
        if not isinstance(model, ModelSpace):
            raise TypeError(f"GumbelDNAS searches an nni ModelSpace, got {type(model).__name__}")
        self._arch_parameters = {}
        generator = torch.Generator().manual_seed(self.seed)
        for label, mutable in model.simplify().items():
            n = check_categorical(label, mutable)
            # Near-uniform start; tiny noise breaks argmax ties the same way for a given seed.
            self._arch_parameters[label] = nn.Parameter(torch.randn(n, generator=generator) * 1e-3)
        # DARTS.mutate_model would redo the parameters with the global RNG: go to the base class.
        model = super(DARTS, self).mutate_model(model)
        covered: set[str] = set()
        for module in model.modules():
            if isinstance(module, GumbelSuperNetModule):
                covered.update(module.label_alphas())
        for module in model.modules():
            if isinstance(module, GumbelLayerChoice):
                module.checkpoint_candidates = self.checkpoint_candidates
        missing = sorted(set(self._arch_parameters) - covered)
        if missing:
            raise TypeError(
                f"GumbelDNAS supports only LayerChoice, InputChoice and Repeat; the mutables {missing} are "
                "used some other way (e.g. inside forward or a mutable operator) and cannot be searched"
            )
        return model

    # ----------------------------------------------------------------- evaluator
    def configure_oneshot_module(self, training_module: pl.LightningModule) -> GumbelDNASLightningModule:
        return GumbelDNASLightningModule(
            training_module,
            arc_learning_rate=self.arc_learning_rate,
            arc_betas=self.arc_betas,
            arc_weight_decay=self.arc_weight_decay,
            gradient_clip_val=self.gradient_clip_val,
            warmup_epochs=self.warmup_epochs,
            warmup_fraction=self.warmup_fraction,
            temperature=self.temperature,
            arch_estimator=self.arch_estimator,
            arch_samples=self.arch_samples,
            weight_sampling=self.weight_sampling,
            size_budget_mb=self.size_budget_mb,
            flops_budget=self.flops_budget,
            penalty_weight=self.penalty_weight,
            seed=self.seed,
            export_path=self.export_path,
            report_metric=self.report_metric,
        )

    def mutate_evaluator(self, evaluator: Lightning) -> Lightning:
        evaluator = super().mutate_evaluator(evaluator)
        trainer = evaluator.trainer
        from pytorch_lightning.strategies import DDPStrategy

        if isinstance(trainer.strategy, DDPStrategy):
            # Unsampled candidates receive no gradient in a step.
            trainer.strategy._ddp_kwargs["find_unused_parameters"] = True  # noqa: SLF001
        if self.checkpoint_dir is not None:
            from pytorch_lightning.callbacks import ModelCheckpoint

            trainer.callbacks.append(ModelCheckpoint(
                dirpath=self.checkpoint_dir, filename="search-{epoch:03d}", save_last=True,
                every_n_epochs=1, save_on_train_epoch_end=True,
            ))
        if self.resume_from is not None:
            path = self.resume_from
            if str(path) == "last":
                if self.checkpoint_dir is None:
                    raise ValueError("resume_from='last' needs checkpoint_dir")
                path = self.checkpoint_dir / "last.ckpt"
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: search checkpoint to resume from does not exist")
            evaluator.fit_kwargs["ckpt_path"] = str(path)
        return evaluator

    def train_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        if isinstance(self.arch_split, str):  # "val": NNI DARTS's arrangement
            return {"train": train_dataloader_fn(), "arch": val_dataloader_fn()}
        loader = train_dataloader_fn()
        if isinstance(self.arch_split, float):
            n = len(loader.dataset)
            n_arch = min(n - 1, max(1, round(self.arch_split * n)))
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            arch_indices: Sequence[int] = perm[:n_arch].tolist()
        else:
            arch_indices = self.arch_split
        weight_loader, arch_loader = split_train_loader(loader, arch_indices)
        return {"train": weight_loader, "arch": arch_loader}

    def val_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        return None if isinstance(self.arch_split, str) else val_dataloader_fn()

    # ----------------------------------------------------------------- results
    def export(self) -> Sample:
        """The argmax architecture (a sample for ``space.freeze``); available after the search ran."""
        return self.oneshot_module.export()

    def export_probs(self) -> dict[str, dict[Any, float]]:
        return self.oneshot_module.export_probs()

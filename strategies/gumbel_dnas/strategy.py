"""The GumbelDNAS strategy: NNI's one-shot contract (supernet mutation, evaluator, data, export)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytorch_lightning as pl
import torch
import torch.nn as nn
from nni.mutable import Sample
from nni.nas.evaluator.pytorch import Lightning
from nni.nas.nn.pytorch import ModelSpace
from nni.nas.strategy import DARTS

from nni_covid3d.training.resume import ResumableRun, check_resume, read_training_checkpoint

from ..supermodules import (
    GumbelInputChoice, GumbelLayerChoice, GumbelRepeat, GumbelSuperNetModule, check_categorical, reject_unsupported,
)
from .lightning import GumbelDNASLightningModule
from .loaders import ArchSplit, arch_indices, split_train_loader
from .schedule import TemperatureSchedule
from .settings import ArchCredit, ArchEstimator, SearchSettings, WeightSampling

__all__ = ["GumbelDNAS"]

#: NNI's mutation hook: ``(module, name, memo, mutate_kwargs)`` -> a replacement module, ``True`` to stop
#: the other hooks, or ``None`` / ``False`` (see ``OneShotStrategy`` in NNI's API reference).
MutationHook = Callable[[nn.Module, str, dict[str, Any], dict[str, Any]], Any]


class GumbelDNAS(DARTS):
    """Single-path NAS with Gumbel sampling of the logits (an NNI one-shot strategy).

    Supported mutables: ``LayerChoice``, ``InputChoice`` (``n_chosen=1``) and ``Repeat`` with a
    categorical depth; anything else raises a ``TypeError`` naming the module or label.

    Under DDP, the candidates a step did not draw get no gradient, which DDP must be told to expect:
    build the Trainer with ``strategy="ddp_find_unused_parameters_true"`` (or
    ``DDPStrategy(find_unused_parameters=True)``), as ``run_search`` does; another DDP strategy
    stops the fit at its start with an error saying so. The Trainer is never changed behind your back.

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
    arch_credit
        What one comparison of two paths credits (score-function estimator, two paths). ``"path"``
        (default): the two paths are drawn independently, so they differ at almost every label and one
        loss difference moves all of them. ``"choice"``: the second path is the first with one label
        redrawn (another candidate of that label, labels taken in a seeded round-robin), so the loss
        difference is credited to that label's two candidates alone; the other labels' terms cancel
        (ProxylessNAS's two-candidate update, mit-han-lab/proxylessnas ``mix_op.py``).
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
        Save a Lightning checkpoint every epoch under ``checkpoint_dir`` (``last.ckpt`` kept; written
        by the Trainer's checkpoint IO, atomically with ``Trainer(plugins=[AtomicCheckpointIO()])``
        as ``run_search`` builds it); resume from ``resume_from`` (a path, or ``"last"`` for
        ``checkpoint_dir/last.ckpt``).
        Every epoch's randomness is seeded from ``(seed, epoch)``
        (:class:`~nni_covid3d.training.resume.ResumableRun`), so a search resumed after a crash ends
        as the uninterrupted one; a checkpoint of other settings is refused.
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
        arch_credit: ArchCredit = "path",
        weight_sampling: WeightSampling = "fair",
        arch_split: ArchSplit = 0.5,
        size_budget_mb: float | None = None,
        flops_budget: float | None = None,
        penalty_weight: float = 1.0,
        seed: int = 0,
        export_path: str | Path | None = None,
        checkpoint_dir: str | Path | None = None,
        resume_from: str | Path | None = None,
        checkpoint_candidates: bool = False,
        **kwargs: Any,
    ):
        super().__init__(arc_learning_rate=arc_learning_rate, gradient_clip_val=gradient_clip_val,
                         warmup_epochs=warmup_epochs or 0, **kwargs)
        self.settings = SearchSettings(
            arc_learning_rate=arc_learning_rate, arc_betas=tuple(arc_betas), arc_weight_decay=arc_weight_decay,
            gradient_clip_val=gradient_clip_val, warmup_epochs=warmup_epochs, warmup_fraction=warmup_fraction,
            temperature=TemperatureSchedule.parse(temperature), arch_estimator=arch_estimator,
            arch_samples=arch_samples, arch_credit=arch_credit, weight_sampling=weight_sampling, size_budget_mb=size_budget_mb,
            flops_budget=flops_budget, penalty_weight=penalty_weight, seed=seed, export_path=export_path,
        )
        if isinstance(arch_split, float) and not 0.0 < arch_split < 1.0:
            raise ValueError(f"arch_split fraction must lie in (0, 1), got {arch_split}")
        if isinstance(arch_split, str) and arch_split != "val":
            raise ValueError(f"arch_split must be a fraction, a list of indices or 'val', got {arch_split!r}")
        self.arch_split = arch_split
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.resume_from = resume_from
        self.checkpoint_candidates = checkpoint_candidates

    # ----------------------------------------------------------------- supernet
    def default_mutation_hooks(self) -> list[MutationHook]:
        return [GumbelLayerChoice.mutate, GumbelInputChoice.mutate, GumbelRepeat.mutate, reject_unsupported]

    def mutate_model(self, model: ModelSpace) -> ModelSpace:
        if not isinstance(model, ModelSpace):
            raise TypeError(f"GumbelDNAS searches an nni ModelSpace, got {type(model).__name__}")
        labels = model.simplify()
        for label, mutable in labels.items():
            check_categorical(label, mutable)
        # DARTS draws the near-uniform starting logits (noise of 1e-3 that breaks argmax ties) from the
        # global RNG: seed it, so a given seed always starts from the same logits.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.settings.seed)
            model = super().mutate_model(model)
        covered: set[str] = set()
        for module in model.modules():
            if isinstance(module, GumbelSuperNetModule):
                covered.update(module.label_alphas())
        for module in model.modules():
            if isinstance(module, GumbelLayerChoice):
                module.checkpoint_candidates = self.checkpoint_candidates
        missing = sorted(set(labels) - covered)
        if missing:
            raise TypeError(
                f"GumbelDNAS supports only LayerChoice, InputChoice and Repeat; the mutables {missing} are "
                "used some other way (e.g. inside forward or a mutable operator) and cannot be searched"
            )
        return model

    # ----------------------------------------------------------------- evaluator
    def configure_oneshot_module(self, training_module: pl.LightningModule) -> GumbelDNASLightningModule:
        return GumbelDNASLightningModule(training_module, self.settings)

    def mutate_evaluator(self, evaluator: Lightning) -> Lightning:
        """NNI's one-shot evaluator around :class:`GumbelDNASLightningModule`; the user's Trainer is left as given.

        The search's own callbacks (:meth:`search_callbacks`) reach the Trainer through Lightning's
        documented hook, ``LightningModule.configure_callbacks``, when the fit starts; a resume is a
        fit argument of the new evaluator.
        """
        callbacks = self.search_callbacks(evaluator)
        mutated = super().mutate_evaluator(evaluator)
        mutated.module.search_callbacks = callbacks
        if self.resume_from is not None:
            run = next(c for c in [*evaluator.trainer.callbacks, *callbacks] if isinstance(c, ResumableRun))
            resume = {"ckpt_path": str(self._resume_path(run.record)), "weights_only": True}
            # A new dict: NNI's evaluator shares the user's, which keeps its own fit arguments.
            mutated.fit_kwargs = {**mutated.fit_kwargs, **resume}
        return mutated

    def search_callbacks(self, evaluator: Lightning) -> list[pl.Callback]:
        """The callbacks this search adds to the evaluator's Trainer.

        A :class:`ResumableRun` (every epoch's randomness from ``(seed, epoch)`` alone, so a resumed
        search is the uninterrupted one) unless the Trainer has one, and with ``checkpoint_dir`` a
        ``ModelCheckpoint`` saving every epoch. Checkpoints are written by the Trainer's checkpoint IO:
        build the Trainer with ``plugins=[AtomicCheckpointIO()]`` (as ``run_search`` does) to have a
        killed write leave the previous checkpoint whole.
        """
        callbacks: list[pl.Callback] = []
        if not any(isinstance(c, ResumableRun) for c in evaluator.trainer.callbacks):
            callbacks.append(ResumableRun(self.settings.seed, [evaluator.train_dataloaders, evaluator.val_dataloaders]))
        if self.checkpoint_dir is not None:
            from pytorch_lightning.callbacks import ModelCheckpoint

            callbacks.append(ModelCheckpoint(
                dirpath=self.checkpoint_dir, filename="search-{epoch:03d}", save_last=True,
                every_n_epochs=1, save_on_train_epoch_end=True,
            ))
        return callbacks

    def _resume_path(self, record: dict[str, Any] | None) -> Path:
        """The checkpoint to resume from, checked before Lightning touches it: a damaged one, or
        (with the run's ``record``) another run's, is refused."""
        path = Path(self.resume_from)
        if str(self.resume_from) == "last":
            if self.checkpoint_dir is None:
                raise ValueError("resume_from='last' needs checkpoint_dir")
            path = self.checkpoint_dir / "last.ckpt"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: search checkpoint to resume from does not exist")
        if record is not None:
            check_resume(path, record)
        else:
            read_training_checkpoint(path)
        return path

    def train_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        if isinstance(self.arch_split, str):  # "val": NNI DARTS's arrangement
            return {"train": train_dataloader_fn(), "arch": val_dataloader_fn()}
        loader = train_dataloader_fn()
        weight_loader, arch_loader = split_train_loader(loader, arch_indices(len(loader.dataset), self.arch_split, self.settings.seed))
        return {"train": weight_loader, "arch": arch_loader}

    def val_dataloader(self, train_dataloader_fn: Callable[[], Any], val_dataloader_fn: Callable[[], Any]) -> Any:
        return None if isinstance(self.arch_split, str) else val_dataloader_fn()

    # ----------------------------------------------------------------- results
    def export(self) -> Sample:
        """The argmax architecture (a sample for ``space.freeze``); available after the search ran."""
        return self.oneshot_module.export()

    def export_probs(self) -> dict[str, dict[Any, float]]:
        return self.oneshot_module.export_probs()

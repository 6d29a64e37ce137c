"""``run_search``: the one library entry point for a one-shot architecture search of CovidNet3D.

The command line (``nni-covid3d search``), the NNI trial (``python -m nni_covid3d.trial dnas``), the
comparison protocol (``nni-covid3d benchmark``) and the examples all call it. It owns the wiring:
the held-out patients of the architecture steps, the loaders, the space, the classifier, the
Trainer (logger, checkpoints, DDP), the strategy and the export.

Data flow: weights train on the training patients minus a held-out share (``arch_fraction``, whole
patients) on which the architecture steps train; the validation patients score the current
architecture each epoch; the test split is never passed in.

Output folder (when ``out_dir`` is given)::

    out/architecture.json   the exported architecture (search-space format)
    out/arch_probs.json     each choice's final probabilities (strategies that have logits)
    out/tensorboard/        TensorBoard logs
    out/checkpoints/        one checkpoint per epoch, ``last.ckpt`` (GumbelDNAS; ``resume``)

Every epoch's randomness is seeded from ``(seed, epoch)`` and checkpoints are written atomically
(``nni_covid3d.training.resume``): a GumbelDNAS search killed at any point and resumed ends as the
uninterrupted search would have (same exported architecture and probabilities), and a resume with
other data, split, space or settings than the checkpoint's is refused, naming what differs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from nni_covid3d.data import Preprocessing, Scan

__all__ = ["SearchData", "SearchResult", "run_search", "STRATEGY_NAMES", "GUMBEL_DNAS_ONLY_OPTIONS"]

#: The strategies ``run_search`` drives (``nni_covid3d.strategies.get`` names).
STRATEGY_NAMES = ("gumbel-dnas", "darts", "gumbel-darts", "proxyless", "random-oneshot")
#: NNI's DARTS family takes its architecture batches from the evaluator's validation loader.
_NNI_DIFFERENTIABLE = ("darts", "gumbel-darts", "proxyless")
#: Strategy options only GumbelDNAS accepts.
GUMBEL_DNAS_ONLY_OPTIONS = ("size_budget_mb", "flops_budget", "checkpoint_candidates", "arch_estimator",
                            "weight_sampling", "arch_samples", "arch_credit", "penalty_weight")


@dataclass
class SearchData:
    """What a search reads: the training and validation datasets, never the test split.

    Attributes:
        train: training items ``{"image": FloatTensor[1, D, H, W], "label": int}`` (augmented).
        val: validation items (deterministic); they score the architecture each epoch.
        train_patients: the patient id of each training item, so the architecture steps hold out
            whole patients.
        class_names: class names in label order.
        preprocessing: the preprocessing both datasets were made with (stored with the result).
    """

    train: Dataset
    val: Dataset
    train_patients: Sequence[str]
    class_names: Sequence[str]
    preprocessing: Preprocessing

    @classmethod
    def from_split(cls, split: Mapping[str, Sequence[Scan]], class_names: Sequence[str], preprocessing: Preprocessing,
                   *, cache_dir: str | Path | None = None, cache_in_memory: bool = False, seed: int = 0,
                   progress: bool = False) -> SearchData:
        """The datasets of ``split["train"]`` and ``split["val"]`` (``split["test"]`` is not read); with
        ``progress``, the cache is filled now, with a progress bar."""
        from nni_covid3d.data import make_dataset

        cache = {"cache_dir": cache_dir, "cache_in_memory": cache_in_memory, "progress": progress}
        return cls(
            train=make_dataset(split["train"], preprocessing, train=True, seed=seed, **cache),
            val=make_dataset(split["val"], preprocessing, train=False, **cache),
            train_patients=[scan.patient_id for scan in split["train"]],
            class_names=list(class_names),
            preprocessing=preprocessing,
        )


@dataclass
class SearchResult:
    """The outcome of :func:`run_search`.

    Attributes:
        architecture: the exported architecture (``nni_covid3d.search_spaces`` format).
        probabilities: ``{label: {value: probability}}`` of the final logits, ``None`` for strategies
            without logits (random one-shot).
        history: the validation results per epoch (``{"default": val_acc, "val_bal_acc", "val_loss"}``).
        out_dir: the output folder, when one was given.
        is_global_zero: whether this process is rank 0 of the run (the one that writes and reports).
        oneshot_module: the trained one-shot Lightning module (the supernet with its shared weights), to
            score fixed paths with (``nni_covid3d.strategies.path_scoring``); not saved anywhere.
    """

    architecture: dict[str, Any]
    probabilities: dict[str, dict[str, float]] | None
    history: list[dict[str, float]] = field(default_factory=list)
    out_dir: Path | None = None
    is_global_zero: bool = True
    oneshot_module: Any = field(default=None, repr=False)

    @property
    def architecture_path(self) -> Path | None:
        return self.out_dir / "architecture.json" if self.out_dir is not None else None


def _strategy(name: str, options: Mapping[str, Any], *, arch_indices: list[int], seed: int, out_dir: Path | None,
              resume: bool) -> Any:
    from nni_covid3d.strategies import get

    options = dict(options)
    if name == "gumbel-dnas":
        if resume and out_dir is None:
            raise ValueError("resume needs out_dir (the checkpoints live in out_dir/checkpoints)")
        options.update(arch_split=arch_indices, seed=seed)
        if out_dir is not None:
            options.update(checkpoint_dir=out_dir / "checkpoints", resume_from="last" if resume else None)
        return get(name, **options)
    given = sorted(key for key in GUMBEL_DNAS_ONLY_OPTIONS if options.get(key) not in (None, False))
    if given or resume:
        raise ValueError(f"{', '.join(given + ['resume'] * resume)} appl{'ies' if len(given) + resume == 1 else 'y'} "
                         f"to the gumbel-dnas strategy only, not {name}")
    options = {key: value for key, value in options.items() if key not in GUMBEL_DNAS_ONLY_OPTIONS}
    if name in _NNI_DIFFERENTIABLE:
        options.setdefault("gradient_clip_val", 5.0)
    return get(name, **options)


def run_search(
    data: SearchData,
    space_config: Mapping[str, Any],
    *,
    strategy: str = "gumbel-dnas",
    strategy_options: Mapping[str, Any] | None = None,
    epochs: int = 30,
    batch_size: int = 4,
    learning_rate: float = 1e-3,
    weight_decay: float = 5e-4,
    arch_fraction: float = 0.5,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    accelerator: str = "auto",
    devices: int | str = 1,
    num_nodes: int = 1,
    workers: int | None = None,
    loader: str = "torch",
    channels_last: str = "auto",
    precision: str = "32-true",
    progress: bool = False,
    callbacks: Sequence[Any] = (),
    metadata: Mapping[str, Any] | None = None,
) -> SearchResult:
    """Search the CovidNet3D space on ``data`` and export the found architecture.

    Args:
        data: training and validation datasets (:class:`SearchData`).
        space_config: ``CovidNet3DSpace`` arguments (``preset``, ``widths``, ``n_cells``, ...);
            ``num_classes`` defaults to the data's.
        strategy: one of :data:`STRATEGY_NAMES`.
        strategy_options: the strategy's own options (e.g. ``arc_learning_rate``, ``warmup_epochs``,
            ``temperature``, ``size_budget_mb``); the rest keep the strategy's defaults. The data
            split, seed and checkpoints are set here.
        epochs, batch_size, learning_rate, weight_decay: the weights' budget and Adam.
        arch_fraction: share of the training patients held out for the architecture steps.
        seed: seeds everything (weights, loaders, the hold-out, the strategy's draws).
        out_dir: where the results go (see the module docstring); ``None`` writes nothing.
        resume: continue from ``out_dir/checkpoints/last.ckpt`` (GumbelDNAS), exactly as the
            uninterrupted search; refused when the checkpoint's run had other settings.
        accelerator, devices, progress: Lightning's settings; more than one device runs DDP.
        workers, loader: loader worker processes (``None``: chosen for the device) and kind
            (``nni_covid3d.data.loading.make_loader``).
        channels_last: ``"auto"``, ``"on"`` or ``"off"`` (``nni_covid3d.training.memory_format``).
        num_nodes: machines of a multi-node DDP run (``devices`` each; launched by torchrun or SLURM).
        precision: Lightning's precision (``nni_covid3d.precision.PRECISIONS``); under ``bf16-mixed`` and
            ``16-mixed`` GumbelDNAS keeps its logits, noise and softmax in fp32; ``16-mixed`` needs a
            CUDA GPU. It is part of what a resume must match.
        callbacks: extra Lightning callbacks. An :class:`~nni_covid3d.nnictl.NniReporter` is added
            unless one is given (it reports to NNI inside a trial, and records the history).
        metadata: stored in the architecture file beside the search's own settings.

    Raises:
        ValueError: an unknown strategy, an option it does not accept, too few training patients;
            with ``resume``, a damaged checkpoint or one of another run (``CheckpointError``,
            ``ResumeError``, naming the file and what differs).
    """
    import pytorch_lightning as pl
    from nni.nas.evaluator.pytorch import Lightning, Trainer
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from torch.utils.data import Subset

    from nni_covid3d.data import patient_holdout_indices
    from nni_covid3d.data.loading import drop_remainder, make_loader
    from nni_covid3d.nnictl.reporter import NniReporter
    from nni_covid3d.precision import check_precision
    from nni_covid3d.atomic import atomic_write_text
    from nni_covid3d.search_spaces import CovidNet3DSpace, export_architecture, save_architecture
    from nni_covid3d.training import CovidClassifier
    from nni_covid3d.training.memory_format import ChannelsLast3d, use_channels_last
    from nni_covid3d.training.resume import AtomicCheckpointIO, ResumableRun, data_record

    if strategy not in STRATEGY_NAMES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGY_NAMES}")
    check_precision(precision, accelerator)
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be at least 1, got {epochs} and {batch_size}")
    if len(data.train_patients) != len(data.train):
        raise ValueError(f"{len(data.train_patients)} patient ids for {len(data.train)} training items")
    if len(data.val) == 0:
        raise ValueError("the validation split is empty; use more patients or a larger validation share")
    out = Path(out_dir) if out_dir is not None else None
    pl.seed_everything(seed, workers=True, verbose=False)
    arch_indices = patient_holdout_indices(list(data.train_patients), arch_fraction, seed)
    n_weight, n_arch = len(data.train) - len(arch_indices), len(arch_indices)
    if min(n_weight, n_arch) < 2:  # a training batch of one volume breaks BatchNorm at the 1x1x1 head
        raise ValueError(
            f"holding out {arch_fraction:g} of the {len(set(data.train_patients))} training patients leaves "
            f"{n_weight} training scan(s) for the weights and {n_arch} for the architecture steps; each needs at "
            "least 2: use more patients or another arch_fraction")
    chosen = _strategy(strategy, strategy_options or {}, arch_indices=arch_indices, seed=seed, out_dir=out,
                       resume=resume)

    train_set, val_set = data.train, data.val
    if strategy in _NNI_DIFFERENTIABLE:
        # NNI's DARTS family takes its architecture batches from the evaluator's validation loader:
        # give it the same held-out training patients GumbelDNAS uses (never the val or test split).
        held = set(arch_indices)
        train_set, val_set = Subset(data.train, [i for i in range(len(data.train)) if i not in held]), \
            Subset(data.train, sorted(held))
    loading = {"accelerator": accelerator, "workers": workers, "kind": loader, "traced": True}
    train_loader = make_loader(train_set, batch_size, train=True, seed=seed, **loading)
    val_loader = make_loader(val_set, batch_size, train=False, seed=seed, **loading,
                             drop_last=strategy in _NNI_DIFFERENTIABLE and drop_remainder(len(val_set), batch_size))

    space = CovidNet3DSpace(**{"num_classes": len(data.class_names), **space_config})
    space_config = space.config  # read before the strategy turns the space into a supernet in place
    module = CovidClassifier(class_names=data.class_names, learning_rate=learning_rate, weight_decay=weight_decay,
                             max_epochs=epochs, preprocessing=data.preprocessing.to_dict(), model_name="covidnet3d",
                             seed=seed)
    reporters = [c for c in callbacks if isinstance(c, NniReporter)]
    reporter = reporters[0] if reporters else NniReporter()
    # What a resume must match; the strategy checks it against the checkpoint's before fitting.
    record = {
        **data_record(data.train, data.val, data.class_names),
        "preprocessing": data.preprocessing.to_dict(),
        "space": space_config,
        # Activation checkpointing changes memory and time, not results: a resume may switch it.
        "strategy": {"name": strategy, **{key: value for key, value in (strategy_options or {}).items()
                                          if key != "checkpoint_candidates"}},
        "search": {"epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
                   "weight_decay": weight_decay, "arch_fraction": arch_fraction, "seed": seed,
                   # fp32 is left out, so that checkpoints written before the precision option still resume.
                   **({"precision": precision} if precision != "32-true" else {})},
    }
    resumable = ResumableRun(seed, [train_loader, val_loader], record)
    many_devices = (isinstance(devices, int) and devices > 1) or num_nodes > 1
    trainer = Trainer(
        max_epochs=epochs, accelerator=accelerator, devices=devices, num_nodes=num_nodes, precision=precision,
        # Unsampled candidates receive no gradient in a single-path step.
        strategy="ddp_find_unused_parameters_true" if many_devices else "auto",
        plugins=[AtomicCheckpointIO()],  # GumbelDNAS's checkpoints: a killed write leaves the last one whole
        logger=pl.loggers.TensorBoardLogger(str(out), name="tensorboard") if out is not None else False,
        callbacks=[resumable, *([ChannelsLast3d()] if use_channels_last(channels_last, accelerator) else []),
                   *callbacks, *([] if reporters else [reporter])], enable_checkpointing=False,
        enable_progress_bar=progress, enable_model_summary=False, num_sanity_val_steps=0,
    )
    evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)
    # Run in this process, not through an execution engine: an engine would swap NNI's trial channel
    # and divert the per-epoch reports away from the NNI manager.
    chosen.initialize(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine()).execute()
    best = next(chosen.list_models())

    export_probs = getattr(chosen.oneshot_module, "export_probs", None)
    probabilities = ({str(label): {str(value): float(p) for value, p in dist.items()}
                      for label, dist in export_probs().items()} if export_probs is not None else None) or None
    search_metadata = {"source": f"nni-covid3d search --strategy {strategy}", "strategy": strategy, "epochs": epochs,
                       "seed": seed, **{key: value for key, value in (strategy_options or {}).items()
                                        if isinstance(value, (int, float, str, bool)) or value is None},
                       **(metadata or {})}
    architecture = export_architecture(space_config, best.sample, metadata=search_metadata)
    if out is not None and trainer.is_global_zero:
        out.mkdir(parents=True, exist_ok=True)
        save_architecture(architecture, out / "architecture.json")
        if probabilities is not None:
            atomic_write_text(out / "arch_probs.json", json.dumps(probabilities, indent=2) + "\n")
    return SearchResult(architecture, probabilities, list(reporter.history), out, trainer.is_global_zero,
                        chosen.oneshot_module)

"""``search``: one-shot architecture search of the CovidNet3D space on a dataset.

    nni-covid3d search --dataset ccccii --root DATA --preset S --strategy gumbel-dnas --epochs 30 --out runs/search

Weights train on the training patients minus a held-out share (``--arch-fraction``, whole patients)
on which the architecture logits train; the validation patients score the argmax architecture each
epoch; the test split is not touched. Writes ``OUT/architecture.json`` (the search-space format),
``OUT/arch_probs.json``, ``OUT/split.json``, TensorBoard logs in ``OUT/tensorboard`` and a checkpoint
per epoch in ``OUT/checkpoints`` (``--resume`` continues from ``last.ckpt``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nni_covid3d.cli import UserError
from nni_covid3d.cli.train import add_dataset_arguments

# Same names as nni_covid3d.strategies.STRATEGY_NAMES (kept literal so --help stays fast; a test checks).
STRATEGIES = ("gumbel-dnas", "darts", "gumbel-darts", "proxyless", "random-oneshot")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="one-shot architecture search (GumbelDNAS, DARTS, ...) of CovidNet3D")
    add_dataset_arguments(p)
    p.add_argument("--preset", default="S", choices=("S", "L"), help="CovidNet3D stage widths")
    p.add_argument("--widths", type=int, nargs=6, metavar="W", help="stage widths (default: the preset's)")
    p.add_argument("--n-cells", type=int, nargs=6, metavar="N", default=(4, 4, 4, 4, 4, 1), help="cells per stage")
    p.add_argument("--head-channels", type=int, default=1280)
    p.add_argument("--search-downsampling", action="store_true",
                   help="also search 2x2x2 vs 1x2x2 downsampling (single-path strategies only)")
    p.add_argument("--strategy", default="gumbel-dnas", choices=STRATEGIES)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--depth", type=int, default=16, help="slices per volume (paper's search: 16)")
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="weight learning rate (Adam)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--arc-lr", type=float,
                   help="architecture learning rate (Adam; default: the strategy's own, 3e-4 for NNI's)")
    p.add_argument("--warmup-epochs", type=int,
                   help="epochs of weight steps only (default: a quarter of --epochs for gumbel-dnas, 0 for NNI's)")
    p.add_argument("--arch-estimator", choices=("score_function", "straight_through"),
                   help="how gumbel-dnas's logits learn: paths compared by their losses (default), or the "
                        "straight-through gradient of one path (benchmarks/RESULTS.md, planted problems)")
    p.add_argument("--weight-sampling", choices=("fair", "gumbel"),
                   help="gumbel-dnas weight steps after warm-up: every candidate in turn (default), or drawn from the logits")
    p.add_argument("--tau", type=float, nargs=2, default=(5.0, 0.5), metavar=("INIT", "FINAL"),
                   help="Gumbel temperature annealed from INIT to FINAL (gumbel-dnas, gumbel-darts)")
    p.add_argument("--tau-schedule", choices=("exponential", "linear"), default="exponential")
    p.add_argument("--arch-fraction", type=float, default=0.5,
                   help="share of training patients held out for architecture steps (gumbel-dnas)")
    p.add_argument("--size-budget-mb", type=float, help="model-size budget in MB (gumbel-dnas)")
    p.add_argument("--flops-budget-g", type=float, help="GFLOPs-per-volume budget at the search input (gumbel-dnas)")
    p.add_argument("--checkpoint-activations", action="store_true",
                   help="recompute each drawn candidate's activations in backward: less memory, more time per step "
                        "(gumbel-dnas; figures in benchmarks/RESULTS.md)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--accelerator", default="auto", help="cpu, gpu or auto")
    p.add_argument("--devices", default="1", help="number of devices (DDP when more than one)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt (gumbel-dnas)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _given(args: argparse.Namespace, **options: str) -> dict:
    """``{keyword: args.<attribute>}`` for the options given on the command line; the rest keep the
    strategy's own defaults."""
    return {keyword: getattr(args, attribute) for keyword, attribute in options.items()
            if getattr(args, attribute) is not None}


def _strategy_kwargs(args: argparse.Namespace, arch_indices: list[int]) -> dict:
    if args.strategy == "gumbel-dnas":
        from nni_covid3d.strategies import TemperatureSchedule

        return dict(
            **_given(args, arc_learning_rate="arc_lr", warmup_epochs="warmup_epochs",
                     arch_estimator="arch_estimator", weight_sampling="weight_sampling"),
            temperature=TemperatureSchedule(args.tau[0], args.tau[1], args.tau_schedule),
            arch_split=arch_indices, size_budget_mb=args.size_budget_mb, seed=args.seed,
            flops_budget=args.flops_budget_g * 1e9 if args.flops_budget_g is not None else None,
            checkpoint_dir=args.out / "checkpoints", resume_from="last" if args.resume else None,
            checkpoint_candidates=args.checkpoint_activations,
        )
    if (args.resume or args.size_budget_mb is not None or args.flops_budget_g is not None or args.checkpoint_activations
            or args.arch_estimator is not None or args.weight_sampling is not None):
        raise UserError("--resume, --size-budget-mb, --flops-budget-g, --checkpoint-activations, --arch-estimator and "
                        "--weight-sampling apply to --strategy gumbel-dnas only")
    nni_darts = dict(**_given(args, arc_learning_rate="arc_lr", warmup_epochs="warmup_epochs"), gradient_clip_val=5.0)
    if args.strategy in ("darts", "proxyless"):
        return nni_darts
    if args.strategy == "gumbel-darts":
        return dict(**nni_darts, temperature=(float(args.tau[0]), float(args.tau[1])))
    return {}


def run(args: argparse.Namespace) -> int:
    import pytorch_lightning as pl
    import torch
    from nni.nas.evaluator.pytorch import DataLoader, Lightning, Trainer
    from nni.nas.execution import SequentialExecutionEngine
    from nni.nas.space import RawFormatModelSpace
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.data import Subset

    from nni_covid3d.data import (
        Preprocessing, load_dataset, load_split, make_dataset, make_patient_split, patient_holdout_indices, save_split,
    )
    from nni_covid3d.data.loading import drop_remainder
    from nni_covid3d.search_spaces import CovidNet3DSpace, export_architecture, save_architecture
    from nni_covid3d.strategies import get
    from nni_covid3d.training import CovidClassifier

    if args.epochs < 1 or args.batch_size < 1:
        raise UserError("--epochs and --batch-size must be at least 1")
    if not args.root.is_dir():
        raise FileNotFoundError(f"dataset root {args.root} does not exist")
    pl.seed_everything(args.seed, workers=True)

    index = load_dataset(args.dataset, args.root, task=args.task, skip_bad=args.skip_bad)
    if args.split_file is not None:
        split = load_split(args.split_file, index.scans)
    else:
        split = make_patient_split(index.scans, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                   seed=args.split_seed)
    args.out.mkdir(parents=True, exist_ok=True)
    save_split(split, args.out / "split.json")
    if not split["val"]:
        raise UserError(f"the validation split of {args.root} is empty; use more patients or a larger --val-fraction")
    preprocessing = Preprocessing(depth=args.depth, height=args.height, width=args.width)
    train_set = make_dataset(split["train"], preprocessing, train=True, cache_dir=args.cache_dir)
    val_set = make_dataset(split["val"], preprocessing, train=False, cache_dir=args.cache_dir)
    try:
        arch_indices = patient_holdout_indices([s.patient_id for s in split["train"]], args.arch_fraction, args.seed)
    except ValueError as error:
        raise UserError(f"{args.root}: {error}") from error

    generator = torch.Generator().manual_seed(args.seed)
    if args.strategy in ("darts", "gumbel-darts", "proxyless"):
        # NNI's DARTS family takes its architecture batches from the evaluator's validation loader:
        # give it the same held-out training patients GumbelDNAS uses (never the val or test split).
        held = set(arch_indices)
        weight_set = Subset(train_set, [i for i in range(len(train_set)) if i not in held])
        train_set, val_set = weight_set, Subset(train_set, sorted(held))
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers,
                              generator=generator, drop_last=drop_remainder(len(train_set), args.batch_size))
    # NNI's DARTS family trains the logits on this loader: a training loader for them.
    val_loader = DataLoader(val_set, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                            drop_last=args.strategy != "gumbel-dnas" and drop_remainder(len(val_set), args.batch_size))

    space = CovidNet3DSpace(args.preset, num_classes=len(index.class_names), in_channels=1, widths=args.widths,
                            n_cells=args.n_cells, head_channels=args.head_channels,
                            search_downsampling=args.search_downsampling)
    space_config = space.config  # before the strategy turns the space into a supernet in place
    module = CovidClassifier(class_names=index.class_names, learning_rate=args.lr, weight_decay=args.weight_decay,
                             max_epochs=args.epochs, preprocessing=preprocessing.to_dict(), model_name="covidnet3d")
    devices = int(args.devices) if str(args.devices).isdigit() else args.devices
    trainer = Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator, devices=devices,
        strategy="ddp" if isinstance(devices, int) and devices > 1 else "auto",
        logger=TensorBoardLogger(str(args.out), name="tensorboard"), enable_checkpointing=False,
        enable_progress_bar=not args.no_progress, enable_model_summary=False, num_sanity_val_steps=0,
    )
    evaluator = Lightning(module, trainer, train_dataloaders=train_loader, val_dataloaders=val_loader)
    strategy = get(args.strategy, **_strategy_kwargs(args, arch_indices))

    strategy(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    best = next(strategy.list_models())
    if not trainer.is_global_zero:
        return 0
    metadata = {"source": f"nni-covid3d search --strategy {args.strategy}", "dataset": args.dataset,
                "epochs": args.epochs, "seed": args.seed, "size_budget_mb": args.size_budget_mb}
    arch = export_architecture(space_config, best.sample, metadata=metadata)
    path = save_architecture(arch, args.out / "architecture.json")
    probs = strategy.oneshot_module.export_probs()
    (args.out / "arch_probs.json").write_text(
        json.dumps({str(k): {str(v): p for v, p in d.items()} for k, d in probs.items()}, indent=2) + "\n")
    print(f"architecture: {path}")
    print(f"choice probabilities: {args.out / 'arch_probs.json'}; TensorBoard: {args.out / 'tensorboard'}")
    print(f"retrain: nni-covid3d retrain --arch {path} --dataset {args.dataset} --root {args.root} --out RUN_DIR")
    return 0

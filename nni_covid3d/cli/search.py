"""``search``: one-shot architecture search of the CovidNet3D space on a dataset.

    nni-covid3d search --dataset ccccii --root DATA --preset S --strategy gumbel-dnas --epochs 30 --out runs/search

Weights train on the training patients minus a held-out share (``--arch-fraction``, whole patients)
on which the architecture logits train; the validation patients score the argmax architecture each
epoch; the test split is not touched. Writes ``OUT/architecture.json`` (the search-space format),
``OUT/arch_probs.json``, ``OUT/split.json``, TensorBoard logs in ``OUT/tensorboard`` and a checkpoint
per epoch in ``OUT/checkpoints`` (``--resume`` continues from ``last.ckpt``, also after a crash, and
ends as the uninterrupted search would have).
"""
from __future__ import annotations

import argparse

from nni_covid3d.cli import UserError
from nni_covid3d.cli.train import add_dataset_arguments
from nni_covid3d.devices import add_device_arguments, add_loader_arguments
from nni_covid3d.precision import check_precision
from nni_covid3d.search import STRATEGY_NAMES



def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="one-shot architecture search (GumbelDNAS, DARTS, ...) of CovidNet3D")
    add_dataset_arguments(p)
    p.add_argument("--preset", default="S", choices=("S", "L"), help="CovidNet3D stage widths")
    p.add_argument("--widths", type=int, nargs=6, metavar="W", help="stage widths (default: the preset's)")
    p.add_argument("--n-cells", type=int, nargs=6, metavar="N", default=(4, 4, 4, 4, 4, 1), help="cells per stage")
    p.add_argument("--head-channels", type=int, default=1280)
    p.add_argument("--search-downsampling", action="store_true",
                   help="also search 2x2x2 vs 1x2x2 downsampling (single-path strategies only)")
    p.add_argument("--strategy", default="gumbel-dnas", choices=STRATEGY_NAMES)
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
    p.add_argument("--arch-credit", choices=("path", "choice"),
                   help="what one comparison of two gumbel-dnas paths credits: every label the paths differ at "
                        "(path, default), or one label, the second path being the first with that label redrawn")
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
    add_device_arguments(p)
    add_loader_arguments(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT/checkpoints/last.ckpt (gumbel-dnas), also after a crash: the result is "
                        "the uninterrupted search's; refused if the data, split, space or settings differ")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _given(args: argparse.Namespace, **options: str) -> dict:
    """``{keyword: args.<attribute>}`` for the options given on the command line; the rest keep the
    strategy's own defaults."""
    return {keyword: getattr(args, attribute) for keyword, attribute in options.items()
            if getattr(args, attribute) not in (None, False)}


def _strategy_options(args: argparse.Namespace) -> dict:
    options = _given(args, arc_learning_rate="arc_lr", warmup_epochs="warmup_epochs", arch_estimator="arch_estimator",
                     arch_credit="arch_credit", weight_sampling="weight_sampling", size_budget_mb="size_budget_mb",
                     checkpoint_candidates="checkpoint_activations")
    if args.flops_budget_g is not None:
        options["flops_budget"] = args.flops_budget_g * 1e9
    if args.strategy == "gumbel-dnas":
        from nni_covid3d.strategies import TemperatureSchedule

        options["temperature"] = TemperatureSchedule(args.tau[0], args.tau[1], args.tau_schedule)
    elif args.strategy == "gumbel-darts":
        options["temperature"] = (float(args.tau[0]), float(args.tau[1]))
    return options


def run(args: argparse.Namespace) -> int:
    from nni_covid3d.data import Preprocessing, load_dataset, load_split, make_patient_split, save_split
    from nni_covid3d.data.loading import loader_settings
    from nni_covid3d.search import SearchData, run_search
    from nni_covid3d.training.checkpoint import CheckpointError
    from nni_covid3d.training.resume import ResumeError

    check_precision(args.precision, args.accelerator)  # before any data is read
    loader_settings(args.accelerator, args.workers, args.loader)
    if not args.root.is_dir():
        raise FileNotFoundError(f"dataset root {args.root} does not exist")
    index = load_dataset(args.dataset, args.root, task=args.task, skip_bad=args.skip_bad)
    if args.split_file is not None:
        split = load_split(args.split_file, index.scans)
    else:
        split = make_patient_split(index.scans, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                   seed=args.split_seed)
    args.out.mkdir(parents=True, exist_ok=True)
    if not (args.resume and (args.out / "split.json").is_file()):  # a refused resume keeps the run's split
        save_split(split, args.out / "split.json")
    preprocessing = Preprocessing(depth=args.depth, height=args.height, width=args.width, augment_on=args.augment_on)
    data = SearchData.from_split(split, index.class_names, preprocessing, cache_dir=args.cache_dir,
                                 progress=not args.no_progress)
    space_config = {"preset": args.preset, "in_channels": 1, "widths": args.widths, "n_cells": args.n_cells,
                    "head_channels": args.head_channels, "search_downsampling": args.search_downsampling}
    try:
        result = run_search(
            data, space_config, strategy=args.strategy, strategy_options=_strategy_options(args),
            epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, weight_decay=args.weight_decay,
            arch_fraction=args.arch_fraction, seed=args.seed, out_dir=args.out, resume=args.resume,
            accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes, workers=args.workers,
            loader=args.loader, channels_last=args.channels_last,
            precision=args.precision, progress=not args.no_progress,
            metadata={"dataset": args.dataset},
        )
    except (CheckpointError, ResumeError):
        raise  # they name the checkpoint
    except ValueError as error:
        raise UserError(str(error)) from error
    if result.architecture_path is None or not result.architecture_path.is_file():
        return 0  # not rank 0 of a DDP run
    print(f"architecture: {result.architecture_path}")
    if result.probabilities is not None:
        print(f"choice probabilities: {args.out / 'arch_probs.json'}")
    print(f"TensorBoard: {args.out / 'tensorboard'}")
    print(f"retrain: nni-covid3d retrain --arch {result.architecture_path} --dataset {args.dataset} "
          f"--root {args.root} --out RUN_DIR")
    return 0

"""``train``, ``retrain``, ``evaluate`` and ``compare``: one training/evaluation pipeline for every model.

    nni-covid3d train --model mc3_18 --dataset ccccii --root DATA --out runs/mc3
    nni-covid3d retrain --arch best_arch.json --dataset ccccii --root DATA --out runs/searched
    nni-covid3d evaluate --ckpt runs/mc3/checkpoints/best.ckpt --split test
    nni-covid3d compare --datasets ccccii mosmed --root ccccii=DATA1 --root mosmed=DATA2 \
        --models covidnet3d resnet3d101 densenet3d121 mc3_18 --arch best_arch.json --out runs/compare
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nni_covid3d.cli import UserError
from nni_covid3d.data import DATASETS
from nni_covid3d.models import MODEL_NAMES
from nni_covid3d.devices import add_device_arguments, add_loader_arguments
from nni_covid3d.precision import add_precision_argument



def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a model from scratch, select on val, test once")
    train.add_argument("--model", required=True, choices=MODEL_NAMES)
    train.add_argument("--arch", type=Path, help="architecture JSON (required for covidnet3d)")
    add_dataset_arguments(train)
    _train_args(train)
    train.set_defaults(func=run_train)

    retrain = subparsers.add_parser("retrain", help="retrain a searched architecture from scratch, test once")
    retrain.add_argument("--arch", type=Path, required=True, help="architecture JSON exported by the search")
    add_dataset_arguments(retrain)
    _train_args(retrain)
    retrain.set_defaults(func=run_train, model="covidnet3d")

    evaluate = subparsers.add_parser("evaluate", help="evaluate a checkpoint on a split recorded in it")
    evaluate.add_argument("--ckpt", type=Path, required=True, help="checkpoint written by train/retrain")
    evaluate.add_argument("--split", default="test", choices=("train", "val", "test"))
    evaluate.add_argument("--root", type=Path, help="dataset root, if moved since training")
    evaluate.add_argument("--out", type=Path, help="output folder (default: eval_<split> beside checkpoints/)")
    evaluate.add_argument("--batch-size", type=int, default=4)
    evaluate.add_argument("--no-progress", action="store_true")
    add_precision_argument(evaluate)
    evaluate.set_defaults(func=run_evaluate)

    compare = subparsers.add_parser("compare", help="train and test several models on several datasets; one table")
    compare.add_argument("--datasets", nargs="+", required=True, choices=DATASETS)
    compare.add_argument("--root", action="append", required=True, metavar="[DATASET=]DIR",
                         help="dataset root; repeat as DATASET=DIR for several datasets")
    compare.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    compare.add_argument("--cost-only", nargs="+", default=[], choices=MODEL_NAMES[1:],
                         help="baselines listed with size, FLOPs and latency only (not trained)")
    compare.add_argument("--split-file", action="append", default=[], metavar="[DATASET=]FILE",
                         help="reuse a patient split (e.g. the search's split.json)")
    compare.add_argument("--arch", action="append", default=[], metavar="[DATASET=]FILE",
                         help="architecture of covidnet3d (one for all datasets, or DATASET=FILE)")
    compare.add_argument("--task", help="MosMedData task: binary (default) or severity")
    compare.add_argument("--no-reported", action="store_true", help="leave out the papers' reported rows")
    compare.add_argument("--latency-threads", type=int, default=1, help="CPU threads for the latency figure")
    compare.add_argument("--out", type=Path, required=True)
    compare.add_argument("--cache-dir", type=Path)
    compare.add_argument("--split-seed", type=int, default=0)
    _preprocessing_args(compare, default_depth=32)
    _optim_args(compare)
    compare.set_defaults(func=run_compare)


def add_dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """The dataset, split, cache and output options shared by ``train``, ``retrain`` and ``search``."""
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--root", type=Path, required=True, help="dataset root in its public layout")
    parser.add_argument("--task", help="MosMedData task: binary (default) or severity")
    parser.add_argument("--split-file", type=Path, help="reuse a split (ours or the paper's JSON format)")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, help="cache preprocessed volumes here")
    parser.add_argument("--skip-bad", action="store_true", help="leave out unreadable scans (listed)")
    parser.add_argument("--out", type=Path, required=True, help="output folder")


def _preprocessing_args(parser: argparse.ArgumentParser, default_depth: int = 16) -> None:
    parser.add_argument("--depth", type=int, default=default_depth, help=f"slices per volume (default {default_depth})")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--no-augment", action="store_true", help="no train-time augmentation")


def _optim_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (paper: 1e-3)")
    parser.add_argument("--weight-decay", type=float, default=5e-4, help="Adam weight decay (paper: 5e-4)")
    parser.add_argument("--no-cosine", action="store_true", help="constant learning rate")
    parser.add_argument("--balance", choices=("none", "weights", "sampler"), default="none",
                        help="class-weighted loss or class-balanced sampling (e.g. MosMedData, 77%% COVID)")
    parser.add_argument("--monitor", choices=("val_acc", "val_bal_acc", "val_loss"), default="val_acc",
                        help="validation metric that selects the checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    add_device_arguments(parser)
    add_loader_arguments(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_args(parser: argparse.ArgumentParser) -> None:
    _preprocessing_args(parser)
    _optim_args(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from OUT/checkpoints/last.ckpt, also after a crash: the weights and scores are "
                             "the uninterrupted run's; refused if the data, split, model or settings differ")
    parser.add_argument("--no-test", action="store_true", help="train only; evaluate the test split later")


def _config(args: argparse.Namespace):
    from nni_covid3d.precision import check_precision
    from nni_covid3d.training.pipeline import TrainConfig

    check_precision(args.precision, args.accelerator)  # before any data is read
    return TrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, weight_decay=args.weight_decay,
        scheduler="none" if args.no_cosine else "cosine", balance=args.balance, monitor=args.monitor,
        seed=args.seed, num_workers=args.workers, loader=args.loader, channels_last=args.channels_last,
        accelerator=args.accelerator, devices=args.devices,
        num_nodes=args.num_nodes, progress=not args.no_progress, precision=args.precision,
    )


def _preprocessing(args: argparse.Namespace):
    from nni_covid3d.data import Preprocessing

    return Preprocessing(depth=args.depth, height=args.height, width=args.width, augment=not args.no_augment,
                         augment_on=args.augment_on)


def _summary(metrics: dict) -> str:
    covid = metrics.get("covid_vs_rest") or metrics["macro"]
    auc = covid.get("auc")
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    return (f"{metrics['split']} ({metrics['n']} scans): accuracy {fmt(metrics['accuracy'])}, "
            f"balanced accuracy {fmt(metrics['balanced_accuracy'])}, precision {fmt(covid['precision'])}, "
            f"sensitivity {fmt(covid['recall'])}, F1 {fmt(covid['f1'])}, AUC {'n/a' if auc is None else f'{auc:.3f}'}")


def run_train(args: argparse.Namespace) -> int:
    from nni_covid3d.training.experiment import DataSpec, train_on_dataset
    from nni_covid3d.training.pipeline import evaluate_checkpoint

    if args.model == "covidnet3d" and args.arch is None:
        raise UserError("--model covidnet3d needs --arch FILE (an exported architecture)")
    if args.model != "covidnet3d" and args.arch is not None:
        raise UserError(f"--arch only applies to covidnet3d, not {args.model}")
    if args.arch is not None and not args.arch.is_file():
        raise FileNotFoundError(f"architecture file {args.arch} does not exist")
    spec = DataSpec(args.dataset, args.root, task=args.task, split_file=args.split_file,
                    val_fraction=args.val_fraction, test_fraction=args.test_fraction, split_seed=args.split_seed,
                    cache_dir=args.cache_dir, skip_bad=args.skip_bad)
    config = _config(args)
    result = train_on_dataset(args.model, spec, args.out, preprocessing=_preprocessing(args), config=config,
                              arch=args.arch, resume=args.resume)
    print(f"selected checkpoint (best {config.monitor} = {result.best_score}): {result.best_checkpoint}")
    if args.no_test:
        print(f"test split not evaluated; run: nni-covid3d evaluate --ckpt {result.best_checkpoint} --split test")
        return 0
    metrics = evaluate_checkpoint(result.best_checkpoint, split="test", batch_size=config.batch_size,
                                  progress=config.progress)
    print(_summary(metrics))
    print(f"metrics, ROC and predictions: {Path(args.out) / 'eval_test'}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from nni_covid3d.precision import check_precision
    from nni_covid3d.training.pipeline import evaluate_checkpoint

    check_precision(args.precision)  # evaluate runs on the GPU when there is one
    metrics = evaluate_checkpoint(args.ckpt, split=args.split, out_dir=args.out, root=args.root,
                                  batch_size=args.batch_size, progress=not args.no_progress, precision=args.precision)
    print(_summary(metrics))
    print(json.dumps({"confusion_matrix": metrics["confusion_matrix"], "class_names": metrics["class_names"]}))
    return 0


def _keyed(values: list[str], datasets: list[str], what: str) -> dict[str, str]:
    """``["DIR"]`` (one dataset, or ``*``) or ``["name=DIR", ...]`` -> {dataset: DIR}."""
    mapping: dict[str, str] = {}
    for value in values:
        key, sep, path = value.partition("=")
        if sep and key in DATASETS:
            mapping[key] = path
        elif len(values) == 1:
            mapping["*"] = value
        else:
            raise UserError(f"several {what} given: write each as DATASET=PATH (got {value!r})")
    return mapping


def run_compare(args: argparse.Namespace) -> int:
    from nni_covid3d.compare import run_comparison

    roots = _keyed(args.root, args.datasets, "--root")
    if "*" in roots:
        if len(args.datasets) > 1:
            raise UserError("several datasets: give --root DATASET=DIR for each")
        roots = {args.datasets[0]: roots["*"]}
    missing = [d for d in args.datasets if d not in roots]
    if missing:
        raise UserError(f"no --root for {', '.join(missing)}")
    archs = _keyed(args.arch, args.datasets, "--arch") if args.arch else {}
    for path in archs.values():
        if not Path(path).is_file():
            raise FileNotFoundError(f"architecture file {path} does not exist")
    split_files = _keyed(args.split_file, args.datasets, "--split-file") if args.split_file else {}
    if "*" in split_files:
        if len(args.datasets) > 1:
            raise UserError("several datasets: give --split-file DATASET=FILE for each")
        split_files = {args.datasets[0]: split_files["*"]}
    result = run_comparison(
        {d: roots[d] for d in args.datasets}, args.models, args.out, archs=archs,
        preprocessing=_preprocessing(args), config=_config(args), task=args.task, cache_dir=args.cache_dir,
        split_seed=args.split_seed, include_reported=not args.no_reported, latency_threads=args.latency_threads,
        split_files=split_files, cost_only=args.cost_only,
    )
    print(result.markdown.read_text())
    print(f"table: {result.markdown} and {result.csv}")
    return 0

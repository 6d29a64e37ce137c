"""``nni-covid3d data``: dataset summaries and patient-level splits.

    nni-covid3d data summary --dataset ccccii --root DIR [--check full] [--skip-bad]
    nni-covid3d data split --dataset ccccii --root DIR --out split.json [--seed 0]
    nni-covid3d data split --dataset ccccii --root DIR --out split.json --import paper_test_split.json
    nni-covid3d data intensity-control --dataset ccccii --root DIR [--depth 16 --height 64 --width 64]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nni_covid3d.data import DATASETS



def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASETS, help="dataset layout")
    parser.add_argument("--root", required=True, type=Path, help="dataset root folder")
    parser.add_argument("--task", choices=("binary", "severity"), default=None, help="mosmed labels (default binary)")
    parser.add_argument(
        "--check", choices=("none", "header", "full"), default="header",
        help="header: open every file's header (default); full: decode every scan (finds truncated files, NaNs)",
    )
    parser.add_argument("--skip-bad", action="store_true", help="leave out bad scans (each is listed) instead of failing")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="dataset summaries and patient-level splits")
    commands = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)

    summary = commands.add_parser("summary", help="patients / scans / slices per class")
    _dataset_arguments(summary)
    summary.add_argument("--json", action="store_true", help="print the counts as JSON")
    summary.set_defaults(func=run_summary)

    split = commands.add_parser("split", help="write a patient-level stratified train/val/test split (JSON)")
    _dataset_arguments(split)
    split.add_argument("--out", required=True, type=Path, help="split JSON to write")
    split.add_argument("--val-fraction", type=float, default=0.15)
    split.add_argument("--test-fraction", type=float, default=0.2)
    split.add_argument("--seed", type=int, default=0)
    split.add_argument(
        "--import", dest="import_path", type=Path, default=None,
        help="convert a split file instead: this package's JSON or the paper's {class: {patient: {scan: [slices]}}}",
    )
    split.add_argument("--fold", type=int, default=None, help="covidctset fold layout: use the release's fold K (1-5)")
    split.set_defaults(func=run_split)

    control = commands.add_parser(
        "intensity-control",
        help="how well a classifier of each scan's intensity histogram alone does (patient-grouped CV): "
             "what a dataset gives away without any spatial information")
    _dataset_arguments(control)
    control.add_argument("--depth", type=int, default=16)
    control.add_argument("--height", type=int, default=64)
    control.add_argument("--width", type=int, default=64)
    control.add_argument("--folds", type=int, default=5)
    control.add_argument("--seed", type=int, default=0)
    control.add_argument("--json", action="store_true", help="print the result as JSON")
    control.set_defaults(func=run_intensity_control)


def _index(args: argparse.Namespace):
    from nni_covid3d.data import load_dataset

    return load_dataset(args.dataset, args.root, task=args.task, skip_bad=args.skip_bad, check=args.check)


def run_summary(args: argparse.Namespace) -> int:
    index = _index(args)
    if args.json:
        payload = {
            "dataset": index.name,
            "root": str(index.root),
            "task": index.task,
            "class_names": index.class_names,
            "counts": index.counts(),
            "skipped": [str(s) for s in index.skipped],
        }
        print(json.dumps(payload, indent=1))
    else:
        print(index.summary())
    return 0


def run_split(args: argparse.Namespace) -> int:
    from nni_covid3d.cli import UserError
    from nni_covid3d.data import load_split, make_patient_split, save_split, split_summary

    index = _index(args)
    if args.import_path is not None and args.fold is not None:
        raise UserError("--import and --fold are exclusive")
    if args.import_path is not None:
        split = load_split(args.import_path, index.scans, val_fraction=args.val_fraction, seed=args.seed)
    elif args.fold is not None:
        if args.dataset != "covidctset":
            raise UserError("--fold applies to the covidctset fold layout only")
        from nni_covid3d.data.covidctset import read_fold_split

        split = read_fold_split(index, args.fold)
    else:
        split = make_patient_split(index.scans, val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)
    save_split(split, args.out)
    print(split_summary(split, index.class_names))
    print(f"wrote {args.out}")
    return 0


def run_intensity_control(args: argparse.Namespace) -> int:
    from nni_covid3d.cli import UserError
    from nni_covid3d.data import Preprocessing
    from nni_covid3d.intensity_baseline import cross_validate, dataset_features

    index = _index(args)
    preprocessing = Preprocessing(depth=args.depth, height=args.height, width=args.width)
    features = dataset_features(index.scans, preprocessing)
    try:
        result = cross_validate(features, [s.label for s in index.scans], [s.patient_id for s in index.scans],
                                folds=args.folds, seed=args.seed)
    except ValueError as error:
        raise UserError(f"{args.root}: {error}") from error
    if args.json:
        print(json.dumps({"dataset": index.name, "root": str(index.root), "accuracy": result.accuracy,
                          "fold_accuracy": result.fold_accuracy, "balanced_accuracy": result.balanced_accuracy,
                          "majority_rate": result.majority_rate, "scans": result.n_scans,
                          "patients": result.n_patients}, indent=1))
    else:
        print(f"{index.name}: intensity-histogram classifier, {args.folds}-fold CV by patient "
              f"({result.n_scans} scans, {result.n_patients} patients): accuracy {result.accuracy:.3f} "
              f"(folds {', '.join(f'{a:.2f}' for a in result.fold_accuracy)}), balanced {result.balanced_accuracy:.3f}; "
              f"majority class {result.majority_rate:.3f}")
    return 0

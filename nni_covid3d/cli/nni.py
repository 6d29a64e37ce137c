"""``nni-covid3d report`` and ``nni-covid3d best-arch``: results of nnictl experiments.

Both read the experiment's database (``<experimentWorkingDirectory>/<ID>/db/nni.sqlite``), so
they work while the experiment runs and after ``nnictl stop``.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    report = subparsers.add_parser(
        "report", help="turn an nnictl experiment into a comparison table (Markdown or CSV)",
        description="Tabulate a finished nnictl experiment. Baseline grids (examples/nnictl/baselines_grid.yml) "
                    "give the model x dataset comparison table; other experiments give one row per trial.",
    )
    _experiment_args(report)
    report.add_argument("--out", type=Path, default=None, help="write the table here (.md or .csv); default stdout")
    report.add_argument("--format", choices=("md", "csv"), default=None,
                        help="table format (default: from --out's suffix, else md)")
    report.set_defaults(func=run_report)

    best = subparsers.add_parser(
        "best-arch", help="write the best trial's architecture of an nnictl experiment to a JSON file",
        description="Pick the succeeded trial with the best final result and write its architecture "
                    "(arch and dnas experiments), ready for `retrain --arch FILE`.",
    )
    _experiment_args(best)
    best.add_argument("--out", type=Path, required=True, help="architecture JSON file to write")
    best.add_argument("--metric", default="default", help="final-result key to rank trials by (default: default)")
    best.set_defaults(func=run_best_arch)


def _experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, metavar="ID", help="experiment id (as nnictl prints it)")
    parser.add_argument("--experiment-dir", type=Path, default=None,
                        help="the config's experimentWorkingDirectory, if not found through ~/nni-experiments")


def run_report(args: argparse.Namespace) -> int:
    from nni_covid3d.nni_report import TRIAL_COLUMNS, baseline_rows, format_table, load_experiment, trial_rows

    record = load_experiment(args.experiment, args.experiment_dir)
    fmt = args.format or ("csv" if args.out is not None and args.out.suffix.lower() == ".csv" else "md")
    if record.trial_mode == "baseline":
        text = format_table(baseline_rows(record), fmt)
    else:
        text = format_table(trial_rows(record), fmt, TRIAL_COLUMNS)
    if args.out is None:
        print(text, end="")
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out} ({len(record.trials)} trials of experiment {record.id})")
    return 0


def run_best_arch(args: argparse.Namespace) -> int:
    from nni_covid3d.nni_report import best_architecture, load_experiment
    from nni_covid3d.search_spaces import save_architecture

    record = load_experiment(args.experiment, args.experiment_dir)
    trial, arch = best_architecture(record, args.metric)
    save_architecture(arch, args.out)
    print(f"wrote {args.out}: trial {trial.id}, {args.metric} = {trial.final[args.metric]}, "
          f"parameters {json.dumps(trial.parameters)}")
    return 0

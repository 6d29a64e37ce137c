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
        "report", help="turn an nnictl experiment into a comparison table (Markdown and CSV)",
        description="Tabulate an nnictl experiment. A baseline grid (examples/nnictl/baselines_grid.yml) gives "
                    "the table of `nni-covid3d compare` (with the papers' reported rows); other experiments "
                    "give one row per trial. The Markdown table goes to stdout.",
    )
    _experiment_args(report)
    report.add_argument("--out-dir", type=Path, default=None,
                        help="also write <out-dir>/<stem>.md and <stem>.csv")
    report.add_argument("--stem", default="comparison", help="file name stem (default comparison)")
    report.add_argument("--no-reported", action="store_true", help="leave out the papers' reported rows")
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
    if record.trial_mode == "baseline":
        from nni_covid3d.compare import markdown_table, write_table

        rows = baseline_rows(record, include_reported=not args.no_reported)
        print(markdown_table(rows), end="")
        if args.out_dir is not None:
            md, csv_path = write_table(rows, args.out_dir, stem=args.stem)
            print(f"wrote {md} and {csv_path}")
        return 0
    rows = trial_rows(record)
    print(format_table(rows, "md", TRIAL_COLUMNS), end="")
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        md, csv_path = args.out_dir / f"{args.stem}.md", args.out_dir / f"{args.stem}.csv"
        md.write_text(format_table(rows, "md", TRIAL_COLUMNS))
        csv_path.write_text(format_table(rows, "csv", TRIAL_COLUMNS))
        print(f"wrote {md} and {csv_path}")
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

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


    run = subparsers.add_parser(
        "nnictl-run", help="run an nnictl config to completion (create, wait, stop), then show its trials",
        description="nnictl create --config CONFIG with NNI's working directory under --work-dir, wait until "
                    "every trial has ended (REST check-status), nnictl stop, print one row per trial; with "
                    "--best-arch, also write the best trial's architecture (arch and dnas configs).",
    )
    run.add_argument("--config", type=Path, required=True, help="an nnictl YAML config, e.g. examples/nnictl/arch_search.yml")
    run.add_argument("--work-dir", type=Path, required=True, help="folder for the runnable config copy and NNI's files")
    run.add_argument("--max-trials", type=int, default=None, help="override maxTrialNumber")
    run.add_argument("--trial-args", default="", help="arguments appended to the trial command, e.g. '--epochs 1'")
    run.add_argument("--port", type=int, default=None, help="web UI / REST port (default: a free one)")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the trials (default 3600)")
    run.add_argument("--best-arch", type=Path, default=None, help="write the best trial's architecture here")
    run.set_defaults(func=run_nnictl)


def _experiment_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--experiment", required=True, metavar="ID", help="experiment id (as nnictl prints it)")
    parser.add_argument("--experiment-dir", type=Path, default=None,
                        help="the config's experimentWorkingDirectory, if not found through ~/nni-experiments")


def run_report(args: argparse.Namespace) -> int:
    from nni_covid3d.nnictl.records import TRIAL_COLUMNS, baseline_rows, format_table, load_experiment, trial_rows

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
    from nni_covid3d.nnictl.records import best_architecture, load_experiment
    from nni_covid3d.search_spaces import save_architecture

    record = load_experiment(args.experiment, args.experiment_dir)
    trial, arch = best_architecture(record, args.metric)
    save_architecture(arch, args.out)
    print(f"wrote {args.out}: trial {trial.id}, {args.metric} = {trial.final[args.metric]}, "
          f"parameters {json.dumps(trial.parameters)}")
    return 0


def run_nnictl(args: argparse.Namespace) -> int:
    from nni_covid3d.nnictl.records import TRIAL_COLUMNS, best_architecture, format_table, load_experiment, trial_rows
    from nni_covid3d.nnictl.run import run_config

    if not args.config.is_file():
        raise FileNotFoundError(f"nnictl config {args.config} does not exist")
    experiment_id, _ = run_config(args.config, args.work_dir, max_trials=args.max_trials,
                                  extra_trial_args=args.trial_args, port=args.port, timeout=args.timeout)
    record = load_experiment(experiment_id, args.work_dir / "nni-experiments")
    print(f"experiment {experiment_id} (stopped; files in {record.directory})")
    print(format_table(trial_rows(record), "md", TRIAL_COLUMNS), end="")
    if args.best_arch is not None:
        from nni_covid3d.search_spaces import save_architecture

        trial, arch = best_architecture(record)
        save_architecture(arch, args.best_arch)
        print(f"wrote {args.best_arch}: trial {trial.id}, default = {trial.final['default']}")
    failed = [t.id for t in record.trials if t.status != "SUCCEEDED"]
    if failed:
        print(f"trials not succeeded: {', '.join(failed)} (their trial.stderr is in the trial folders)")
    return 1 if failed else 0

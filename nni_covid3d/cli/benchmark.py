"""``benchmark``: the fair comparison of searched, random and human-designed models, with controls.

    nni-covid3d benchmark --dataset ccccii --root DATA --seeds 3 --out runs/bench

Writes ``OUT/benchmark.md`` / ``.csv`` / ``.png`` / ``.json`` (see ``nni_covid3d.benchmark``); a
stopped run continues where it stopped when started again with the same ``--out``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from nni_covid3d.cli import UserError
from nni_covid3d.data import DATASETS
from nni_covid3d.precision import add_precision_argument


def register(subparsers: argparse._SubParsersAction) -> None:
    from nni_covid3d.benchmark import NNI_STRATEGIES, BenchmarkSettings

    defaults = BenchmarkSettings  # class attributes: the defaults, without importing torch for --help
    p = subparsers.add_parser("benchmark", help="searched vs size-matched random architectures vs NNI strategies vs "
                                                "baselines vs an intensity-histogram control, with bootstrap intervals")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", type=Path, required=True, help="dataset root in its public layout")
    p.add_argument("--task", help="MosMedData task: binary (default) or severity")
    p.add_argument("--out", type=Path, required=True, help="output folder (reused to resume)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=defaults.seeds)
    p.add_argument("--random-archs", type=int, default=defaults.random_archs, help="K random architectures per seed")
    p.add_argument("--size-tolerance", type=float, default=defaults.size_tolerance,
                   help="random architectures' parameters within this fraction of the searched model's")
    p.add_argument("--strategies", nargs="*", choices=NNI_STRATEGIES, default=list(defaults.strategies),
                   help="NNI one-shot strategies run beside GumbelDNAS (none: pass the flag alone)")
    p.add_argument("--baselines", nargs="*", default=list(defaults.baselines),
                   help="mc3_18, densenet3d121, resnet3d101 (none: pass the flag alone)")
    p.add_argument("--preset", choices=("S", "L"), default="S")
    p.add_argument("--widths", type=int, nargs=6, metavar="W", help="stage widths (default: the preset's)")
    p.add_argument("--n-cells", type=int, nargs=6, metavar="N", help="cells per stage (default: the preset's)")
    p.add_argument("--head-channels", type=int)
    p.add_argument("--search-epochs", type=int, default=defaults.search_epochs)
    p.add_argument("--retrain-epochs", type=int, default=defaults.retrain_epochs)
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--lr", type=float, default=defaults.learning_rate, help="Adam learning rate of every model")
    p.add_argument("--size", type=int, nargs=3, metavar=("D", "H", "W"),
                   default=(defaults.depth, defaults.height, defaults.width), help="input volume size")
    p.add_argument("--bootstrap", type=int, default=defaults.bootstrap, help="resamples of the test patients")
    p.add_argument("--accelerator", default=defaults.accelerator, help="cpu, gpu or auto")
    add_precision_argument(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nni_covid3d.benchmark import BenchmarkSettings, run_benchmark

    if not args.root.is_dir():
        raise FileNotFoundError(f"dataset root {args.root} does not exist")
    space = {"preset": args.preset, **{key: value for key, value in (
        ("widths", args.widths), ("n_cells", args.n_cells), ("head_channels", args.head_channels)) if value is not None}}
    try:
        settings = BenchmarkSettings(
            seeds=args.seeds, random_archs=args.random_archs, size_tolerance=args.size_tolerance,
            strategies=tuple(args.strategies), baselines=tuple(args.baselines), space_config=space,
            search_epochs=args.search_epochs, retrain_epochs=args.retrain_epochs, batch_size=args.batch_size,
            learning_rate=args.lr, depth=args.size[0], height=args.size[1], width=args.size[2],
            bootstrap=args.bootstrap, accelerator=args.accelerator, precision=args.precision,
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    result = run_benchmark(args.dataset, args.root, args.out, settings, task=args.task, split_seed=args.split_seed)
    print((args.out / "benchmark.md").read_text())
    print(f"written: {args.out / 'benchmark.md'}, .csv, .png, .json; {result['context']['models_trained_now']} "
          f"model(s) trained in this run")
    return 0

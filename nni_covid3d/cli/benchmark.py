"""``benchmark``: the fair comparison of searched, random and human-designed models, with controls.

    nni-covid3d benchmark --dataset ccccii --root DATA --seeds 3 --out runs/bench
    nni-covid3d benchmark --pool --dataset ccccii --root DATA --test-root TEST --out runs/pool

Writes ``OUT/benchmark.md`` / ``.csv`` / ``.png`` / ``.json`` (see ``nni_covid3d.benchmark``), or with
``--pool`` the random-pool protocol's ``OUT/pool.md`` / ``.json`` and plots (``nni_covid3d.pool``); a
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

    from nni_covid3d.pool import PoolSettings

    defaults = BenchmarkSettings  # class attributes: the defaults, without importing torch for --help
    pool = PoolSettings
    p = subparsers.add_parser("benchmark", help="searched vs size-matched random architectures vs NNI strategies vs "
                                                "baselines vs an intensity-histogram control, with bootstrap intervals")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--root", type=Path, required=True, help="dataset root in its public layout")
    p.add_argument("--task", help="MosMedData task: binary (default) or severity")
    p.add_argument("--test-root", type=Path,
                   help="a separate test cohort in the same layout (e.g. synth --seed 1): every model is tested on all "
                        "of it, and --root gives train and validation patients only")
    p.add_argument("--out", type=Path, required=True, help="output folder (reused to resume)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--pool", action="store_true",
                   help="the random-pool protocol (needs --test-root): one pool of --random-archs architectures trained "
                        "once, --seeds GumbelDNAS searches and --strategy-seeds of each NNI strategy compared with it, "
                        "ranking correlations (nni_covid3d.pool)")
    p.add_argument("--seeds", type=int, help=f"search seeds (default {defaults.seeds}; {pool.seeds} with --pool)")
    p.add_argument("--random-archs", type=int, help=f"K random architectures per seed (default {defaults.random_archs}); "
                                                     f"with --pool the pool's size (default {pool.random_archs})")
    p.add_argument("--variant", action="append", default=[], metavar="OPTION=VALUE[,OPTION=VALUE]",
                   help="--pool: a GumbelDNAS setting compared beside its defaults with --seeds searches, e.g. "
                        "arch_credit=choice (repeat for several variants)")
    p.add_argument("--strategy-seeds", type=int, default=pool.strategy_seeds, help="--pool: search seeds of each NNI strategy")
    p.add_argument("--training-seeds", type=int, default=pool.training_seeds,
                   help="--pool: training seeds of every searched export and of the first third of the pool")
    p.add_argument("--size-tolerance", type=float, default=defaults.size_tolerance,
                   help="random architectures' parameters within this fraction of the searched model's")
    p.add_argument("--strategies", nargs="*", choices=NNI_STRATEGIES,
                   help=f"NNI one-shot strategies run beside GumbelDNAS (none: pass the flag alone; default "
                        f"{' '.join(defaults.strategies)}; with --pool {' '.join(pool.strategies)})")
    p.add_argument("--baselines", nargs="*",
                   help=f"mc3_18, densenet3d121, resnet3d101 (none: pass the flag alone; default "
                        f"{' '.join(defaults.baselines)}; none with --pool)")
    p.add_argument("--preset", choices=("S", "L"), default="S")
    p.add_argument("--widths", type=int, nargs=6, metavar="W", help="stage widths (default: the preset's)")
    p.add_argument("--n-cells", type=int, nargs=6, metavar="N", help="cells per stage (default: the preset's)")
    p.add_argument("--head-channels", type=int)
    p.add_argument("--search-epochs", type=int, help=f"default {defaults.search_epochs}; {pool.search_epochs} with --pool")
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
    from nni_covid3d.pool import PoolSettings, parse_variant, run_pool_benchmark

    for root in (args.root, args.test_root):
        if root is not None and not root.is_dir():
            raise UserError(f"dataset root {root} does not exist")
    if args.variant and not args.pool:
        raise UserError("--variant applies to --pool only")
    if args.pool and args.test_root is None:
        raise UserError("--pool needs --test-root, a separate test cohort (e.g. nni-covid3d synth --seed 1)")
    space = {"preset": args.preset, **{key: value for key, value in (
        ("widths", args.widths), ("n_cells", args.n_cells), ("head_channels", args.head_channels)) if value is not None}}
    given = {key: value for key, value in (
        ("seeds", args.seeds), ("random_archs", args.random_archs), ("search_epochs", args.search_epochs),
        ("strategies", None if args.strategies is None else tuple(args.strategies)),
        ("baselines", None if args.baselines is None else tuple(args.baselines))) if value is not None}
    recipe = dict(size_tolerance=args.size_tolerance, space_config=space, retrain_epochs=args.retrain_epochs,
                  batch_size=args.batch_size, learning_rate=args.lr, depth=args.size[0], height=args.size[1],
                  width=args.size[2], bootstrap=args.bootstrap, accelerator=args.accelerator, precision=args.precision)
    try:
        if args.pool:
            settings = PoolSettings(**given, **recipe, strategy_seeds=args.strategy_seeds,
                                    training_seeds=args.training_seeds,
                                    variants=tuple(parse_variant(text) for text in args.variant))
        else:
            settings = BenchmarkSettings(**given, **recipe)
        if args.pool:
            summary = run_pool_benchmark(args.dataset, args.root, args.test_root, args.out, settings, task=args.task,
                                         split_seed=args.split_seed)
            print((args.out / "pool.md").read_text())
            print(f"written: {args.out / 'pool.md'}, pool.json, runs.csv, pool_accuracy.png, pool_ranking.png; "
                  f"{summary['context']['models_trained_now']} model(s) trained in this run")
            return 0
        result = run_benchmark(args.dataset, args.root, args.out, settings, task=args.task, test_root=args.test_root,
                               split_seed=args.split_seed)
    except ValueError as error:
        raise UserError(str(error)) from None
    print((args.out / "benchmark.md").read_text())
    print(f"written: {args.out / 'benchmark.md'}, .csv, .png, .json; {result['context']['models_trained_now']} "
          f"model(s) trained in this run")
    return 0

"""``nni-covid3d arch``: inspect, sample and describe CovidNet3D architectures.

- ``arch show FILE [--input-size C D H W] [--json]``: the chosen op per layer, parameters, MB, FLOPs;
- ``arch random --preset S --seed N [--out FILE] [--search-downsampling]``: a random valid architecture;
- ``arch searchspace --preset S --out FILE``: (re)generate the nnictl search-space JSON of a preset.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("arch", help="show, sample and export CovidNet3D architectures")
    commands = parser.add_subparsers(dest="arch_command", metavar="ARCH_COMMAND", required=True)

    show = commands.add_parser("show", help="print an architecture file's choices, parameters, MB and FLOPs")
    show.add_argument("file", type=Path, help="architecture JSON file")
    show.add_argument(
        "--input-size", type=int, nargs=4, default=(1, 16, 64, 64), metavar=("C", "D", "H", "W"),
        help="input for the FLOPs count (default: 1 16 64 64)",
    )
    show.add_argument("--json", action="store_true", help="print a JSON report")
    show.set_defaults(func=run_show)

    random = commands.add_parser("random", help="sample a random valid architecture")
    _add_space_arguments(random)
    random.add_argument("--seed", type=int, default=0)
    random.add_argument("--out", type=Path, help="write the architecture here (default: print it)")
    random.set_defaults(func=run_random)

    searchspace = commands.add_parser("searchspace", help="write the nnictl search-space JSON of a space")
    _add_space_arguments(searchspace)
    searchspace.add_argument("--out", type=Path, required=True, help="output JSON file")
    searchspace.set_defaults(func=run_searchspace)


def _add_space_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=("S", "L"), default="S", help="stage widths (default: S)")
    parser.add_argument("--num-classes", type=int, default=3)
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--no-search-depth", action="store_true", help="leave out the per-stage depth choices")
    parser.add_argument(
        "--search-downsampling", action="store_true",
        help="add the 2x2x2 / 1x2x2 downsampling choice per stride-2 stage (single-path strategies only)",
    )


def _space_config(args: argparse.Namespace) -> dict:
    from nni_covid3d.search_spaces.covidnet3d import normalize_config

    return normalize_config(
        dict(
            preset=args.preset,
            num_classes=args.num_classes,
            in_channels=args.in_channels,
            search_depth=not args.no_search_depth,
            search_downsampling=args.search_downsampling,
        )
    )


def run_show(args: argparse.Namespace) -> int:
    from nni_covid3d.search_spaces import build_model, load_architecture, model_cost

    arch = load_architecture(args.file)
    cost = model_cost(build_model(arch), args.input_size)
    if args.json:
        print(json.dumps({"file": str(args.file), "choices": arch["choices"], "cost": cost.to_dict()}, indent=2))
        return 0
    config = arch["space"]
    print(f"{args.file}: CovidNet3D-{config['preset']} (widths {config['widths']}), {config['num_classes']} classes")
    for line in describe_layers(arch):
        print(f"  {line}")
    print(f"  cost: {cost}")
    return 0


def describe_layers(arch: dict) -> list[str]:
    """One line per stage: its downsampling, the cells it keeps and their operations."""
    config, choices = arch["space"], arch["choices"]
    lines = []
    for i, (width, n_cells, stride) in enumerate(zip(config["widths"], config["n_cells"], config["strides"]), start=1):
        depth = choices[f"s{i}_depth"][0] + 1 if f"s{i}_depth" in choices else n_cells
        down = choices.get(f"s{i}_down", "2x2x2" if stride == 2 else "1x1x1")
        ops = [choices[f"s{i}_c{j}"] for j in range(1, depth + 1)]
        dropped = ""
        if depth < n_cells:
            dropped = f" (cell {n_cells} dropped)" if depth + 1 == n_cells else f" (cells {depth + 1}-{n_cells} dropped)"
        lines.append(f"stage {i}: {width} ch, stride {down}, {depth}/{n_cells} cells{dropped}: " + ", ".join(ops))
    return lines


def run_random(args: argparse.Namespace) -> int:
    from nni_covid3d.search_spaces import random_architecture, save_architecture

    arch = random_architecture(_space_config(args), args.seed)
    if args.out is None:
        json.dump(arch, sys.stdout, indent=2)
        print()
    else:
        save_architecture(arch, args.out)
        print(f"wrote {args.out}")
    return 0


def run_searchspace(args: argparse.Namespace) -> int:
    from nni_covid3d.search_spaces import hpo_search_space, hpo_search_space_json

    config = _space_config(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(hpo_search_space_json(config), encoding="utf-8")
    print(f"wrote {args.out} ({len(hpo_search_space(config))} choices)")
    return 0

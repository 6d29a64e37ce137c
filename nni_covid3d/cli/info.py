"""``nni-covid3d info``: versions of the stack, whether nnictl runs, whether a GPU is visible."""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

from nni_covid3d._version import __version__

_DISTRIBUTIONS = {
    "nni": "nni",
    "torch": "torch",
    "torchvision": "torchvision",
    "monai": "monai",
    "lightning": "pytorch-lightning",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="show versions, nnictl availability and GPU visibility")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def find_nnictl() -> str | None:
    """The ``nnictl`` next to this interpreter (the venv's), else the first on PATH."""
    beside = Path(sys.executable).with_name("nnictl")
    if beside.exists():
        return str(beside)
    return shutil.which("nnictl")


def nnictl_version() -> str | None:
    """``nnictl --version`` output, or ``None`` when nnictl is missing or fails."""
    nnictl = find_nnictl()
    if nnictl is None:
        return None
    try:
        done = subprocess.run([nnictl, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def collect() -> dict:
    """Everything ``info`` reports, as a JSON-serialisable dict."""
    versions = {}
    for name, distribution in _DISTRIBUTIONS.items():
        try:
            versions[name] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "nni-covid3d": __version__,
        "python": sys.version.split()[0],
        "versions": versions,
        "nnictl": nnictl_version(),
        "gpu": {"available": bool(gpus), "devices": gpus},
    }


def run(args: argparse.Namespace) -> int:
    report = collect()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"nni-covid3d {report['nni-covid3d']} (python {report['python']})")
    for name, version in report["versions"].items():
        print(f"  {name:<12} {version or 'NOT INSTALLED'}")
    print(f"  {'nnictl':<12} {report['nnictl'] or 'not runnable'}")
    gpu = report["gpu"]
    print(f"  {'gpu':<12} {', '.join(gpu['devices']) if gpu['available'] else 'none visible (CPU only)'}")
    return 0

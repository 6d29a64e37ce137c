"""Class names per dataset and task (index = label), known without reading any data."""
from __future__ import annotations

__all__ = ["class_names_for", "MOSMED_TASKS"]

MOSMED_TASKS = ("binary", "severity")


def class_names_for(dataset: str, task: str | None = None) -> list[str]:
    """``ccccii``: CP, NCP, Normal (the paper's order); ``mosmed``: Normal, NCP (binary, default) or
    CT-0..CT-4 (severity); ``covidctset``: Normal, COVID."""
    key = dataset.lower().replace("-", "").replace("_", "")
    if key == "ccccii":
        return ["CP", "NCP", "Normal"]
    if key == "mosmed":
        task = task or "binary"
        if task not in MOSMED_TASKS:
            raise ValueError(f"unknown mosmed task {task!r}; expected one of {MOSMED_TASKS}")
        return ["Normal", "NCP"] if task == "binary" else [f"CT-{k}" for k in range(5)]
    if key == "covidctset":
        return ["Normal", "COVID"]
    raise ValueError(f"unknown dataset {dataset!r}; expected ccccii, mosmed or covidctset")

"""Class names per dataset and task (index = label), known without reading any data."""
from __future__ import annotations

from typing import Sequence

__all__ = ["class_names_for", "covid_class_index", "COVID_NAMES", "MOSMED_TASKS"]

MOSMED_TASKS = ("binary", "severity")
#: Class names that mean COVID-19 in the three datasets' label sets (case-insensitive).
COVID_NAMES = ("ncp", "covid", "covid-19", "covid19", "covid_19")


def covid_class_index(class_names: Sequence[str]) -> int | None:
    """Index of the COVID-19 class in ``class_names`` (NCP, COVID, ...), or ``None``."""
    for index, name in enumerate(class_names):
        if name.strip().lower() in COVID_NAMES:
            return index
    return None


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

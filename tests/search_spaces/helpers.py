"""Helpers shared by the search-space tests."""
from __future__ import annotations


def all_choices(space_or_config, op: str, depth: str = "max", down: str = "2x2x2") -> dict:
    """Every cell set to ``op``, every depth choice to its largest (``"max"``) or smallest value."""
    from nni.mutable import CategoricalMultiple

    from nni_covid3d.search_spaces import choice_domains

    choices = {}
    for label, domain in choice_domains(space_or_config).items():
        if isinstance(domain, CategoricalMultiple):
            values = list(domain.values)
            choices[label] = [values[-1] if depth == "max" else values[0]]
        elif label.endswith("_down"):
            choices[label] = down
        else:
            choices[label] = op
    return choices

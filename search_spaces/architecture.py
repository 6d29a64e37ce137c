"""Fixed architectures of the CovidNet3D space: export, validation, files, rebuilding, nnictl mapping.

An architecture file is JSON::

    {
      "format_version": 1,
      "space": {... CovidNet3DSpace constructor config ...},
      "choices": {"s1_depth": [3], "s1_c1": "mbconv_k3_e4", ..., "s6_c1": "skip"},
      "metadata": {...}            # optional, free-form (strategy, metrics, ...)
    }

``choices`` holds NNI sample values: operation names for LayerChoices, a one-element list of the
chosen index for InputChoices (``s{i}_depth``).

The nnictl (HPO) search space lists every label as ``{"_type": "choice", "_value": [...]}`` with the
same values, except that an InputChoice is given by its index (``2`` instead of ``[2]``), since HPO
tuners draw scalars; :func:`choices_from_hpo` maps a tuner's parameters back.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from nni.mutable import Categorical, CategoricalMultiple

from nni_covid3d.atomic import atomic_write_text

from .covidnet3d import CovidNet3DSpace, normalize_config

__all__ = [
    "FORMAT_VERSION",
    "ArchitectureError",
    "build_model",
    "choice_domains",
    "choices_from_hpo",
    "export_architecture",
    "hpo_search_space",
    "hpo_search_space_json",
    "load_architecture",
    "random_architecture",
    "save_architecture",
    "validate_architecture",
]

FORMAT_VERSION = 1


class ArchitectureError(ValueError):
    """An architecture (dict or file) that does not describe a model of its space."""


def _config_key(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


@functools.lru_cache(maxsize=16)
def _domains_for(config_key: str) -> dict[str, Categorical | CategoricalMultiple]:
    # Built on the meta device: only the choices are needed, not the (possibly large) weights.
    with torch.device("meta"):
        space = CovidNet3DSpace(**json.loads(config_key))
    return dict(space.simplify())


def choice_domains(space_or_config: CovidNet3DSpace | Mapping[str, Any]) -> dict[str, Categorical | CategoricalMultiple]:
    """``{label: NNI mutable}`` for every choice of the space, in construction order."""
    config = _resolve_config(space_or_config)
    return dict(_domains_for(_config_key(config)))


def _resolve_config(space_or_config: CovidNet3DSpace | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(space_or_config, CovidNet3DSpace):
        return space_or_config.config
    if not isinstance(space_or_config, Mapping):
        raise ArchitectureError(f"expected a CovidNet3DSpace or a config dict, got {type(space_or_config).__name__}")
    try:
        return normalize_config(dict(space_or_config))
    except ValueError as error:
        raise ArchitectureError(str(error)) from None


def _plain(value: Any) -> Any:
    """NNI samples may hold numpy scalars; make them JSON values."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_choices(config: dict[str, Any], choices: Any, where: str) -> dict[str, Any]:
    if not isinstance(choices, Mapping):
        raise ArchitectureError(f"{where}: 'choices' must be an object of label -> value, got {type(choices).__name__}")
    domains = choice_domains(config)
    unknown = [label for label in choices if label not in domains]
    if unknown:
        raise ArchitectureError(f"{where}: unknown label(s) {unknown}; the space's labels are {list(domains)}")
    missing = [label for label in domains if label not in choices]
    if missing:
        raise ArchitectureError(f"{where}: missing label(s) {missing}")
    checked = {}
    for label, domain in domains.items():
        value = _plain(choices[label])
        if isinstance(domain, CategoricalMultiple):
            if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], int) or isinstance(value[0], bool):
                raise ArchitectureError(
                    f"{where}: {label!r} is an input choice; its value must be a one-element list like [0], got {value!r}"
                )
            if value[0] not in domain.values:
                raise ArchitectureError(f"{where}: {label!r} = {value!r} is out of range; choose one of {list(domain.values)}")
        elif value not in domain.values or isinstance(value, (list, dict)):
            raise ArchitectureError(f"{where}: {label!r} = {value!r} is not one of {list(domain.values)}")
        checked[label] = value
    return checked


def validate_architecture(
    arch: Any, space_or_config: CovidNet3DSpace | Mapping[str, Any] | None = None, *, source: str | Path | None = None
) -> dict[str, Any]:
    """Check an architecture dict and return it normalised; raise :class:`ArchitectureError` otherwise.

    With ``space_or_config``, the architecture's space config must equal it. ``source`` (a file name)
    prefixes the messages.
    """
    where = str(source) if source is not None else "architecture"
    if not isinstance(arch, Mapping):
        raise ArchitectureError(f"{where}: expected a JSON object, got {type(arch).__name__}")
    version = arch.get("format_version")
    if version != FORMAT_VERSION:
        raise ArchitectureError(f"{where}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    extra = sorted(set(arch) - {"format_version", "space", "choices", "metadata"})
    if extra:
        raise ArchitectureError(f"{where}: unknown key(s) {extra}")
    if not isinstance(arch.get("space"), Mapping):
        raise ArchitectureError(f"{where}: 'space' must be an object holding the space's constructor config")
    try:
        config = normalize_config(dict(arch["space"]))
    except ValueError as error:
        raise ArchitectureError(f"{where}: {error}") from None
    if space_or_config is not None:
        expected = _resolve_config(space_or_config)
        differing = sorted(key for key in expected if expected[key] != config.get(key))
        if differing:
            details = ", ".join(f"{key}: file {config.get(key)!r} vs space {expected[key]!r}" for key in differing)
            raise ArchitectureError(f"{where}: the space config does not match ({details})")
    choices = _check_choices(config, arch.get("choices"), where)
    result = {"format_version": FORMAT_VERSION, "space": config, "choices": choices}
    if "metadata" in arch:
        result["metadata"] = arch["metadata"]
    return result


def export_architecture(
    space_or_config: CovidNet3DSpace | Mapping[str, Any], sample: Any, *, metadata: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """An architecture dict for ``sample`` in the given space (validated).

    ``sample`` may be a ``{label: value}`` dict (``strategy.export()``, ``exp.export_top_models(formatter='dict')[0]``),
    a frozen NNI executable model (anything with a ``.sample``), or an architecture dict (``{"choices": ...}``).
    """
    if hasattr(sample, "sample") and not isinstance(sample, Mapping):
        sample = sample.sample
    if isinstance(sample, Mapping) and "choices" in sample and "format_version" in sample:
        sample = sample["choices"]
    if not isinstance(sample, Mapping):
        raise ArchitectureError(f"cannot export a sample of type {type(sample).__name__}")
    config = _resolve_config(space_or_config)
    arch: dict[str, Any] = {"format_version": FORMAT_VERSION, "space": config, "choices": dict(sample)}
    if metadata:
        arch["metadata"] = dict(metadata)
    return validate_architecture(arch)


def save_architecture(arch: Mapping[str, Any], path: str | Path) -> Path:
    """Validate and write ``arch`` as indented JSON (atomically); returns the path."""
    arch = validate_architecture(arch)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(arch, indent=2) + "\n")
    return path


def load_architecture(path: str | Path, space_or_config: CovidNet3DSpace | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read and validate an architecture file (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"architecture file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ArchitectureError(f"{path}: not valid JSON ({error})") from None
    return validate_architecture(data, space_or_config, source=path)


def build_model(arch: Mapping[str, Any] | str | Path) -> nn.Module:
    """The fixed PyTorch model of an architecture (dict or file): ``[N, C, D, H, W]`` -> ``[N, num_classes]``.

    Built by re-running the space's constructor under :func:`nni.nas.space.model_context`, so every
    choice becomes its chosen module; the result holds no NNI mutables.
    """
    from nni.nas.space import model_context

    arch = load_architecture(arch) if isinstance(arch, (str, Path)) else validate_architecture(arch)
    with model_context(arch["choices"]):
        return CovidNet3DSpace(**arch["space"])


def random_architecture(space_or_config: CovidNet3DSpace | Mapping[str, Any], seed: int) -> dict[str, Any]:
    """A uniformly random architecture of the space (reproducible by ``seed``)."""
    random_state = np.random.RandomState(seed)
    sample: dict[str, Any] = {}
    for label, domain in choice_domains(space_or_config).items():
        sample[label] = _plain(domain.random(sample, random_state))
    return export_architecture(space_or_config, sample, metadata={"source": f"random, seed {seed}"})


def hpo_search_space(space_or_config: CovidNet3DSpace | Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The nnictl search space (``{label: {"_type": "choice", "_value": [...]}}``) of the space."""
    result = {}
    for label, domain in choice_domains(space_or_config).items():
        result[label] = {"_type": "choice", "_value": [_plain(v) for v in domain.values]}
    return result


def hpo_search_space_json(space_or_config: CovidNet3DSpace | Mapping[str, Any]) -> str:
    """:func:`hpo_search_space` as the text of the committed files: one label per line."""
    lines = [f"  {json.dumps(label)}: {json.dumps(entry)}" for label, entry in hpo_search_space(space_or_config).items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def choices_from_hpo(space_or_config: CovidNet3DSpace | Mapping[str, Any], parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Map an HPO tuner's parameters (``nni.get_next_parameter()``) to architecture choices."""
    domains = choice_domains(space_or_config)
    choices = {}
    for label, value in parameters.items():
        value = _plain(value)
        if isinstance(domains.get(label), CategoricalMultiple) and not isinstance(value, list):
            value = [value]
        choices[label] = value
    return choices

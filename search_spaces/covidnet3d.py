"""The CovidNet3D search space (He et al., AAAI 2021) written with NNI 3.0 primitives.

Layout (``[N, C, D, H, W]`` throughout)::

    stem      Conv3d 3x3x3 stride 2 -> 32 ch, BN, ReLU6
    block     fixed MBConv k3 e1 -> 16 ch
    stages    six stages of [4, 4, 4, 4, 4, 1] cells, strides [2, 2, 2, 1, 2, 1]
              cell = 1x1x1 calibration conv (width change, stride)
                     -> LayerChoice over MBConv k3e3 k3e4 k3e6 k5e3 k5e4 k7e3 k7e4 and one skip
                     (+ identity residual when stride 1 and widths match)
    head      1x1x1 conv -> 1280, BN, ReLU6, global average pool, dropout, linear

Choices and their labels (stages and cells count from 1):

``s{i}_c{j}`` (LayerChoice)
    operation of cell j of stage i, by name (``"mbconv_k5_e3"``, ``"skip"``).
``s{i}_depth`` (InputChoice, ``search_depth=True``)
    which cell's output leaves stage i: value ``[k]`` keeps cells 1..k+1. All candidates have one shape,
    so weighted-sum strategies (DARTS, GumbelDARTS) can mix them.
``s{i}_down`` (LayerChoice, ``search_downsampling=True``, stride-2 stages only)
    ``"2x2x2"`` (isotropic) or ``"1x2x2"`` (in-plane only, keeps slices). The two candidates give
    different shapes downstream, so only single-path strategies can search them; see
    :func:`validate_for_strategy`.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from nni.nas.nn.pytorch import ChosenInputs, InputChoice, LayerChoice, ModelSpace, MutableModule

from .ops import (
    DEFAULT_CANDIDATES,
    Calibration3d,
    ConvBNReLU6,
    MBConv3d,
    StridedCalibration3d,
    make_candidate,
    parse_candidate,
)

__all__ = [
    "DOWNSAMPLING_CANDIDATES",
    "PRESETS",
    "CovidNet3DSpace",
    "UnsupportedStrategyError",
    "is_weighted_sum_strategy",
    "validate_for_strategy",
]

#: Stage widths of the paper's two model sizes.
PRESETS: dict[str, tuple[int, ...]] = {
    "S": (24, 40, 80, 96, 192, 320),
    "L": (32, 64, 128, 256, 512, 1024),
}

#: Strides of the searchable downsampling choice, by candidate name.
DOWNSAMPLING_CANDIDATES: dict[str, tuple[int, int, int]] = {
    "2x2x2": (2, 2, 2),
    "1x2x2": (1, 2, 2),
}


class UnsupportedStrategyError(ValueError):
    """A search strategy cannot search this space as configured."""


class CovidNet3DCell(nn.Module):
    """Calibration conv, then one searchable operation, plus a residual where shapes allow.

    ``[N, C_in, D, H, W] -> [N, C_out, D/s, H/s, W/s]``.
    """

    def __init__(
        self,
        label: str,
        in_channels: int,
        out_channels: int,
        stride: int,
        candidates: Sequence[str],
        down_label: str | None = None,
    ):
        super().__init__()
        self.residual = stride == 1 and in_channels == out_channels
        if down_label is not None:
            shared = Calibration3d(in_channels, out_channels)
            self.calib = LayerChoice(
                {name: StridedCalibration3d(shared, s) for name, s in DOWNSAMPLING_CANDIDATES.items()},
                label=down_label,
            )
        else:
            self.calib = Calibration3d(in_channels, out_channels, stride)
        self.op = LayerChoice(
            {name: make_candidate(name, out_channels, self.residual) for name in candidates}, label=label
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.calib(x)
        out = self.op(y)
        return y + out if self.residual else out


class CovidNet3DStage(nn.Module):
    """A sequence of cells; with a depth choice, the chosen cell's output leaves the stage."""

    def __init__(
        self,
        index: int,
        in_channels: int,
        width: int,
        n_cells: int,
        stride: int,
        candidates: Sequence[str],
        search_depth: bool,
        search_downsampling: bool,
    ):
        super().__init__()
        self.depth = None
        if search_depth and n_cells > 1:
            self.depth = InputChoice(n_cells, n_chosen=1, reduction="sum", label=f"s{index}_depth")
        # In a fixed architecture (``model_context``) the depth is already known: skip the cells it drops.
        n_built = self.depth.chosen[0] + 1 if isinstance(self.depth, ChosenInputs) else n_cells
        cells = []
        for j in range(n_built):
            down_label = f"s{index}_down" if (j == 0 and stride == 2 and search_downsampling) else None
            cells.append(
                CovidNet3DCell(
                    f"s{index}_c{j + 1}",
                    in_channels if j == 0 else width,
                    width,
                    stride if j == 0 else 1,
                    candidates,
                    down_label=down_label,
                )
            )
        self.cells = nn.ModuleList(cells)

    def prune(self) -> None:
        """Drop cells a frozen depth choice never reads (for models frozen with ``space.freeze``)."""
        if isinstance(self.depth, ChosenInputs):
            self.cells = nn.ModuleList(list(self.cells)[: self.depth.chosen[0] + 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.depth is None:
            for cell in self.cells:
                x = cell(x)
            return x
        outputs = []
        for cell in self.cells:
            x = cell(x)
            outputs.append(x)
        return self.depth(outputs)


class CovidNet3DSpace(ModelSpace):
    """CovidNet3D model space: ``[N, in_channels, D, H, W]`` -> logits ``[N, num_classes]``.

    Parameters
    ----------
    preset
        ``"S"`` or ``"L"``: stage widths of the paper's two sizes (ignored when ``widths`` is given,
        but recorded).
    num_classes, in_channels
        Output classes and input channels.
    widths, n_cells, strides
        Per-stage output widths, cell counts and strides (strides 1 or 2).
    candidates
        Candidate operation names for every cell (``"mbconv_k<k>_e<e>"`` and at most one ``"skip"``).
    dropout
        Dropout before the classifier.
    search_depth
        Add an ``s{i}_depth`` InputChoice per stage with more than one cell.
    search_downsampling
        Add an ``s{i}_down`` choice (2x2x2 or 1x2x2) to every stride-2 stage. Single-path strategies only.
    stem_channels, first_block_channels, head_channels
        Widths of the stem, the fixed first MBConv and the head's 1x1x1 conv.

    All arguments are JSON-serialisable; NNI records them (``trace_kwargs``) to re-create the space,
    and :attr:`config` gives them normalised (lists, resolved widths) for architecture files.
    """

    def __init__(
        self,
        preset: str = "S",
        num_classes: int = 3,
        in_channels: int = 1,
        widths: Sequence[int] | None = None,
        n_cells: Sequence[int] = (4, 4, 4, 4, 4, 1),
        strides: Sequence[int] = (2, 2, 2, 1, 2, 1),
        candidates: Sequence[str] = DEFAULT_CANDIDATES,
        dropout: float = 0.2,
        search_depth: bool = True,
        search_downsampling: bool = False,
        stem_channels: int = 32,
        first_block_channels: int = 16,
        head_channels: int = 1280,
    ):
        super().__init__()
        self._config = normalize_config(
            dict(
                preset=preset,
                num_classes=num_classes,
                in_channels=in_channels,
                widths=widths,
                n_cells=n_cells,
                strides=strides,
                candidates=candidates,
                dropout=dropout,
                search_depth=search_depth,
                search_downsampling=search_downsampling,
                stem_channels=stem_channels,
                first_block_channels=first_block_channels,
                head_channels=head_channels,
            )
        )
        cfg = self._config
        self.stem = ConvBNReLU6(cfg["in_channels"], cfg["stem_channels"], kernel_size=3, stride=2)
        self.first_block = MBConv3d(cfg["stem_channels"], cfg["first_block_channels"], kernel_size=3, expand_ratio=1)
        stages = []
        channels = cfg["first_block_channels"]
        for i, (width, n, stride) in enumerate(zip(cfg["widths"], cfg["n_cells"], cfg["strides"]), start=1):
            stages.append(
                CovidNet3DStage(
                    i, channels, width, n, stride, cfg["candidates"], cfg["search_depth"], cfg["search_downsampling"]
                )
            )
            channels = width
        self.stages = nn.ModuleList(stages)
        self.head = ConvBNReLU6(channels, cfg["head_channels"], kernel_size=1)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(cfg["dropout"])
        self.classifier = nn.Linear(cfg["head_channels"], cfg["num_classes"])
        self._init_weights()

    @property
    def config(self) -> dict[str, Any]:
        """The constructor arguments, normalised (JSON types, resolved widths)."""
        return dict(self._config)

    def shape_changing_labels(self) -> list[str]:
        """Labels whose candidates produce different output shapes (weighted-sum strategies cannot mix them)."""
        return shape_changing_labels(self._config)

    def extra_oneshot_hooks(self, strategy: Any) -> list:
        """Called by NNI's one-shot strategies before they build the supernet: refuse unsupported ones."""
        validate_for_strategy(self, strategy)
        return []

    def freeze(self, sample: dict[str, Any]) -> nn.Module:
        """The fixed model of ``sample``, holding copies of this space's weights for the chosen candidates.

        Same modules as :func:`~nni_covid3d.search_spaces.build_model` gives (cells a depth choice
        drops are left out). Re-building under ``model_context`` and copying the chosen weights is
        much faster than NNI's generic freeze, which deep-copies the whole space at every level.
        """
        self.validate(sample)
        choices = {name: m for name, m in self.named_modules() if isinstance(m, MutableModule) and name}
        if any(type(m) not in (LayerChoice, InputChoice) for m in choices.values()):
            # Already turned into a supernet by a one-shot strategy: NNI's generic path.
            frozen = super().freeze(sample)
            for stage in frozen.stages:
                stage.prune()
            return frozen
        from nni.nas.space import model_context

        with model_context(sample):
            frozen = type(self)(*self.trace_args, **self.trace_kwargs)
        chosen = {name: str(m.choice.freeze(sample)) for name, m in choices.items() if isinstance(m, LayerChoice)}
        source = self.state_dict()
        frozen.load_state_dict({key: source[_space_key(key, chosen)] for key in frozen.state_dict()})
        return frozen.train(self.training)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, C, D, H, W]`` -> the head's feature map ``[N, head_channels, D/32, H/32, W/32]`` (before pooling)."""
        x = self.first_block(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x)).flatten(1)
        return self.classifier(self.dropout(x))

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)


def _space_key(fixed_key: str, chosen: dict[str, str]) -> str:
    """A fixed model's state-dict key in the space: insert the chosen candidate after each LayerChoice."""
    parts: list[str] = []
    for part in fixed_key.split("."):
        parts.append(part)
        candidate = chosen.get(".".join(parts))
        if candidate is not None:
            parts.append(candidate)
    return ".".join(parts)


_DEFAULTS: dict[str, Any] = dict(
    preset="S",
    num_classes=3,
    in_channels=1,
    widths=None,
    n_cells=[4, 4, 4, 4, 4, 1],
    strides=[2, 2, 2, 1, 2, 1],
    candidates=list(DEFAULT_CANDIDATES),
    dropout=0.2,
    search_depth=True,
    search_downsampling=False,
    stem_channels=32,
    first_block_channels=16,
    head_channels=1280,
)


def normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill defaults, resolve widths from the preset, convert to JSON types and check every value.

    Raises ``ValueError`` naming the offending key.
    """
    unknown = sorted(set(config) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"unknown space config key(s) {unknown}; known: {sorted(_DEFAULTS)}")
    cfg = {**_DEFAULTS, **config}
    if cfg["preset"] not in PRESETS:
        raise ValueError(f"space config 'preset': {cfg['preset']!r} is not one of {sorted(PRESETS)}")
    if cfg["widths"] is None:
        cfg["widths"] = list(PRESETS[cfg["preset"]])

    def int_list(key: str) -> list[int]:
        value = cfg[key]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise ValueError(f"space config {key!r}: expected a list of ints, got {value!r}")
        return [int(v) for v in value]

    for key in ("widths", "n_cells", "strides"):
        cfg[key] = int_list(key)
    n_stages = len(cfg["widths"])
    if not (len(cfg["n_cells"]) == len(cfg["strides"]) == n_stages) or n_stages == 0:
        raise ValueError(
            f"space config: widths, n_cells and strides must have one entry per stage, got lengths "
            f"{len(cfg['widths'])}, {len(cfg['n_cells'])}, {len(cfg['strides'])}"
        )
    if any(w < 1 for w in cfg["widths"]) or any(n < 1 for n in cfg["n_cells"]):
        raise ValueError("space config: widths and n_cells must be positive")
    if any(s not in (1, 2) for s in cfg["strides"]):
        raise ValueError(f"space config 'strides': every stride must be 1 or 2, got {cfg['strides']}")
    for key in ("num_classes", "in_channels", "stem_channels", "first_block_channels", "head_channels"):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"space config {key!r}: expected a positive int, got {value!r}")
    candidates = cfg["candidates"]
    if isinstance(candidates, str) or not isinstance(candidates, (list, tuple)) or not candidates:
        raise ValueError(f"space config 'candidates': expected a non-empty list of names, got {candidates!r}")
    candidates = [str(c) for c in candidates]
    for name in candidates:
        parse_candidate(name)
    if len(set(candidates)) != len(candidates):
        raise ValueError(f"space config 'candidates': duplicate names in {candidates}")
    cfg["candidates"] = candidates
    dropout = cfg["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"space config 'dropout': expected a number in [0, 1), got {dropout!r}")
    cfg["dropout"] = float(dropout)
    for key in ("search_depth", "search_downsampling"):
        if not isinstance(cfg[key], bool):
            raise ValueError(f"space config {key!r}: expected true or false, got {cfg[key]!r}")
    return cfg


def shape_changing_labels(config: dict[str, Any]) -> list[str]:
    """``s{i}_down`` labels present in a (normalised) config."""
    if not config["search_downsampling"]:
        return []
    return [f"s{i}_down" for i, stride in enumerate(config["strides"], start=1) if stride == 2]


def is_weighted_sum_strategy(strategy: Any) -> bool:
    """Whether ``strategy`` runs all candidates of a choice and sums them (so they need one shape).

    A strategy states it with a boolean ``weighted_sum`` attribute; otherwise NNI's DARTS family
    (DARTS, GumbelDARTS, Proxyless) counts as weighted-sum, everything else as single-path.
    """
    declared = getattr(strategy, "weighted_sum", None)
    if declared is not None:
        return bool(declared)
    from nni.nas.strategy import DARTS

    return isinstance(strategy, DARTS)


def validate_for_strategy(space: "CovidNet3DSpace | dict[str, Any]", strategy: Any) -> None:
    """Raise :class:`UnsupportedStrategyError` when ``strategy`` cannot search ``space``.

    NNI's one-shot strategies call this through :meth:`CovidNet3DSpace.extra_oneshot_hooks` before
    they touch the space; call it yourself to fail even earlier.
    """
    config = space.config if isinstance(space, CovidNet3DSpace) else normalize_config(space)
    labels = shape_changing_labels(config)
    if labels and is_weighted_sum_strategy(strategy):
        raise UnsupportedStrategyError(
            f"{type(strategy).__name__} mixes all candidates of a choice as a weighted sum, but the "
            f"downsampling choices {', '.join(labels)} give different tensor shapes downstream. Search this "
            "space with a single-path strategy (GumbelDNAS, RandomOneShot, ENAS or a multi-trial strategy), "
            "or build it with search_downsampling=False."
        )


def output_spatial_size(config: dict[str, Any], input_size: Sequence[int], downsampling: dict[str, str] | None = None) -> tuple[int, int, int]:
    """``(D, H, W)`` of the head's feature map for an input ``(D, H, W)`` (1x1x1 strided convs: ceil(n / s))."""
    size = [math.ceil(n / 2) for n in input_size]  # stem, kernel 3, padding 1, stride 2
    downsampling = downsampling or {}
    for i, stride in enumerate(config["strides"], start=1):
        if stride == 2:
            s = DOWNSAMPLING_CANDIDATES[downsampling.get(f"s{i}_down", "2x2x2")]
            size = [math.ceil(n / k) for n, k in zip(size, s)]
    return tuple(size)  # type: ignore[return-value]

"""Planted search problems: small NNI model spaces whose best architecture is known by construction.

Each :class:`PlantedProblem` builds, for a seed, a model space, its data (weight-training samples and
held-out architecture samples) and the answer a search must export. Candidate order depends on the
seed, so no position bias can pass. :func:`run_planted` runs one one-shot strategy on one problem and
counts what it cost: wall time and candidate passes (forward-only, and forward with a backward).

Problems (``PROBLEMS``):

``information``
    Four linear classifiers, each reading its own 16 features; only one block holds the label.
``capacity``
    A linear classifier, an MLP with 2 hidden units and one with 32, on a circular boundary: only
    the big MLP separates it.
``ranking``
    Frozen classifiers of known quality: correct at logit scale 3, the same at scale 0.3, inverted,
    and all-zero. The confident correct one has the lowest loss.
``chain``
    Two interacting choices: which 2-feature block to read, then a linear or an MLP head. Only the
    informative block with the MLP head solves the (circular) task; neither choice pays alone.
``depth``
    A ``Repeat`` of 1-3 convolutions over 1D signals whose class is the distance between two spikes:
    only depth 3 sees both spikes of the positive class (7 apart) at once.
``covidnet3d``
    The CovidNet3D space cut to one searchable cell (MBConv kernel 3, 5 or 7) on volumes holding pairs
    of small lesions 16 (class 1) or 26 (class 0) voxels apart: only kernel 7 gives a receptive field
    (19 voxels) that spans a near pair; kernel 5 reaches 15, kernel 3 reaches 11.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import nni.nas.strategy  # noqa: F401  (import first: importing the one-shot module first breaks NNI's strategy package)
from nni.nas.evaluator.pytorch import Classification, DataLoader
from nni.nas.execution import SequentialExecutionEngine
from nni.nas.nn.pytorch import LayerChoice, ModelSpace, Repeat
from nni.nas.space import RawFormatModelSpace
from torch.utils.data import TensorDataset

__all__ = ["PlantedProblem", "PlantedResult", "PROBLEMS", "PassCounter", "run_planted", "train_candidate"]


# ----------------------------------------------------------------------------- building blocks
class ReadBlock(nn.Module):
    """``[N, F] -> [N, width]``: features ``[start, start + width)`` of the input."""

    def __init__(self, start: int, width: int):
        super().__init__()
        self.start, self.width = start, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, self.start: self.start + self.width]


def _mlp(in_features: int, hidden: int, out_features: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, out_features))


class FixedLinear(nn.Module):
    """A frozen classifier ``[N, F] -> [N, 2]`` with logits ``(-scale * x_0, scale * x_0)``."""

    def __init__(self, scale: float):
        super().__init__()
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = self.scale * x[:, :1]
        return torch.cat([-score, score], dim=1)


def _order(n: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(n)``: where each candidate sits in the choice."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(10_007 + seed)).tolist()


def _circle_labels(x: torch.Tensor) -> torch.Tensor:
    # Median of a chi-square with two degrees of freedom: balanced classes.
    return (x[:, 0] ** 2 + x[:, 1] ** 2 > 2 * math.log(2)).long()


# ----------------------------------------------------------------------------- spaces
class InformationSpace(ModelSpace):
    def __init__(self, informative_slot: int, n_blocks: int = 4, width: int = 16):
        super().__init__()
        self.choice = LayerChoice(
            [nn.Sequential(ReadBlock(i * width, width), nn.Linear(width, 2)) for i in range(n_blocks)], label="block")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.choice(x)


class CapacitySpace(ModelSpace):
    HIDDEN = (0, 2, 32)  # 0: linear

    def __init__(self, seed: int):
        super().__init__()
        ops = [nn.Linear(8, 2) if h == 0 else _mlp(8, h) for h in self.HIDDEN]
        self.choice = LayerChoice([ops[i] for i in _order(len(ops), seed)], label="op")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.choice(x)


class RankingSpace(ModelSpace):
    SCALES = (3.0, 0.3, -3.0, 0.0)

    def __init__(self, seed: int):
        super().__init__()
        self.choice = LayerChoice([FixedLinear(self.SCALES[i]) for i in _order(len(self.SCALES), seed)], label="classifier")
        self.bias = nn.Parameter(torch.zeros(2))  # something to train, so every evaluator has an optimiser

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.choice(x) + self.bias


class ChainSpace(ModelSpace):
    def __init__(self, seed: int, n_blocks: int = 3):
        super().__init__()
        self.read = LayerChoice([ReadBlock(2 * i, 2) for i in range(n_blocks)], label="read")
        heads = [nn.Linear(2, 2), _mlp(2, 32)]
        self.head = LayerChoice([heads[i] for i in _order(2, seed + 1)], label="head")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.read(x))


class DepthSpace(ModelSpace):
    def __init__(self, channels: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv1d(1, channels, 3, padding=1), nn.ReLU())
        self.body = Repeat(lambda index: nn.Sequential(nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU()),
                           (1, 3), label="depth")
        self.head = nn.Linear(channels, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(self.stem(x)).amax(dim=2))


def covidnet3d_kernel_space(seed: int) -> ModelSpace:
    """CovidNet3D with one searchable cell (MBConv e3 with kernel 3, 5 or 7), narrow widths."""
    from nni_covid3d.search_spaces import CovidNet3DSpace

    kernels = [f"mbconv_k{k}_e3" for k in (3, 5, 7)]
    return CovidNet3DSpace(
        num_classes=2, widths=(8,), n_cells=(1,), strides=(1,), candidates=[kernels[i] for i in _order(3, seed)],
        dropout=0.0, search_depth=False, stem_channels=8, first_block_channels=8, head_channels=16)


# ----------------------------------------------------------------------------- data
def _information_data(n: int, slot: int, g: torch.Generator) -> TensorDataset:
    x = torch.randn(n, 64, generator=g)
    return TensorDataset(x, (x[:, slot * 16] > 0).long())


def _capacity_data(n: int, g: torch.Generator) -> TensorDataset:
    x = torch.randn(n, 8, generator=g)
    return TensorDataset(x, _circle_labels(x))


def _ranking_data(n: int, g: torch.Generator) -> TensorDataset:
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, (x[:, 0] + 0.1 * torch.randn(n, generator=g) > 0).long())


def _chain_data(n: int, block: int, g: torch.Generator) -> TensorDataset:
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, _circle_labels(x[:, 2 * block: 2 * block + 2]))


def _spike_pairs(n: int, length: int, near: int, far: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Positions of two spikes per sample: ``near`` apart (class 1) or ``far`` apart (class 0)."""
    y = torch.randint(0, 2, (n,), generator=g)
    gap = torch.where(y == 1, torch.tensor(near), torch.tensor(far))
    first = (torch.rand(n, generator=g) * (length - gap)).long()
    return first, first + gap, y


def _depth_data(n: int, g: torch.Generator, length: int = 32) -> TensorDataset:
    first, second, y = _spike_pairs(n, length, near=7, far=13, g=g)
    x = 0.2 * torch.randn(n, 1, length, generator=g)
    rows = torch.arange(n)
    amplitude = 1.0 + torch.rand(n, 2, generator=g)
    x[rows, 0, first] += amplitude[:, 0]
    x[rows, 0, second] += amplitude[:, 1]
    return TensorDataset(x, y)


def _lesion_pair_data(n: int, g: torch.Generator, shape: tuple[int, int, int] = (8, 16, 40), pairs: int = 4,
                      near: int = 16, far: int = 26) -> TensorDataset:
    """Volumes ``[1, D, H, W]`` holding ``pairs`` pairs of bright 2x2x2 lesions, each pair's two lesions
    ``near`` (class 1) or ``far`` (class 0) voxels apart along W, at random places.

    Every lesion looks the same and the pairs are scattered, so one lesion at a time tells nothing:
    a cell must see both lesions of a near pair at once.
    """
    d, h, w = shape
    y = torch.randint(0, 2, (n,), generator=g)
    x = 0.2 * torch.randn(n, 1, d, h, w, generator=g)
    for i in range(n):
        gap = near if y[i] == 1 else far
        for _ in range(pairs):
            z = int(torch.randint(0, d - 1, (1,), generator=g))
            row = int(torch.randint(0, h - 1, (1,), generator=g))
            col = int(torch.randint(0, w - gap - 1, (1,), generator=g))
            for c in (col, col + gap):
                x[i, 0, z: z + 2, row: row + 2, c: c + 2] += 1.5
    return TensorDataset(x, y)


# ----------------------------------------------------------------------------- problems
@dataclass(frozen=True)
class PlantedProblem:
    """A search problem with a known answer.

    Args:
        name: short identifier.
        build_space: ``seed -> ModelSpace`` (a fresh space: one-shot strategies mutate it in place).
        make_data: ``(seed, n, split) -> TensorDataset``; ``split`` is ``"train"`` (weight steps) or
            ``"arch"`` (architecture steps, held out).
        answer: ``seed -> {label: value}`` that the export must contain.
        epochs: the base search budget (epochs over ``n_train`` samples).
        n_train, n_arch, batch_size, learning_rate: data sizes and the weights' recipe (Adam).
    """

    name: str
    build_space: Callable[[int], ModelSpace]
    make_data: Callable[[int, int, str], TensorDataset]
    answer: Callable[[int], dict[str, Any]]
    epochs: int
    n_train: int = 256
    n_arch: int = 128
    batch_size: int = 16
    learning_rate: float = 0.01
    description: str = ""


def _seeded(make: Callable[..., TensorDataset]) -> Callable[[int, int, str], TensorDataset]:
    def data(seed: int, n: int, split: str) -> TensorDataset:
        g = torch.Generator().manual_seed(seed * 7 + (0 if split == "train" else 1) + 1000)
        return make(seed, n, g)
    return data


PROBLEMS: dict[str, PlantedProblem] = {p.name: p for p in [
    PlantedProblem(
        "information", lambda seed: InformationSpace(seed % 4),
        _seeded(lambda seed, n, g: _information_data(n, seed % 4, g)),
        lambda seed: {"block": seed % 4}, epochs=12,
        description="one of four linear classifiers sees the label's feature"),
    PlantedProblem(
        "capacity", CapacitySpace, _seeded(lambda seed, n, g: _capacity_data(n, g)),
        lambda seed: {"op": _order(3, seed).index(2)}, epochs=12,
        description="circular boundary: linear, MLP-2 or MLP-32; only MLP-32 separates it"),
    PlantedProblem(
        "ranking", RankingSpace, _seeded(lambda seed, n, g: _ranking_data(n, g)),
        lambda seed: {"classifier": _order(4, seed).index(0)}, epochs=4,
        description="frozen classifiers: correct x3, correct x0.3, inverted, zero"),
    PlantedProblem(
        "chain", ChainSpace, _seeded(lambda seed, n, g: _chain_data(n, seed % 3, g)),
        lambda seed: {"read": seed % 3, "head": _order(2, seed + 1).index(1)}, epochs=12,
        description="block (3) x head (linear / MLP): only the informative block with the MLP solves it"),
    PlantedProblem(
        "depth", lambda seed: DepthSpace(), _seeded(lambda seed, n, g: _depth_data(n, g)),
        lambda seed: {"depth": 3}, epochs=48, learning_rate=0.003,
        description="1D spike pairs 7 apart vs 13 apart: only 3 convolutions span the near pair"),
    PlantedProblem(
        "covidnet3d", covidnet3d_kernel_space, _seeded(lambda seed, n, g: _lesion_pair_data(n, g)),
        lambda seed: {"s1_c1": "mbconv_k7_e3"}, epochs=8, n_train=192, n_arch=96, learning_rate=0.005,
        description="CovidNet3D cell kernel 3/5/7 on lesion pairs 16 vs 26 voxels apart: only k7 spans the near pair"),
]}


# ----------------------------------------------------------------------------- running
class PassCounter:
    """Counts candidate passes with forward hooks on every ``LayerChoice`` candidate and ``Repeat`` block.

    A pass under autograd in training mode is counted as forward + backward (``trained``); any other
    as forward only (``forward_only``). Register before the strategy mutates the space: NNI's
    supernet modules and GumbelDNAS's keep the candidate modules themselves.
    """

    def __init__(self, space: nn.Module):
        self.trained = 0
        self.forward_only = 0
        self._handles = []
        for module in space.modules():
            if isinstance(module, LayerChoice):
                units = [module[name] for name in module.names]
            elif isinstance(module, Repeat):
                units = list(module.blocks)
            else:
                continue
            self._handles += [unit.register_forward_hook(self._count) for unit in units]

    def _count(self, module: nn.Module, args: Any, output: Any) -> None:
        if torch.is_grad_enabled() and module.training:
            self.trained += 1
        else:
            self.forward_only += 1

    @property
    def forward_equivalents(self) -> float:
        """Passes in units of one candidate forward: a backward costs about two forwards."""
        return 3 * self.trained + self.forward_only

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@dataclass
class PlantedResult:
    problem: str
    strategy: str
    seed: int
    epochs: int
    export: dict[str, Any]
    success: bool
    wall_s: float
    trained_passes: int
    forward_passes: int
    forward_equivalents: float
    settings: dict[str, Any] = field(default_factory=dict)


def run_planted(problem: PlantedProblem, strategy_name: str, seed: int, *, epochs: int | None = None,
                **strategy_kwargs: Any) -> PlantedResult:
    """Search ``problem`` (seeded) with a strategy by registry name; returns its export and cost.

    Every strategy sees the same data: weight steps on the ``train`` samples, architecture steps on
    the held-out ``arch`` samples (NNI's DARTS family reads them as the evaluator's validation
    loader; GumbelDNAS is given ``arch_split="val"`` for the same arrangement).
    """
    from . import get

    epochs = problem.epochs if epochs is None else epochs
    torch.manual_seed(seed)
    space = problem.build_space(seed)
    counter = PassCounter(space)
    evaluator = Classification(
        train_dataloaders=DataLoader(problem.make_data(seed, problem.n_train, "train"), batch_size=problem.batch_size, shuffle=True),
        val_dataloaders=DataLoader(problem.make_data(seed, problem.n_arch, "arch"), batch_size=problem.batch_size, shuffle=True),
        num_classes=2, learning_rate=problem.learning_rate, max_epochs=epochs, accelerator="cpu", devices=1,
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    kwargs = dict(strategy_kwargs)
    if strategy_name == "gumbel-dnas":
        kwargs.setdefault("seed", seed)
        kwargs.setdefault("arch_split", "val")
    strategy = get(strategy_name, **kwargs)
    start = time.perf_counter()
    strategy(RawFormatModelSpace(space, evaluator), SequentialExecutionEngine())
    export = strategy.oneshot_module.export()
    wall = time.perf_counter() - start
    counter.remove()
    answer = problem.answer(seed)
    export = {label: _plain(export[label]) for label in answer}
    return PlantedResult(
        problem=problem.name, strategy=strategy_name, seed=seed, epochs=epochs, export=export,
        success=export == answer, wall_s=wall, trained_passes=counter.trained, forward_passes=counter.forward_only,
        forward_equivalents=counter.forward_equivalents, settings={k: _plain(v) for k, v in strategy_kwargs.items()},
    )


def train_candidate(problem: PlantedProblem, seed: int, sample: dict[str, Any], *,
                    epochs: int | None = None) -> tuple[float, float]:
    """Train the fixed architecture ``sample`` of ``problem`` alone (the problem's recipe: Adam,
    its learning rate, batch size and epochs, on the ``train`` samples); returns (accuracy, mean
    cross-entropy) on the held-out ``arch`` samples. The ground truth a search is checked against."""
    import torch.nn.functional as F

    torch.manual_seed(seed)
    model = problem.build_space(seed).freeze(sample)
    train = problem.make_data(seed, problem.n_train, "train")
    held = problem.make_data(seed, problem.n_arch, "arch")
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(parameters, problem.learning_rate) if parameters else None
    x, y = train.tensors
    for _ in range(problem.epochs if epochs is None else epochs):
        model.train()
        order = torch.randperm(len(y))
        for start in range(0, len(y), problem.batch_size):
            batch = order[start: start + problem.batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            if optimizer is not None:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(held.tensors[0])
    return (float((logits.argmax(1) == held.tensors[1]).float().mean()), float(F.cross_entropy(logits, held.tensors[1])))


def _plain(value: Any) -> Any:
    """Exported values as JSON-friendly Python values (an InputChoice's ``[i]`` stays a list)."""
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value

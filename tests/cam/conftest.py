"""Small models shared by the CAM tests."""
from __future__ import annotations

import pytest
import torch
from torch import nn


class BlobNet(nn.Module):
    """A fixed 3D classifier whose class-1 score is the mean bright-voxel response.

    ``features`` keeps full resolution (depth included), so a correct CAM of class 1 peaks on the
    brightest blob of the input; the other classes score its negative.
    """

    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv3d(1, 2, kernel_size=3, padding=1, bias=True), nn.ReLU())
        with torch.no_grad():
            self.features[0].weight.zero_()
            self.features[0].weight[:, 0, 1, 1, 1] = 1.0  # identity filter on both channels
            self.features[0].bias.fill_(-0.5)  # only bright voxels respond
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.fc = nn.Linear(2, num_classes)
        with torch.no_grad():
            self.fc.weight.fill_(-1.0)
            self.fc.weight[1] = 1.0
            self.fc.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class StridedNet(nn.Module):
    """Three stride-2 stages (depth 16 -> 8 -> 4 -> 2), for target-layer selection."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv3d(1, 4, 3, stride=2, padding=1), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv3d(4, 4, 3, stride=2, padding=1), nn.ReLU())
        self.stage3 = nn.Sequential(nn.Conv3d(4, 4, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stage3(self.stage2(self.stage1(x))))


def blob_volume(center: tuple[int, int, int], shape=(8, 16, 16), radius: float = 1.5) -> torch.Tensor:
    """(1, D, H, W) zeros with one bright ball of value 1 at ``center``."""
    grid = torch.stack(torch.meshgrid(*[torch.arange(s, dtype=torch.float32) for s in shape], indexing="ij"))
    distance = ((grid - torch.tensor(center, dtype=torch.float32).view(3, 1, 1, 1)) ** 2).sum(0).sqrt()
    return (distance <= radius).float()[None]


@pytest.fixture
def blob_net() -> BlobNet:
    torch.manual_seed(0)
    return BlobNet().eval()


@pytest.fixture
def strided_net() -> StridedNet:
    torch.manual_seed(0)
    return StridedNet().eval()


# ------------------------------------------------------------------ checkpoints of the real format
TINY_SPACE = dict(
    preset="S", num_classes=3, widths=[8, 8, 8, 8, 8, 8], n_cells=[1, 1, 1, 1, 1, 1],
    head_channels=16, stem_channels=8, first_block_channels=8,
)


def save_tiny_checkpoint(path, *, depth: int = 8, size: int = 32, seed: int = 0):
    """An untrained tiny CovidNet3D saved in the nni-covid3d checkpoint format (state dict + metadata)."""
    from nni_covid3d.data import Preprocessing
    from nni_covid3d.search_spaces import random_architecture
    from nni_covid3d.training import CovidClassifier
    from nni_covid3d.training.checkpoint import CHECKPOINT_KEY

    torch.manual_seed(seed)
    arch = random_architecture(TINY_SPACE, seed=seed)
    classifier = CovidClassifier(
        "covidnet3d", class_names=["CP", "NCP", "Normal"], arch=arch,
        preprocessing=Preprocessing(depth=depth, height=size, width=size).to_dict(),
    )
    torch.save({"state_dict": classifier.state_dict(), CHECKPOINT_KEY: classifier.checkpoint_metadata()}, path)
    return path


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory):
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt")

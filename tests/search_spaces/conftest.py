"""Fixtures for the search-space tests."""
from __future__ import annotations

from typing import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread() -> Iterator[None]:
    """Seed, and run single-threaded: on a shared 2-core machine OpenMP threads that wait on each
    other make small 3D convolutions and batch norms tens of times slower than one thread."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

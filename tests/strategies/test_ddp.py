"""GumbelDNAS under Lightning DDP (2 CPU processes, gloo), in fp32 and bf16-mixed: lock-step logits, one export."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_ddp_ranks_stay_in_lock_step_and_only_rank0_exports(tmp_path, precision):
    done = subprocess.run([sys.executable, "-m", "tests.strategies.ddp_search", str(tmp_path), "--precision", precision],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world"] == r1["world"] == 2
    assert r0["precision"] == r1["precision"] == precision
    for label, alpha in r0["alphas"].items():
        assert alpha.dtype == torch.float32  # the logits stay fp32 under mixed precision
        torch.testing.assert_close(alpha, r1["alphas"][label], rtol=0, atol=0)
        assert alpha.abs().max() > 1e-2, f"logits of {label} did not move"
    torch.testing.assert_close(r0["head"], r1["head"], rtol=0, atol=0)
    exports = sorted(p.name for p in tmp_path.glob("export_from_rank*.json"))
    assert exports == ["export_from_rank0.json"]

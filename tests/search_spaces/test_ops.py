"""The 3D blocks: the fast depthwise convolution's gradients, candidate names, MBConv shapes."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from nni_covid3d.search_spaces.ops import DepthwiseConv3d, MBConv3d, Skip, make_candidate, parse_candidate


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 7])
def test_depthwise_gradients_match_pytorch_conv3d(kernel_size: int) -> None:
    conv = DepthwiseConv3d(4, kernel_size).double()
    x = torch.randn(2, 4, 5, 6, 7, dtype=torch.double, requires_grad=True)
    grad_out = torch.randn(2, 4, 5, 6, 7, dtype=torch.double)
    conv(x).backward(grad_out)
    x_ref = x.detach().clone().requires_grad_(True)
    w_ref = conv.weight.detach().clone().requires_grad_(True)
    nn.functional.conv3d(x_ref, w_ref, padding=kernel_size // 2, groups=4).backward(grad_out)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(conv.weight.grad, w_ref.grad)


def test_depthwise_gradcheck() -> None:
    from nni_covid3d.search_spaces.ops import _DepthwiseConv3dCPU

    weight = torch.randn(2, 1, 3, 3, 3, dtype=torch.double, requires_grad=True)
    x = torch.randn(1, 2, 3, 4, 4, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp, w: _DepthwiseConv3dCPU.apply(inp, w, 1), (x, weight))


def test_depthwise_weight_gradient_without_input_gradient() -> None:
    conv = DepthwiseConv3d(3, 3)
    x = torch.randn(1, 3, 4, 4, 4)  # no requires_grad: the stem-like case
    conv(x).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_depthwise_skips_gradients_the_backward_pass_does_not_use(monkeypatch) -> None:
    # An architecture step asks autograd for the logits' gradient only: the weight gradient
    # (a convolution as costly as the forward) must not be computed, the input gradient must.
    calls = []
    conv3d = nn.functional.conv3d
    monkeypatch.setattr(nn.functional, "conv3d", lambda *a, **k: calls.append(1) or conv3d(*a, **k))
    conv = DepthwiseConv3d(3, 3)
    logit = torch.tensor(1.0, requires_grad=True)
    x = torch.randn(1, 3, 4, 4, 4, requires_grad=True)

    def convolutions(inputs) -> int:
        calls.clear()
        torch.autograd.grad(conv(x * logit).square().sum(), inputs)
        return len(calls)

    assert convolutions([logit]) == 2  # forward + input gradient (the logit is upstream)
    assert convolutions([x]) == 2
    assert convolutions([x, conv.weight]) == 3  # + weight gradient
    assert convolutions([conv.weight]) == 2  # forward + weight gradient
    (grad_x,) = torch.autograd.grad(conv(x).square().sum(), [x])
    (grad_x_full, _) = torch.autograd.grad(conv(x).square().sum(), [x, conv.weight])
    torch.testing.assert_close(grad_x, grad_x_full)


def test_parse_candidate() -> None:
    assert parse_candidate("mbconv_k5_e3") == (5, 3)
    assert parse_candidate("skip") is None
    for bad in ("mbconv_k4_e3", "conv3", "mbconv_k3_e0", "Skip"):
        with pytest.raises(ValueError, match="candidate operation"):
            parse_candidate(bad)


def test_candidates_keep_shape() -> None:
    x = torch.randn(2, 8, 4, 6, 6)
    for name in ("mbconv_k3_e3", "mbconv_k7_e4"):
        op = make_candidate(name, 8, residual=True)
        assert isinstance(op, MBConv3d)
        assert op(x).shape == x.shape
    assert torch.equal(make_candidate("skip", 8, residual=False)(x), x)
    skip = make_candidate("skip", 8, residual=True)
    assert isinstance(skip, Skip) and torch.count_nonzero(skip(x)) == 0

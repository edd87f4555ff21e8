"""The fused inference path of the MLPs must change speed, never results."""

import pytest
import torch
from torch import nn

from vaefilter.model import fused_mlp
from vaefilter.model.network import _mlp


def _network(sizes, seed=0):
    torch.manual_seed(seed)
    return _mlp(sizes).eval()


@pytest.fixture
def fused_path_calls(monkeypatch):
    # the operator's self-check runs once per process, at first use: not inside the spy
    fused_mlp.fused_kernels_work()
    calls = []
    real = fused_mlp._fused_linear_silu

    def spy(x, linear):
        calls.append(tuple(x.shape))
        return real(x, linear)

    monkeypatch.setattr(fused_mlp, "_fused_linear_silu", spy)
    return calls


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
def test_the_pinned_torch_has_a_working_fused_operator():
    # if a torch upgrade drops or breaks the internal operator, scoring silently slows: say so here
    assert fused_mlp.fused_kernels_work()


@pytest.mark.parametrize("sizes", [[8, 128, 128, 60], [3, 16, 5], [4, 7]])
def test_fused_forward_matches_the_plain_layers(sizes, fused_path_calls):
    mlp = _network(sizes)
    z = torch.randn(64, 100, sizes[0])
    with torch.inference_mode():
        fused = fused_mlp.mlp_forward(mlp, z)
        plain = mlp(z)
    assert fused.shape == plain.shape == (64, 100, sizes[-1])
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    n_silu = len(sizes) - 2
    if fused_mlp.fused_kernels_work():
        # one fused call per Linear followed by a SiLU, on 2-D input
        assert fused_path_calls == [(64 * 100, h) for h in sizes[:n_silu]]


def test_training_keeps_the_plain_differentiable_layers(fused_path_calls):
    mlp = _network([4, 16, 3]).train()
    x = torch.randn(10, 4)
    out = fused_mlp.mlp_forward(mlp, x)
    out.sum().backward()
    assert fused_path_calls == []
    assert mlp[0].weight.grad is not None


def test_other_dtypes_use_the_plain_layers(fused_path_calls):
    mlp = _network([4, 16, 3]).double()
    with torch.inference_mode():
        out = fused_mlp.mlp_forward(mlp, torch.randn(10, 4, dtype=torch.float64))
    assert out.dtype == torch.float64 and fused_path_calls == []


def test_a_missing_or_wrong_operator_falls_back(monkeypatch):
    fused_mlp.fused_kernels_work.cache_clear()
    try:
        def missing(x, linear):
            raise AttributeError("no such operator")

        monkeypatch.setattr(fused_mlp, "_fused_linear_silu", missing)
        assert not fused_mlp.fused_kernels_work()
        mlp = _network([4, 16, 3])
        with torch.inference_mode():
            torch.testing.assert_close(fused_mlp.mlp_forward(mlp, torch.ones(5, 4)), mlp(torch.ones(5, 4)))

        fused_mlp.fused_kernels_work.cache_clear()
        monkeypatch.setattr(fused_mlp, "_fused_linear_silu", lambda x, linear: nn.functional.relu(linear(x)))
        assert not fused_mlp.fused_kernels_work()
    finally:
        monkeypatch.undo()
        fused_mlp.fused_kernels_work.cache_clear()

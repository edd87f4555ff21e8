"""The MLP forward pass for inference on a CPU, with bias and SiLU fused into each matmul.

Scoring runs the decoder K times per row, and on a CPU it is bound less by
the matmuls than by the passes over their outputs: addmm first copies the bias
into the output, then SiLU reads and writes it again. oneDNN (bundled with
torch's CPU builds) can apply both while a block of the output is still in
cache; PyTorch's own compiler (inductor) uses the same operator,
``torch.ops.mkldnn._linear_pointwise``. Measured on 2 cores: +20-30% scoring
throughput at 10-30 features (see benchmarks/RESULTS.md).

That operator is internal to torch, so it is used only after a self-check
against the plain layers, and everything falls back to those when it is
missing or disagrees: the fused path must change speed, never results.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# float32 rounding of a different summation order, relative to the output scale
_SELF_CHECK_TOLERANCE = 1e-4


def _fused_linear_silu(x, linear):
    return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "swish", [], "")


def _fused_linear(x, linear):
    # the bias added in the matmul's epilogue, not copied into the output first
    return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "none", [], "")


@functools.lru_cache(maxsize=None)
def fused_kernels_work():
    """Whether this torch build has the fused operator and it agrees with the plain layers."""
    if not torch.backends.mkldnn.is_available():
        return False
    generator = torch.Generator().manual_seed(0)
    # the layer's own initialisation draws from torch's global generator: leave the user's stream alone
    with torch.random.fork_rng(devices=[]):
        linear = nn.Linear(16, 24)
    x = torch.randn(40, 16, generator=generator)
    try:
        with torch.inference_mode():
            pairs = [(_fused_linear_silu(x, linear), nn.functional.silu(linear(x))), (_fused_linear(x, linear), linear(x))]
    except (AttributeError, RuntimeError, TypeError):
        return False
    return all(
        fused.shape == plain.shape and bool(torch.allclose(fused, plain, atol=_SELF_CHECK_TOLERANCE))
        for fused, plain in pairs
    )


def _can_fuse(x):
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and (torch.is_inference_mode_enabled() or not torch.is_grad_enabled())
        and fused_kernels_work()
    )


def mlp_forward(mlp: nn.Sequential, x):
    """``mlp(x)`` for a Sequential of Linear layers with SiLU between them; fused where possible.

    Every layer then runs as one oneDNN call: linear+SiLU, or linear with its
    bias for the output layer.

    Fused only without autograd (a fused layer has no backward here), on a
    CPU, in float32.
    """
    if not _can_fuse(x):
        return mlp(x)
    leading = x.shape[:-1]
    h = x.reshape(-1, x.shape[-1])
    layers = list(mlp)
    i = 0
    while i < len(layers):
        layer = layers[i]
        if i + 1 < len(layers) and isinstance(layers[i + 1], nn.SiLU):
            h = _fused_linear_silu(h, layer)
            i += 2
        else:
            h = _fused_linear(h, layer)
            i += 1
    return h.reshape(*leading, h.shape[-1])

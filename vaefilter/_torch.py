"""The torch boundary: device choice, arrays in and out, shared constants, the reparameterisation.

Everything that crosses between numpy and torch, or that every torch module
needs the same way, lives here (as skorch's ``utils.py`` does for skorch), so
the estimator stays numpy/pandas and the model modules share one definition.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

#: log(2 pi), in the normal densities of the prior, q(z|x), Gaussian columns and Laplace proposals
LOG_2PI = math.log(2.0 * math.pi)


def resolve_device(device):
    """'auto' -> a GPU when one is available, else the CPU; 'cuda' must exist."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for, but torch sees no CUDA GPU; use device='auto' or 'cpu'")
    return torch.device(device)


def to_tensor(X, device):
    """A float32 copy of ``X`` on ``device``.

    A copy: inputs may be read-only memory maps, which torch refuses to share.
    """
    tensor = torch.tensor(np.asarray(X, dtype=np.float32))
    if device.type == "cuda":
        # page-locked host memory lets the copy to the GPU run asynchronously
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_numpy(tensor):
    """A float64 numpy array of a tensor on any device."""
    return tensor.detach().double().cpu().numpy()


def device_of(module):
    """The device of a module's parameters."""
    return next(module.parameters()).device


def may_be_true(mask):
    """False only where ``mask`` is known to be all False.

    On the CPU the check skips a pass over the data; on a GPU reading the
    answer would stall the queue of launched kernels every step, so there the
    masked path always runs.
    """
    return mask.device.type != "cpu" or bool(mask.any())


def reparameterize(mean, log_var, noise):
    """z = mean + sigma * noise, with sigma = exp(log_var / 2).

    ``mean`` and ``log_var`` have shape (n, latent_dim); ``noise`` either the
    same shape (one draw per row) or (n, K, latent_dim) (K draws per row).
    """
    std = (0.5 * log_var).exp()
    if noise.dim() > mean.dim():
        return mean.unsqueeze(1) + std.unsqueeze(1) * noise
    return mean + std * noise


@contextlib.contextmanager
def seeded_torch(seed):
    """torch's global CPU generator seeded with ``seed`` inside, restored after (e.g. initial weights)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        yield

"""The posterior search's flag test takes d log p(x, z) / dz without autograd's graph of the decoder."""

import copy

import numpy as np
import pytest
import torch

from vaefilter import VAEOutlierDetector
from vaefilter.datasets import load_titanic
from vaefilter.scoring import marginal
from vaefilter.scoring.marginal import encode_in_passes, rows_to_search
from vaefilter.scoring.posterior_search import log_joint, log_joint_gradient


def _autograd_gradient(network, x, z):
    """The gradient as the flag test took it before: autograd through decoder, likelihood and prior."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(log_joint(network, x, z).sum(), [z])
    return gradient


def _autograd_misplacement(network, x, mean, log_var):
    return ((0.5 * log_var).exp() * _autograd_gradient(network, x, mean)).norm(dim=-1)


@pytest.fixture(scope="module")
def titanic_model():
    # Gaussian, whole-number, log-normal and categorical columns, missing cells, both kinds of relations
    frame = load_titanic()
    det = VAEOutlierDetector(latent_dim=3, hidden_layer_sizes=(16, 12), max_epochs=5, proposal_steps=0,
                             handle_missing="model", random_state=0, device="cpu").fit(frame)
    X = torch.tensor(det._validate_for_scoring(frame), dtype=torch.float32)
    assert torch.isnan(X).any()
    return det.network_, X


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_gradient_is_autograds(titanic_model, dtype):
    network, X = titanic_model
    network = copy.deepcopy(network).to(dtype)
    X = X[:300].to(dtype)
    with torch.no_grad():
        z = network.encode(X)[0] + torch.randn(300, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
        found = log_joint_gradient(network, X, z)
    expected = _autograd_gradient(network, X, z)
    assert found.shape == (300, 3) and not found.requires_grad
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(found.numpy(), expected.numpy(), rtol=tolerance,
                               atol=tolerance * expected.abs().max().item())


def _at_the_median_misplacement(titanic_model, monkeypatch):
    """The model, its rows and their encodings, with SEARCH_THRESHOLD at the median misplacement."""
    network, X = titanic_model
    mean, log_var = encode_in_passes(network, X)
    with torch.no_grad():
        values = _autograd_misplacement(network, X, mean, log_var)
    monkeypatch.setattr(marginal, "SEARCH_THRESHOLD", float(values.median()))
    return network, X, mean, log_var


def test_the_rows_flagged_are_those_autograd_flags(titanic_model, monkeypatch):
    # at a threshold at the median misplacement, half the rows are flagged and many lie within
    # the float64 retest's band: both the float32 test and the retest must decide as autograd's
    network, X, mean, log_var = _at_the_median_misplacement(titanic_model, monkeypatch)
    flagged = rows_to_search(network, X, mean, log_var, 2**16)
    monkeypatch.setattr(marginal, "misplacement", _autograd_misplacement)
    expected = rows_to_search(network, X, mean, log_var, 2**16)
    assert 0.4 * len(X) < int(expected.sum()) < 0.6 * len(X)
    assert torch.equal(flagged, expected)


def test_the_flag_passes_sized_for_one_point_per_row_flag_the_same_rows(titanic_model, monkeypatch):
    # the flag test's passes are sized as for K = 1 (latent_dim times the search's rows per pass);
    # a threshold at the median misplacement puts many rows within the float64 retest's band
    network, X, mean, log_var = _at_the_median_misplacement(titanic_model, monkeypatch)
    floats = 2**12  # several passes of each size over the 1309 rows
    assert len(X) > marginal._flag_pass_rows(network, floats) >= 3 * marginal._search_pass_rows(network, floats)
    in_search_passes = marginal._rows_to_search(network, X, mean, log_var, marginal._search_pass_rows(network, floats),
                                                marginal.SEARCH_THRESHOLD)
    assert torch.equal(rows_to_search(network, X, mean, log_var, floats), in_search_passes)

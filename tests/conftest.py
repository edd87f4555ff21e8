import numpy as np
import pytest
import torch

# The test models are tiny: one thread is as fast, and OpenMP's spinning
# threads slow down by 10x or more when another process shares the two cores.
torch.set_num_threads(1)


@pytest.fixture
def rng():
    return np.random.RandomState(0)


def correlated_gaussian(n, rng, n_features=4):
    """Rows from a known correlated Gaussian (a fixed covariance)."""
    base = np.random.RandomState(42)
    A = base.normal(size=(n_features, n_features)) / np.sqrt(n_features)
    cov = A @ A.T + 0.2 * np.eye(n_features)
    return rng.multivariate_normal(np.arange(n_features, dtype=float), cov, size=n)


@pytest.fixture
def gaussian_data():
    return correlated_gaussian

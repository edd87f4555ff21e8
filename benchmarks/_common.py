"""Density peers shared by bench_detection.py and bench_likelihood.py.

Both fit on standardised arrays (``datasets.split``'s ``X_train``, or a
dequantised copy put through the same scaler); their ``score_samples`` is then
a log-density in the standardised space.
"""

from __future__ import annotations

import numpy as np
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KernelDensity

GMM_COMPONENTS = (1, 2, 4, 8)
GMM_COVARIANCES = ("full", "diag")
KDE_BANDWIDTHS = np.logspace(-1, 1, 9)  # in standardised units


def fit_gmm(X, seed):
    """GaussianMixture with (n_components, covariance_type) chosen by BIC over
    n_components in {1,2,4,8} x {full, diag}, reg_covar=1e-3 (standardised units)."""
    best, best_bic = None, np.inf
    for cov in GMM_COVARIANCES:
        for k in GMM_COMPONENTS:
            if k > len(X) // 2:
                continue
            g = GaussianMixture(k, covariance_type=cov, reg_covar=1e-3, n_init=1, random_state=seed).fit(X)
            bic = g.bic(X)
            if bic < best_bic:
                best, best_bic = g, bic
    return best


def fit_kde(X, seed):
    """Gaussian KernelDensity, bandwidth by 3-fold CV log-likelihood on the training split
    over 9 log-spaced values in [0.1, 10]."""
    cv = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": KDE_BANDWIDTHS}, cv=3)
    cv.fit(X)
    return cv.best_estimator_

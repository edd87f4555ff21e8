"""Helpers shared by the benchmarks: density peers, the synthetic speed data, RESULTS.md sections.

Density peers (bench_detection.py, bench_likelihood.py):

Both fit on standardised arrays (``datasets.split``'s ``X_train``, or a
dequantised copy put through the same scaler); their ``score_samples`` is then
a log-density in the standardised space.
"""

from __future__ import annotations

import os
import time

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


# ------------------------------------------------------ synthetic speed data
HIDDEN, LATENT, K_DEFAULT = (128, 128), 8, 100


def make_data(n, d, seed=0):
    """Low-rank Gaussian data with noise: 5 latent factors, d features."""
    rng = np.random.RandomState(seed)
    W = rng.normal(size=(5, d))
    return (rng.normal(size=(n, 5)) @ W + 0.3 * rng.normal(size=(n, d))).astype(np.float32)


def scoring_flops_per_row(d, K, hidden=HIDDEN, latent=LATENT, out_per_col=2):
    enc = [d, *hidden, 2 * latent]
    dec = [latent, *reversed(hidden), out_per_col * d]
    f = lambda sizes: 2 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))  # noqa: E731
    return f(enc) + K * f(dec)


# ------------------------------------------------------------ reporting
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def machine_line():
    import platform

    import sklearn
    import torch

    return (
        f"Machine: {os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), no GPU; "
        f"torch {torch.__version__} ({torch.get_num_threads()} intra-op threads), "
        f"scikit-learn {sklearn.__version__}, numpy {np.__version__}, Python {platform.python_version()}."
    )


def write_section(name, body):
    """Replace the text between ``<!-- name:start -->`` and ``<!-- name:end -->``
    in RESULTS.md (appending the block if absent), leaving other sections alone."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = open(RESULTS).read() if os.path.exists(RESULTS) else "# vaefilter benchmark results\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with open(RESULTS, "w") as f:
        f.write(text)


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(frame, index_name="", fmt="{:.3f}"):
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join([index_name] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in frame.iterrows():
        cells = []
        for v in row:
            if isinstance(v, (float, np.floating)):
                cells.append("" if np.isnan(v) else fmt.format(v))
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------- a Titanic-like CSV
def make_titanic_csv(path, n_rows, seed=0):
    """A Titanic-like CSV of n_rows rows; returns its size in bytes."""
    from vaefilter.datasets import load_titanic

    rng = np.random.default_rng(seed)
    base = load_titanic()
    columns = list(base.columns)

    def text(values, fmt):
        values = np.asarray(values, dtype=float)
        out = np.char.mod(fmt, np.nan_to_num(values)).astype(object)
        out[np.isnan(values)] = ""
        return out

    block = 200_000
    with open(path, "w", newline="") as f:
        f.write(",".join(columns) + "\n")
        for start in range(0, n_rows, block):
            n = min(block, n_rows - start)
            rows = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
            cells = {name: text(rows[name], "%d") for name in ("pclass", "survived", "sibsp", "parch")}
            cells["age"] = text((rows["age"] + rng.normal(0, 2, n)).clip(0.2, 80), "%.1f")
            cells["fare"] = text(rows["fare"] * rng.lognormal(0, 0.1, n), "%.4f")
            for name in ("sex", "embarked"):
                values = np.array(rows[name].astype(object).where(rows[name].notna(), ""), dtype=object)
                quoted = (rng.random(n) < 0.1) & (values != "")
                values[quoted] = ['"' + v + '"' for v in values[quoted]]
                cells[name] = values
            f.write("\n".join(map(",".join, zip(*(cells[c] for c in columns)))) + "\n")
    return os.path.getsize(path)


def matmul_rate(m, k, n, repeats=5):
    """Best float32 (m x k) @ (k x n) rate over ``repeats``, GFLOP/s, at torch's current threads."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best / 1e9

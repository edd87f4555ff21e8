"""Embedded data sets: shipped with vaefilter or scikit-learn, nothing downloaded."""

from __future__ import annotations

from importlib import resources

import pandas as pd
from sklearn.datasets import load_digits


def titanic_csv_path():
    """Path of the bundled Titanic passenger table (a real mixed-type CSV).

    1309 passengers; pclass, survived, sibsp, parch (int), age and fare
    (float, age missing for 263 rows), sex and embarked (categorical,
    embarked missing for 2 rows). Taken from the OpenML copy (id 40945)
    that scikit-learn ships for its own tests.
    """
    return resources.files("vaefilter") / "data" / "titanic.csv"


def load_titanic():
    """The bundled Titanic table as a DataFrame with categorical dtypes."""
    with resources.as_file(titanic_csv_path()) as path:
        frame = pd.read_csv(path)
    for name in ("sex", "embarked"):
        frame[name] = frame[name].astype("category")
    return frame


def digits_split(inlier_classes=(0, 1, 2, 3, 4), random_state=0):
    """scikit-learn's 8x8 digits split into known classes and unseen classes.

    Returns
    -------
    X_known, X_unseen : ndarrays of shape (n, 64)
        Rows of ``inlier_classes`` and of the other classes.
    """
    X, y = load_digits(return_X_y=True)
    known = pd.Series(y).isin(inlier_classes).to_numpy()
    return X[known], X[~known]

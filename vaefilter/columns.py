"""Column typing: from user tables (arrays or DataFrames) to the model matrix and back.

The model matrix has one float column per input column:

* numeric -> the value (NaN when missing),
* binary (bool dtype) -> 0.0 / 1.0,
* categorical -> the code of the category among the training categories;
  a category never seen in training gets the code ``len(categories)`` (the
  'unseen' bucket).

Missing cells stay NaN in every kind; the likelihood decides what they cost.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

NUMERIC, BINARY, CATEGORICAL = "numeric", "binary", "categorical"


@dataclass
class ColumnSpec:
    """How one input column is modelled.

    Attributes
    ----------
    name : str
        Column name (``"x<j>"`` for arrays without names).
    kind : {'numeric', 'binary', 'categorical'}
    categories : list
        Training categories of a categorical column, in code order (as str).
    has_missing : bool
        Whether the column had missing values in training (its missingness
        is then modelled; otherwise a missing value is out of support).
    dtype : str
        The training dtype, to give generated rows the same types.
    """

    name: str
    kind: str
    categories: list = field(default_factory=list)
    has_missing: bool = False
    dtype: str = "float64"


def _is_categorical_dtype(series):
    return (
        isinstance(series.dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(series.dtype)
        or pd.api.types.is_string_dtype(series.dtype)
    )


def _categories_of(series):
    present = series.dropna()
    if isinstance(series.dtype, pd.CategoricalDtype):
        return [str(c) for c in series.cat.categories]
    return sorted({str(v) for v in present})


def _resolve_categorical(frame, categorical_features):
    """Names of the columns to model as categorical."""
    if categorical_features is None:
        return set()
    if isinstance(categorical_features, str) and categorical_features == "from_dtype":
        return {name for name in frame.columns if _is_categorical_dtype(frame[name])}
    names = set()
    for item in categorical_features:
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            if not 0 <= item < frame.shape[1]:
                raise ValueError(f"categorical_features index {item} is out of range for {frame.shape[1]} columns")
            names.add(frame.columns[item])
        elif item in frame.columns:
            names.add(item)
        else:
            raise ValueError(f"categorical_features names a column that X does not have: {item!r}")
    return names


@dataclass
class TableSchema:
    """The fitted column types of a table.

    Build one with :meth:`fit`; :meth:`encode` turns tables with those
    columns into model matrices and :meth:`decode` turns model matrices back
    into tables of the training types.
    """

    columns: list

    @property
    def names(self):
        return [c.name for c in self.columns]

    @property
    def categorical_sizes(self):
        """{model column: number of training categories} for categorical columns."""
        return {j: len(c.categories) for j, c in enumerate(self.columns) if c.kind == CATEGORICAL}

    @property
    def is_numeric_only(self):
        """True when every column is numeric (arrays take scikit-learn's validation path)."""
        return all(c.kind == NUMERIC for c in self.columns)

    @property
    def binary_columns(self):
        return [j for j, c in enumerate(self.columns) if c.kind == BINARY]

    @property
    def missing_columns(self):
        return [j for j, c in enumerate(self.columns) if c.has_missing]

    @classmethod
    def fit(cls, frame: pd.DataFrame, categorical_features="from_dtype"):
        categorical = _resolve_categorical(frame, categorical_features)
        specs = []
        for name in frame.columns:
            series = frame[name]
            has_missing = bool(series.isna().any())
            if name in categorical:
                spec = ColumnSpec(str(name), CATEGORICAL, _categories_of(series), has_missing, "category")
            elif pd.api.types.is_bool_dtype(series.dtype):
                spec = ColumnSpec(str(name), BINARY, [], has_missing, "bool")
            elif pd.api.types.is_numeric_dtype(series.dtype):
                spec = ColumnSpec(str(name), NUMERIC, [], has_missing, str(series.dtype))
            else:
                raise ValueError(
                    f"column {name!r} has dtype {series.dtype} that is neither numeric, bool nor "
                    "categorical; name it in categorical_features or convert it"
                )
            specs.append(spec)
        return cls(specs)

    def encode(self, frame: pd.DataFrame) -> np.ndarray:
        """Model matrix (float64, NaN for missing) of a table with the schema's columns."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        for j, spec in enumerate(self.columns):
            out[:, j] = self._encode_column(spec, frame.iloc[:, j])
        return out

    @staticmethod
    def _encode_column(spec, series):
        missing = series.isna().to_numpy()
        if spec.kind == CATEGORICAL:
            codes = {c: i for i, c in enumerate(spec.categories)}
            unseen = len(spec.categories)
            values = np.array([codes.get(str(v), unseen) for v in series.to_numpy()], dtype=np.float64)
        elif spec.kind == BINARY and pd.api.types.is_bool_dtype(series.dtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            try:
                values = pd.to_numeric(series, errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
            except (TypeError, ValueError):
                numeric = pd.to_numeric(series, errors="coerce")
                row = int(np.flatnonzero(numeric.isna().to_numpy() & ~missing)[0])
                raise ValueError(
                    f"column {spec.name!r}, row {row}: {series.iloc[row]!r} is not a number"
                ) from None
        values = np.array(values, dtype=np.float64)  # writable, whatever pandas handed back
        values[missing] = np.nan
        return values

    def decode(self, matrix: np.ndarray) -> pd.DataFrame:
        """A table of the training types from a model matrix (codes -> categories)."""
        data = {}
        for j, spec in enumerate(self.columns):
            column = matrix[:, j]
            if spec.kind == CATEGORICAL:
                labels = np.array(spec.categories + [None], dtype=object)
                codes = np.where(np.isnan(column), len(spec.categories), column).astype(int)
                data[spec.name] = pd.Categorical(labels[codes], categories=spec.categories)
            elif spec.kind == BINARY:
                data[spec.name] = pd.array(np.where(np.isnan(column), None, column > 0.5), dtype="boolean")
            elif np.issubdtype(np.dtype(spec.dtype), np.integer) and not np.isnan(column).any():
                data[spec.name] = np.rint(column).astype(spec.dtype)
            else:
                data[spec.name] = column
        return pd.DataFrame(data)

    def describe_cell(self, j, value):
        """Why a model-matrix cell is out of what training saw, or '' if it is not."""
        spec = self.columns[j]
        if np.isnan(value):
            return "" if spec.has_missing else "missing (never missing in training)"
        if spec.kind == CATEGORICAL and int(value) == len(spec.categories):
            return "a category never seen in training"
        return ""

    def to_dict(self):
        return {"columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, data):
        return cls([ColumnSpec(**c) for c in data["columns"]])

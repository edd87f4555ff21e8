"""Column typing: from user tables (arrays or DataFrames) to the model matrix and back.

The model matrix has one float column per input column:

* numeric -> the value (NaN when missing),
* binary (bool dtype) -> 0.0 / 1.0,
* categorical -> the code of the category among the training categories;
  a category never seen in training gets the code ``len(categories)`` (the
  'unseen' bucket).

Missing cells stay NaN in every kind; the likelihood decides what they cost.

Each column also has a *value kind*, inferred from the training values (or
given), which decides its likelihood family and its support:

==============  ==========================================  ===================
value kind      inferred when every present training value  outside the support
==============  ==========================================  ===================
'binary'        is 0 or 1, and enough 1s to rule out a      anything but 0, 1
                count (below), or the dtype is bool
'count'         is a whole number >= 0                      non-integers, < 0
'integer'       is a whole number, some negative            non-integers
'positive'      is > 0 (not all whole numbers)              <= 0
'nonnegative'   is >= 0, some exactly 0                     < 0
'continuous'    otherwise                                   (none)
'proportion'    only when asked for (``column_kinds``)      outside [0, 1]
'categorical'   the column is categorical                   (the unseen bucket)
==============  ==========================================  ===================

A numeric column of 0s and 1s is a flag only when its values rule out a count
that has not yet reached 2: a Poisson count with the same mean would have shown
a 2 or more among the training values with probability at least
``1 - BINARY_EVIDENCE`` (so 95%). A column of 109 zeros and one 1 (an edge pixel,
a rare event count) does not, and is a count; a 2 there is then scored by the
count's law instead of being out of support. Columns of 0s and 1s with many of
each (half of 32 rows or more, a tenth of 1,000) are flags. A column that was always 0 is a
count (rate 0 rules nothing out), like any constant whole-number column. ``column_kinds``
overrides either way.

Whole numbers need ``|x| <= 2**24`` (float32 holds every integer up to it);
larger ones are continuous.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import warnings

import numpy as np
import pandas as pd

from ._precision import float32_resolves

NUMERIC, BINARY, CATEGORICAL = "numeric", "binary", "categorical"

#: value kinds of numeric columns (see the module docstring)
VALUE_KINDS = ("continuous", "positive", "nonnegative", "count", "integer", "binary", "proportion")
# float32 holds every integer up to 2**24 exactly; past it x +- 1/2 are not representable
_LARGEST_WHOLE_NUMBER = 2.0**24
#: nats per row by which the log scale must beat the identity for a count column
LOG_SCALE_MARGIN = 0.05
#: a column of 0s and 1s is binary when a Poisson count of its mean would have left every
#: training value below 2 with at most this probability (a test at the 5% level, not tuned).
#: On digits, pixels at the edge of a class's strokes (109 zeros and one 1) were read as flags, and
#: test rows of the same class with a 2 to 8 there cost 1,000 nats; with the rule, digits-3 and
#: digits-9 held-out log p(x) went from -140.6 and -149.0 to -96.7 and -104.3 nats/row (GaussianMixture
#: -120.9 and -130.7; RESULTS.md ``binary_evidence``).
BINARY_EVIDENCE = 0.05


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
    value_kind : str or None
        One of :data:`VALUE_KINDS` or 'categorical'; None in schemas written
        before value kinds existed (read as 'continuous', 'binary' or
        'categorical' from ``kind``).
    log_scale : bool
        For whole-number columns: whether their law lives on the log scale.
    """

    name: str
    kind: str
    categories: list = field(default_factory=list)
    has_missing: bool = False
    dtype: str = "float64"
    value_kind: str = None
    log_scale: bool = False

    def __post_init__(self):
        if self.value_kind is None:
            self.value_kind = {NUMERIC: "continuous"}.get(self.kind, self.kind)

    @property
    def description(self):
        """The value kind in words, e.g. 'count (log scale)'."""
        return f"{self.value_kind} (log scale)" if self.log_scale else self.value_kind


def _gaussian_log_likelihood(values):
    """Mean log-density of a Gaussian fitted to ``values`` (maximum likelihood)."""
    return -0.5 * (np.log(2 * np.pi * max(float(np.var(values)), 1e-12)) + 1.0)


def _prefers_log_scale(values):
    """Whether a whole-number column >= 0 is better described on the log scale.

    A label-free choice: the log-likelihood of a Gaussian fitted to x against
    one fitted to log(x + 1/2), its Jacobian included (Box-Cox's criterion
    between two transforms); counts spread over orders of magnitude choose the
    log, counts on a narrow range the identity. There the two are a near
    tie (uniform on 40-60: 0.003 nats per row in the log's favour), so the
    log must win by ``LOG_SCALE_MARGIN``.
    """
    if len(values) < 2 or np.ptp(values) == 0:
        return False
    logs = np.log(values + 0.5)
    gain = _gaussian_log_likelihood(logs) - float(np.mean(logs)) - _gaussian_log_likelihood(values)
    return bool(gain > LOG_SCALE_MARGIN)


def _rules_out_a_count(values):
    """Whether 0/1 ``values`` are too many without a 2 for a Poisson count of their mean (``BINARY_EVIDENCE``)."""
    rate = float(np.mean(values))
    at_least_two = -np.expm1(-rate) - rate * np.exp(-rate)  # P(N >= 2), N ~ Poisson(rate)
    return bool(values.size * np.log1p(-at_least_two) < np.log(BINARY_EVIDENCE))


def infer_value_kind(values):
    """(value kind, log scale) of a numeric column from its present training values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return "continuous", False
    if np.all((values == 0) | (values == 1)) and _rules_out_a_count(values):
        return "binary", False
    low = float(values.min())
    if np.all(values == np.round(values)) and np.abs(values).max() <= _LARGEST_WHOLE_NUMBER:
        return ("count", _prefers_log_scale(values)) if low >= 0 else ("integer", False)
    if low >= 0:
        # on the log scale, a narrow band of large values (epoch seconds) is a
        # spread float32 cannot resolve; on the values' own scale it may be
        if _resolved(np.log(values[values > 0])) or not _resolved(values):
            return ("positive" if low > 0 else "nonnegative"), False
    return "continuous", False


def _resolved(values):
    """Whether the model's float32 cells resolve the spread of ``values`` (as ``_standardisation`` judges)."""
    values = values[np.isfinite(values)]
    return values.size < 2 or np.ptp(values) == 0 or bool(float32_resolves(np.mean(values), np.std(values)))


def _modelled_scale(values, kind, log_scale):
    """Present ``values`` as the column's family standardises them: logs of positive amounts (their
    positive part) and of log-scale counts (x + 1/2), the values themselves otherwise."""
    if kind in ("positive", "nonnegative"):
        return np.log(values[values > 0])
    return np.log(values + 0.5) if log_scale else values


def _warn_if_unresolved(name, values, spec):
    """A column that varies, but too little for float32 cells around its mean, is modelled as a constant."""
    if spec.value_kind in ("binary", "proportion"):
        return
    finite = values[np.isfinite(values)]  # an inf is refused later, naming its row
    if not _resolved(_modelled_scale(finite, spec.value_kind, spec.log_scale)):
        warnings.warn(f"column {name!r} varies (standard deviation {np.std(finite):.3g} around {np.mean(finite):.6g}) "
                      "by less than float32 resolves there, so it is modelled as constant and its values are not "
                      "checked; subtract an offset (e.g. its minimum) or rescale it before fitting",
                      UserWarning, stacklevel=6)


def _check_value_kind(name, values, kind):
    """A value kind asked for through ``column_kinds`` must hold on the training values."""
    present = values[~np.isnan(values)]
    whole = np.all(present == np.round(present))
    broken = {
        "count": not whole or (present < 0).any(),
        "integer": not whole,
        "positive": (present <= 0).any(),
        "nonnegative": (present < 0).any(),
        "binary": not np.all((present == 0) | (present == 1)),
        "proportion": ((present < 0) | (present > 1)).any(),
        "continuous": False,
    }[kind]
    if broken:
        raise ValueError(f"column_kinds asks for {name!r} to be {kind!r}, but its training values are not")


def _is_categorical_dtype(series):
    return (
        isinstance(series.dtype, pd.CategoricalDtype)
        or pd.api.types.is_object_dtype(series.dtype)
        or pd.api.types.is_string_dtype(series.dtype)
    )


def _numbers_of(values):
    """Each value as a float where it is a number (or a number's text, ``'1'``), else NaN; booleans are not numbers."""
    values = np.asarray(values, dtype=object)
    numeric = np.array([not isinstance(v, (bool, np.bool_)) for v in values], dtype=bool)
    out = np.full(len(values), np.nan)
    if numeric.any():
        out[numeric] = pd.to_numeric(pd.Series(values[numeric], dtype=object), errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan)
    return out


def _by_value(categories):
    """{value: position} when every category is a finite number, no two with one value; else None.

    The categories of such a column then match a cell by its numeric value,
    as the CSV path does (:func:`vaefilter.io.texttypes._as_category`): a
    column fitted on 1.0, 2.0 (a float column, read beside a missing cell)
    takes the int 1 or the text ``'1'`` as the category ``'1.0'``.
    """
    numbers = _numbers_of(categories)
    if not len(categories) or not np.isfinite(numbers).all():
        return None
    by_value = {float(v): i for i, v in enumerate(numbers)}
    return by_value if len(by_value) == len(categories) else None


def _category_text(value):
    """A category's text: bytes as the UTF-8 text they hold (as a numeric column reads b'29.0' as 29.0)."""
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            pass
    return str(value)


def _category_codes(values, categories):
    """Position of each value among ``categories`` (by text, then by numeric value), ``len(categories)`` if none."""
    codes = {c: i for i, c in enumerate(categories)}
    unseen = len(categories)
    out = np.array([codes.get(str(v), unseen) for v in values], dtype=np.float64)
    unmatched = np.flatnonzero(out == unseen)
    if unmatched.size:
        # bytes by their text, only where str() (b'x' -> "b'x'", as older models stored them) found none
        out[unmatched] = [codes.get(_category_text(v), unseen) if isinstance(v, (bytes, bytearray)) else unseen
                          for v in np.asarray(values, dtype=object)[unmatched]]
    by_value = _by_value(categories) if (out == unseen).any() else None
    if by_value is not None:
        unmatched = np.flatnonzero(out == unseen)
        numbers = _numbers_of(np.asarray(values, dtype=object)[unmatched])
        out[unmatched] = [by_value.get(float(v), unseen) for v in numbers]
    return out


def _categories_of(series):
    present = series.dropna()
    if isinstance(series.dtype, pd.CategoricalDtype):
        # in the dtype's order; a category the dtype declares but training
        # never shows has no mass to learn, so it counts as never seen
        seen = {_category_text(v) for v in present}
        return [_category_text(c) for c in series.cat.categories if _category_text(c) in seen]
    # by text: '007' and '7' (or 1 and 1.0) that training shows side by side stay two categories
    return sorted({_category_text(v) for v in present})


def _check_no_numeric_kind(name, series, column_kinds):
    """``column_kinds`` sets how a numeric column's values are modelled; a categorical or
    boolean column has its own likelihood, and a kind given for one was silently dropped."""
    kind = column_kinds.get(str(name))
    if kind is None or (kind == "binary" and pd.api.types.is_bool_dtype(series.dtype)):
        return
    what = "boolean" if pd.api.types.is_bool_dtype(series.dtype) else "categorical"
    raise ValueError(f"column_kinds gives column {name!r} the numeric kind {kind!r}, but that column is {what} "
                     f"(dtype {series.dtype}); convert it to numbers, or leave it out of column_kinds")


def is_time_dtype(dtype):
    """Dates, durations and periods: ``pd.to_numeric`` would pass them on as nanoseconds."""
    return (pd.api.types.is_datetime64_any_dtype(dtype) or pd.api.types.is_timedelta64_dtype(dtype)
            or isinstance(dtype, pd.PeriodDtype))


def _check_scorable_dtype(spec, series):
    """Times and complex numbers would pass ``pd.to_numeric`` as nanoseconds or be cut to
    their real part, and score as wild numbers of a column trained on others."""
    dtype = series.dtype
    if is_time_dtype(dtype) or pd.api.types.is_complex_dtype(dtype):
        raise ValueError(f"column {spec.name!r} has dtype {dtype}, but it held {spec.dtype} values in training; "
                         "convert it to the same values")


def _resolve_categorical(frame, categorical_features):
    """Names of the columns to model as categorical."""
    if categorical_features is None:
        return set()
    if isinstance(categorical_features, str) and categorical_features == "from_dtype":
        return {name for name in frame.columns if _is_categorical_dtype(frame[name])}
    items = list(categorical_features)
    if items and all(isinstance(item, (bool, np.bool_)) for item in items):
        # a boolean mask, as scikit-learn's HistGradientBoosting takes
        if len(items) != frame.shape[1]:
            raise ValueError(f"categorical_features as a boolean mask needs one entry per column "
                             f"({frame.shape[1]}), got {len(items)}")
        return {name for name, chosen in zip(frame.columns, items) if chosen}
    names = set()
    for item in items:
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

    @property
    def value_kinds(self):
        """{model column: value kind} for the non-categorical columns."""
        return {j: c.value_kind for j, c in enumerate(self.columns) if c.kind != CATEGORICAL}

    @property
    def log_scale_columns(self):
        return [j for j, c in enumerate(self.columns) if c.log_scale]

    @classmethod
    def fit(cls, frame: pd.DataFrame, categorical_features="from_dtype", column_kinds=None, infer_kinds=True):
        """The schema of a training table.

        Parameters
        ----------
        frame : DataFrame
        categorical_features : see :class:`~vaefilter.VAEOutlierDetector`
        column_kinds : dict of {column name: value kind}, default=None
            Value kinds to use instead of the inferred ones (checked against
            the training values).
        infer_kinds : bool, default=True
            False marks every numeric column 'continuous' (a Gaussian), as
            ``likelihood='gaussian'`` asks; given ``column_kinds`` still apply.
        """
        categorical = _resolve_categorical(frame, categorical_features)
        column_kinds = dict(column_kinds or {})
        unknown = sorted(str(name) for name in set(column_kinds) - {str(c) for c in frame.columns})
        if unknown:
            raise ValueError(f"column_kinds names column(s) that X does not have: {unknown}")
        if frame.shape[1] == 0:
            raise ValueError(f"Found array with 0 feature(s) (shape={frame.shape}) while a minimum of 1 is required.")
        specs = []
        for name in frame.columns:
            series = frame[name]
            has_missing = bool(series.isna().any())
            if name in categorical or pd.api.types.is_bool_dtype(series.dtype):
                _check_no_numeric_kind(name, series, column_kinds)
            if name in categorical:
                spec = ColumnSpec(str(name), CATEGORICAL, _categories_of(series), has_missing, "category")
                if not spec.categories:
                    raise ValueError(f"categorical column {name!r} is missing in every training row, so there is "
                                     "no category to learn; drop it")
            elif pd.api.types.is_bool_dtype(series.dtype):
                spec = ColumnSpec(str(name), BINARY, [], has_missing, "bool")
            elif pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_complex_dtype(series.dtype):
                spec = ColumnSpec(str(name), NUMERIC, [], has_missing, str(series.dtype))
                values = series.to_numpy(dtype=np.float64, na_value=np.nan)
                if str(name) in column_kinds:
                    spec.value_kind = column_kinds[str(name)]
                    _check_value_kind(str(name), values, spec.value_kind)
                    spec.log_scale = spec.value_kind == "count" and _prefers_log_scale(values[~np.isnan(values)])
                elif infer_kinds:
                    spec.value_kind, spec.log_scale = infer_value_kind(values)
                _warn_if_unresolved(name, values, spec)
            elif _is_categorical_dtype(series):
                # categorical_features was given as a list and left it out
                raise ValueError(
                    f"column {name!r} has dtype {series.dtype} but is not in categorical_features; name it "
                    "there (or leave categorical_features='from_dtype'), or convert it to numbers"
                )
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
            unseen = len(spec.categories)
            known = pd.Index(spec.categories, dtype=object)
            if isinstance(series.dtype, pd.CategoricalDtype) and known.is_unique:
                # the same match by str(value), once per distinct category instead of once per
                # cell (a third of the typing time of a 30,000-row titanic chunk)
                lookup = np.append(_category_codes(series.cat.categories, spec.categories), unseen)
                values = lookup[series.cat.codes.to_numpy()]  # code -1 (missing) -> the appended unseen
            else:
                values = _category_codes(series.to_numpy(), spec.categories)
        elif spec.kind == BINARY and pd.api.types.is_bool_dtype(series.dtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        else:
            _check_scorable_dtype(spec, series)
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
            elif _fits_integer(column, _numpy_integer(spec.dtype)):
                data[spec.name] = np.rint(column).astype(_numpy_integer(spec.dtype))
            else:
                data[spec.name] = column
        return pd.DataFrame(data)

    def describe_cell(self, j, value):
        """Why a model-matrix cell is outside what training saw (its support), or '' if it is not."""
        spec = self.columns[j]
        if np.isnan(value):
            return "" if spec.has_missing else "missing (never missing in training)"
        if spec.kind == CATEGORICAL:
            return "a category never seen in training" if int(value) == len(spec.categories) else ""
        return _support_note(spec.value_kind, value)

    def outside_support(self, matrix):
        """Boolean mask, shape of ``matrix``, of the model-matrix cells :meth:`describe_cell` describes
        (those outside what training saw), computed a column at a time instead of a cell at a time."""
        matrix = np.asarray(matrix, dtype=np.float64)
        out = np.zeros(matrix.shape, dtype=bool)
        for j, spec in enumerate(self.columns):
            values = matrix[:, j]
            missing = np.isnan(values)
            present = values[~missing]
            if spec.kind == CATEGORICAL:
                # describe_cell's int(value): codes are whole numbers, the unseen bucket is the last
                bad = np.trunc(present) == len(spec.categories)
            else:
                bad = _outside_kind(spec.value_kind, present)
            out[~missing, j] = bad
            if not spec.has_missing:
                out[missing, j] = True
        return out

    def to_dict(self):
        return {"columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, data):
        return cls([ColumnSpec(**c) for c in data["columns"]])


def _numpy_integer(dtype_name):
    """The numpy integer dtype named ``dtype_name``, or None: another dtype, or a name numpy does
    not read (a pyarrow or nullable dtype's, e.g. 'double[pyarrow]', 'Int64': floats are given)."""
    try:
        dtype = np.dtype(dtype_name)
    except (TypeError, ValueError):
        return None
    return dtype if np.issubdtype(dtype, np.integer) else None


def _fits_integer(values, dtype):
    """Whether ``dtype`` is an integer dtype that holds every value once rounded (a cast would wrap
    otherwise); False for None (not an integer dtype)."""
    if dtype is None:
        return False
    if not values.size:
        return True
    info = np.iinfo(dtype)
    return bool(np.isfinite(values).all() and values.min() >= info.min and values.max() <= info.max)


def _outside_kind(value_kind, values):
    """Mask of the (present) ``values`` that :func:`_support_note` describes, for a whole column at once."""
    bad = np.zeros(values.shape, dtype=bool)
    if value_kind in ("count", "integer"):
        bad |= values != np.round(values)
    if value_kind in ("count", "nonnegative"):
        bad |= values < 0
    if value_kind == "positive":
        bad |= values <= 0
    if value_kind == "binary":
        bad |= (values != 0.0) & (values != 1.0)
    if value_kind == "proportion":
        bad |= ~((values >= 0.0) & (values <= 1.0))
    return bad


def _support_note(value_kind, value):
    """Which support rule of a value kind ``value`` breaks, in words ('' if none)."""
    shown = f"{value:.6g}"
    if value_kind in ("count", "integer") and value != np.round(value):
        return f"out of support: {shown} in a column that was always a whole number"
    if value_kind in ("count", "nonnegative") and value < 0:
        return f"out of support: {shown} in a column that was never negative"
    if value_kind == "positive" and value <= 0:
        return f"out of support: {shown} in a column that was always positive"
    if value_kind == "binary" and value not in (0.0, 1.0):
        return f"out of support: {shown} in a column that was always 0 or 1"
    if value_kind == "proportion" and not 0.0 <= value <= 1.0:
        return f"out of support: {shown} in a column of proportions in [0, 1]"
    return ""

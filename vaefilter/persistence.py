"""Safe model files: a JSON header and a tensor payload, nothing unpickled.

Layout::

    MAGIC (16 bytes) | header length (8 bytes, little-endian)
    | SHA-256 of header and tensors (32 bytes) | JSON header | tensors

The header holds the configuration, column schema, band, training summary
and versions, plus the length of the tensor payload. The checksum covers
both parts, so an edited band or a flipped bit is refused (it guards against
accidents, not a forger who recomputes it; ``weights_only`` is what keeps a
crafted file from running code). The payload
is ``torch.save(state_dict)``, read back with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers. A truncated,
tampered or foreign file is refused with :class:`ModelFileError`.

Python users who prefer it keep ``joblib.dump`` / ``joblib.load``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
import struct

import numpy as np
import sklearn
import torch
from sklearn.utils.validation import check_is_fitted

from .band import validate_percentiles
from .columns import BINARY, CATEGORICAL, NUMERIC, VALUE_KINDS, TableSchema
from .estimator import FITTED_STATE, REQUIRED, VAEOutlierDetector
from .model.network import VAENetwork

MAGIC = b"VAEFILTER-MODEL2"
FORMAT_VERSION = 2
_REQUIRED_KEYS = {"format_version": int, "versions": dict, "params": dict, "fitted": dict, "schema": dict,
                  "network": dict, "payload": dict}
_MAX_HEADER_BYTES = 64 << 20


class ModelFileError(ValueError):
    """A model file that cannot be trusted or read."""


def _json_param(value):
    if isinstance(value, tuple):
        return [_json_param(v) for v in value]
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.random.RandomState):
        return None  # the fitted model keeps its own seeds; refits start afresh
    return value


# How each form of fitted attribute (estimator.FittedAttribute.form) becomes JSON and back.
_TO_JSON = {
    "band": list,
    "seed": int,
    "names": lambda names: [str(n) for n in names],
    "floats": lambda values: np.asarray(values, dtype=np.float64).tolist(),
    "rows": lambda rows: [int(i) for i in rows],
    "matrix": lambda rows: np.asarray(rows, dtype=np.float64).tolist(),
    "plain": _json_param,
    # a score that is not finite (a cross-validated count whose held-out rows failed) as null
    "pairs": lambda pairs: None if pairs is None else [[int(step), float(value) if math.isfinite(value) else None]
                                                       for step, value in pairs],
    "margins": lambda margins: _margins_to_json(margins),
}
_FROM_JSON = {
    "band": tuple,
    "seed": int,
    "names": lambda names: np.asarray(names, dtype=object),
    "floats": lambda values: np.asarray(values, dtype=np.float64),
    "rows": lambda rows: np.asarray(rows, dtype=np.int64),
    "matrix": lambda rows: np.asarray(rows, dtype=np.float64),
    "plain": lambda value: value,
    "pairs": lambda pairs: None if pairs is None else [(int(step), -math.inf if value is None else float(value))
                                                       for step, value in pairs],
    "margins": lambda values: _margins_from_json(values),
}


def _fitted_to_json(detector):
    """The fitted state of FITTED_STATE as JSON values; an absent optional attribute is null."""
    return {
        a.name: _TO_JSON[a.form](getattr(detector, a.name)) if hasattr(detector, a.name) else None
        for a in FITTED_STATE
    }


def _set_fitted_from_json(detector, fitted, path):
    """Set FITTED_STATE's attributes from a header; missing ones take their defaults (older files)."""
    for a in FITTED_STATE:
        value = fitted.get(a.name)
        if value is None:
            value = None if a.default is REQUIRED or a.default is None else _TO_JSON[a.form](a.default)
        if value is not None:
            try:
                setattr(detector, a.name, _FROM_JSON[a.form](value))
            except (AttributeError, KeyError, TypeError, ValueError) as exc:
                raise ModelFileError(f"{path}: corrupt model header (fitted.{a.name}: {exc})") from None
        elif a.form != "names" and a.default is None:
            setattr(detector, a.name, None)  # null is a value here, not an absent attribute


def _header(detector, payload):
    from . import __version__

    return {
        "format_version": FORMAT_VERSION,
        "versions": {"vaefilter": __version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__},
        "params": {name: _json_param(value) for name, value in detector.get_params().items()},
        "fitted": _fitted_to_json(detector),
        "schema": detector.schema_.to_dict(),
        "network": detector.network_.config(),
        "payload": {"length": len(payload)},
    }


def _margins_to_json(margins):
    """Sequential decisions' margins as JSON: an infinite margin (a round that stops no row) as null."""
    if margins is None:
        return None
    return {k: [None if math.isinf(v) else v for v in v_] if isinstance(v_, list) else
            (None if isinstance(v_, float) and math.isinf(v_) else v_)
            for k, v_ in margins.to_dict().items()}


def _margins_from_json(values):
    """The :class:`~vaefilter.scoring.sequential.DecisionMargins` of a header entry (null: K draws for every row)."""
    from .scoring.sequential import DecisionMargins

    plain = {k: [math.inf if v is None else v for v in v_] if isinstance(v_, list) else
             (math.inf if v_ is None else v_) for k, v_ in values.items()}
    return DecisionMargins.from_dict(plain)


def pack_model_file(header, payload):
    """Bytes of a model file from a header (dict or raw JSON bytes) and a tensor payload."""
    if not isinstance(header, bytes):
        header = json.dumps(header, allow_nan=False).encode("utf-8")
    checksum = hashlib.sha256(header + payload).digest()
    return MAGIC + struct.pack("<Q", len(header)) + checksum + header + payload


def unpack_model_file(data):
    """(header bytes, payload) of a model file's bytes, unchecked (for tooling and tests)."""
    (header_length,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8 + 32
    return data[start : start + header_length], data[start + header_length :]


def model_bytes(detector):
    """A fitted detector in the safe format, as bytes."""
    if not isinstance(detector, VAEOutlierDetector):
        raise TypeError(f"only a VAEOutlierDetector can be saved in this format, got {type(detector).__name__}")
    check_is_fitted(detector)
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in detector.network_.state_dict().items()}, buffer)
    payload = buffer.getvalue()
    return pack_model_file(_header(detector, payload), payload)


def save_model(detector, path):
    """Write a fitted detector to ``path`` in the safe format."""
    data = model_bytes(detector)  # first: a detector that cannot be written leaves any file at path alone
    with open(path, "wb") as f:
        f.write(data)


def _read_parts(path):
    """Header (a checked dict) and tensor payload of a model file.

    Read piece by piece, each piece's length checked first: a file that is
    not a model (a data file given by mistake, ``/dev/zero``) is refused on
    its first 16 bytes, and no length a file declares is read past its end.
    """
    with open(path, "rb") as f:
        size = _size_of(f)
        prefix = f.read(len(MAGIC) + 8 + 32)
        if not prefix.startswith(MAGIC):
            raise ModelFileError(f"{path}: not a vaefilter model file (wrong magic bytes)")
        start = len(MAGIC) + 8 + 32
        if len(prefix) < start:
            raise ModelFileError(f"{path}: truncated model file (no header)")
        (header_length,) = struct.unpack("<Q", prefix[len(MAGIC) : len(MAGIC) + 8])
        checksum = prefix[len(MAGIC) + 8 : start]
        if header_length > _MAX_HEADER_BYTES or (size is not None and start + header_length > size):
            raise ModelFileError(f"{path}: truncated or corrupt model file (header length {header_length})")
        header_bytes = f.read(header_length)
        if len(header_bytes) < header_length:
            raise ModelFileError(f"{path}: truncated or corrupt model file (header length {header_length})")
        payload = _read_payload(f, path, size, start + header_length)
    if hashlib.sha256(header_bytes + payload).digest() != checksum:
        raise ModelFileError(f"{path}: model file is truncated or was modified (checksum mismatch)")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt model header ({exc})") from None
    _check_header(path, header, payload)
    return header, payload


#: Largest tensor payload a model file may hold: 4 GiB, far above any network the parameter caps
#: below allow in practice (a 128-128 network is about 200 kB); a larger file is not read.
_MAX_PAYLOAD_BYTES = 4 << 30


def _size_of(f):
    """The size of an open file in bytes, or None where it has none (a pipe, a device)."""
    info = os.fstat(f.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _read_payload(f, path, size, offset):
    """The rest of the file, refused past _MAX_PAYLOAD_BYTES: checked on a file's size before
    reading, on a stream while reading it in pieces of 1 MiB."""
    too_large = ModelFileError(f"{path}: not a vaefilter model file (over {_MAX_PAYLOAD_BYTES >> 30} GiB of tensors)")
    if size is not None:
        if size - offset > _MAX_PAYLOAD_BYTES:
            raise too_large
        return f.read(size - offset)
    pieces, total = [], 0
    while piece := f.read(1 << 20):
        total += len(piece)
        if total > _MAX_PAYLOAD_BYTES:
            raise too_large
        pieces.append(piece)
    return b"".join(pieces)


def _check_header(path, header, payload):
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: corrupt model header (not a JSON object)")
    for key, kind in _REQUIRED_KEYS.items():
        if not isinstance(header.get(key), kind):
            raise ModelFileError(f"{path}: corrupt model header ('{key}' missing or not a {kind.__name__})")
    if header["format_version"] != FORMAT_VERSION:
        raise ModelFileError(f"{path}: unsupported model format version {header['format_version']!r}")
    if header["payload"].get("length") != len(payload):
        raise ModelFileError(f"{path}: truncated model file (tensor payload length mismatch)")
    _check_values(path, header)


#: integer parameters: (smallest, largest) a model file may hold. The caps are far
#: above any useful setting and keep a forged file from exhausting memory.
_INT_PARAMS = {
    "latent_dim": (1, 4096),
    "n_importance_samples": (1, 100_000),
    "posterior_search_steps": (0, 10_000),
    "proposal_steps": (0, 10_000_000),
    "training_samples": (1, 100_000),
    "max_epochs": (1, 10_000_000),
    "batch_size": (1, 10_000_000),
    "n_iter_no_change": (1, 10_000_000),
}
_CHOICES = {"likelihood": {"auto", "gaussian", "bernoulli"}, "handle_missing": {"error", "model"},
            "device": {"auto", "cpu", "cuda"}}
_MAX_HIDDEN_WIDTH = 1 << 16


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_values(path, header):
    """Every header value the model uses: a clear error naming the field, not a crash later."""

    def bad(field, why):
        raise ModelFileError(f"{path}: corrupt model header ({field} {why})")

    params, fitted = header["params"], header["fitted"]
    for name, (low, high) in _INT_PARAMS.items():
        if name in params and not (_is_int(params[name]) and low <= params[name] <= high):
            bad(f"params.{name}={params[name]!r}", f"must be a whole number in [{low}, {high}]")
    for name, choices in _CHOICES.items():
        if name in params and params[name] not in choices:
            bad(f"params.{name}={params[name]!r}", f"must be one of {sorted(choices)}")
    if "sequential_decisions" in params and not isinstance(params["sequential_decisions"], bool):
        bad(f"params.sequential_decisions={params['sequential_decisions']!r}", "must be true or false")
    for name in ("learning_rate", "min_variance"):
        if name in params and not (_is_finite_number(params[name]) and params[name] > 0):
            bad(f"params.{name}={params[name]!r}", "must be a finite number > 0")
    trim_fraction = params.get("trim_fraction")
    if trim_fraction is not None and not (_is_finite_number(trim_fraction) and 0 <= trim_fraction < 0.5):
        bad(f"params.trim_fraction={trim_fraction!r}", "must be null or a number in [0, 0.5)")
    for attribute in FITTED_STATE:
        rows = fitted.get(attribute.name) or []
        if attribute.form == "rows" and not (isinstance(rows, list) and all(_is_int(i) and i >= 0 for i in rows)):
            bad(f"fitted.{attribute.name}", "must be a list of row indices (whole numbers >= 0)")
    for name in ("tol", "posterior_search_tolerance"):
        if name in params and not (_is_finite_number(params[name]) and params[name] >= 0):
            bad(f"params.{name}={params[name]!r}", "must be a finite number >= 0")
    search_threshold = fitted.get("search_threshold_")
    if search_threshold is not None and not (_is_finite_number(search_threshold) and search_threshold > 0):
        bad(f"fitted.search_threshold_={search_threshold!r}", "must be null or a finite number > 0")
    n_jobs = params.get("n_jobs")
    # any count: the threads are at most one per MIN_ROWS_PER_THREAD rows of a batch
    if not (n_jobs is None or isinstance(n_jobs, int) and n_jobs != 0):  # True is 1, as the estimator takes it
        bad(f"params.n_jobs={n_jobs!r}", "must be null or a whole number other than 0")
    folds = params.get("calibration_folds")
    if not (folds is None or folds == "auto" or _is_int(folds) and folds >= 2):
        bad(f"params.calibration_folds={folds!r}", "must be null, 'auto' or a whole number >= 2")
    cross_fitted = fitted.get("calibration_folds_")
    if not (cross_fitted is None or _is_int(cross_fitted) and cross_fitted >= 2):
        bad(f"fitted.calibration_folds_={cross_fitted!r}", "must be null or a whole number >= 2")
    for name in ("validation_fraction", "calibration_fraction"):
        if name in params and not (_is_finite_number(params[name]) and 0 <= params[name] < 1):
            bad(f"params.{name}={params[name]!r}", "must lie in [0, 1)")
    false_rejection = fitted.get("false_rejection_")
    if false_rejection is not None and not (_is_finite_number(false_rejection) and 0 < false_rejection < 1):
        bad(f"fitted.false_rejection_={false_rejection!r}", "must be null or a number in (0, 1)")
    hidden = params.get("hidden_layer_sizes")
    if not (isinstance(hidden, list) and all(_is_int(h) and 1 <= h <= _MAX_HIDDEN_WIDTH for h in hidden)):
        bad(f"params.hidden_layer_sizes={hidden!r}", f"must be a list of whole numbers in [1, {_MAX_HIDDEN_WIDTH}]")
    percentiles = params.get("threshold_percentiles")
    try:
        validate_percentiles(percentiles)
        if any(p is not None and not _is_finite_number(p) for p in percentiles):
            raise ValueError
    except (TypeError, ValueError):
        bad(f"params.threshold_percentiles={percentiles!r}", "must be two percentiles in [0, 100], lower < upper")

    band_percentiles = fitted.get("band_percentiles_")
    if band_percentiles is not None:
        try:
            validate_percentiles(band_percentiles)
            if any(p is not None and not _is_finite_number(p) for p in band_percentiles):
                raise ValueError
        except (TypeError, ValueError):
            bad(f"fitted.band_percentiles_={band_percentiles!r}", "must be null or two percentiles in [0, 100], "
                "lower < upper")

    thresholds = fitted.get("thresholds_")
    if not (isinstance(thresholds, list) and len(thresholds) == 2
            and all(t is None or _is_finite_number(t) for t in thresholds) and thresholds != [None, None]):
        bad(f"fitted.thresholds_={thresholds!r}", "must be [lower, upper] of finite numbers or null, not both null")
    lower, upper = thresholds
    # lower == upper is what fit gives when every calibration row scores alike (identical rows)
    if lower is not None and upper is not None and not lower <= upper:
        bad(f"fitted.thresholds_={thresholds!r}", "must have lower <= upper (an empty band)")
    # the band's sides need not be threshold_percentiles': calibrate(X, threshold_percentiles=...) may change them
    seed = fitted.get("importance_seed_")
    if not (_is_int(seed) and 0 <= seed < 2**63):
        bad(f"fitted.importance_seed_={seed!r}", "must be a whole number >= 0")
    columns = header["schema"].get("columns")
    if not (isinstance(columns, list) and columns and all(isinstance(c, dict) for c in columns)):
        bad("schema.columns", "must be a non-empty list of column descriptions")
    n_columns = len(columns)
    _check_schema(bad, header["schema"])
    curve = fitted.get("loss_curve_")
    if not (isinstance(curve, list) and curve and all(v is None or _is_finite_number(v) for v in curve)):
        bad("fitted.loss_curve_", "must be a non-empty list of numbers (one per epoch)")
    for attribute in FITTED_STATE:
        if attribute.default is REQUIRED and attribute.name not in fitted:
            bad(f"fitted.{attribute.name}", "is missing")
        values = fitted.get(attribute.name)
        if attribute.form == "floats" and not (
            values is None and attribute.default is not REQUIRED
            or isinstance(values, list) and values and all(_is_finite_number(v) for v in values)
        ):
            bad(f"fitted.{attribute.name}", "must be a non-empty list of finite numbers")
    if len(fitted["column_typical_"]) != n_columns:
        bad("fitted.column_typical_", f"must hold one number per column ({n_columns})")
    matrix = fitted.get("calibration_column_log_prob_")
    if matrix is not None and not (
        isinstance(matrix, list) and matrix
        and all(isinstance(row, list) and len(row) == n_columns and all(_is_finite_number(v) for v in row)
                for row in matrix)
    ):
        bad("fitted.calibration_column_log_prob_", f"must be null or a non-empty list of rows of {n_columns} finite numbers")
    n_features = fitted.get("n_features_in_")
    if n_features != n_columns:
        bad(f"fitted.n_features_in_={n_features!r}", f"must equal the number of schema columns ({n_columns})")
    names = fitted.get("feature_names_in_")
    if names is not None and not (isinstance(names, list) and len(names) == n_columns
                                  and all(isinstance(n, str) for n in names)):
        bad("fitted.feature_names_in_", f"must be null or {n_columns} column names")
    network = header["network"]
    for name in ("latent_dim", "hidden_layer_sizes"):
        if network.get(name) != params.get(name):
            bad(f"network.{name}={network.get(name)!r}", f"differs from params.{name}")


def load_model(path):
    """Read a detector written by :func:`save_model`, without unpickling code."""
    header, payload = _read_parts(path)
    try:
        state_dict = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        network = VAENetwork.from_config(header["network"])
        network.load_state_dict(state_dict)
        params = dict(header["params"])
        for name in ("hidden_layer_sizes", "threshold_percentiles"):
            params[name] = tuple(params[name])
        # files written before calibration_fraction existed set the band on the early-stopping rows
        params.setdefault("calibration_fraction", 0.0)
        # and before column_relations, without relations
        params.setdefault("column_relations", "none")
        if params["column_relations"] == "linear" and "discrete_relations" not in header["network"]["likelihood"]:
            params["column_relations"] = "numeric"  # before the categories' shifts, 'linear' had none
        params.setdefault("continuous_family", "gaussian")
        params.setdefault("calibration_folds", None)  # files before cross-fitted calibration
        params.setdefault("epoch_selection", "early_stopping")  # and before cross-validated epochs
        params.setdefault("training_samples", 1)  # and before the K-sample training bound: the ELBO
        # and before the fitted flag threshold: every row above the fixed one searched (fitted default)
        params.setdefault("posterior_search_tolerance", 0.0)
        detector = VAEOutlierDetector(**params)
        detector._validate_params()  # the estimator's own constraints: a forged 'bogus' choice is named
        _set_fitted_from_json(detector, header["fitted"], path)
        detector.schema_ = TableSchema.from_dict(header["schema"])
        _check_weights(path, state_dict)
    except ModelFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: model file content cannot be loaded ({type(exc).__name__}: {first_line})") from None
    detector.network_ = network.eval()
    return detector


def _check_weights(path, state_dict):
    """Refuse a network whose weights hold NaN or inf: it would score every row NaN, and each
    would read as a row's own overflow."""
    for name, tensor in state_dict.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ModelFileError(f"{path}: corrupt model file (network weight {name!r} holds NaN or inf)")


def _check_schema(bad, schema):
    """Each column's kind, value kind and categories are ones the library writes, its dtype a text.

    The dtype is not parsed: ``str(dtype)`` of some columns (a pyarrow decimal, a pyarrow type
    where pyarrow is not installed) does not parse back, and only ``sample`` uses it."""
    for k, column in enumerate(schema.get("columns", [])):
        if not isinstance(column, dict):
            bad(f"schema.columns[{k}]", "must be an object")
        where = f"schema.columns[{k}]"
        if column.get("kind") not in (NUMERIC, BINARY, CATEGORICAL):
            bad(f"{where}.kind={column.get('kind')!r}", f"must be one of {[NUMERIC, BINARY, CATEGORICAL]}")
        if column.get("value_kind") not in (*VALUE_KINDS, CATEGORICAL, None):
            bad(f"{where}.value_kind={column.get('value_kind')!r}", f"must be one of {list(VALUE_KINDS)}, "
                "'categorical' or null")
        categories = column.get("categories", [])
        if not isinstance(categories, list) or (column["kind"] == CATEGORICAL and not categories) \
                or not all(isinstance(c, str) for c in categories):
            bad(f"{where}.categories", "must be a list of texts, not empty for a categorical column")
        if not isinstance(column.get("dtype", "float64"), str):
            bad(f"{where}.dtype={column.get('dtype')!r}", "must be a dtype's name")


def read_header(path):
    """The JSON header of a model file (for ``vaefilter info``), checked like a load."""
    return _read_parts(path)[0]

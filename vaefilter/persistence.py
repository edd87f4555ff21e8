"""Safe model files: a JSON header and a tensor payload, nothing unpickled.

Layout::

    MAGIC (16 bytes) | header length (8 bytes, little-endian) | JSON header | tensors

The header holds the configuration, column schema, band, training summary
and versions, plus the SHA-256 and length of the tensor payload. The payload
is ``torch.save(state_dict)``, read back with ``torch.load(weights_only=True)``,
which refuses anything but tensors and plain containers. A truncated,
tampered or foreign file is refused with :class:`ModelFileError`.

Python users who prefer it keep ``joblib.dump`` / ``joblib.load``.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct

import numpy as np
import sklearn
import torch

from .columns import TableSchema
from .network import VAENetwork

MAGIC = b"VAEFILTER-MODEL1"
FORMAT_VERSION = 1
_MAX_HEADER_BYTES = 64 << 20
_ARRAY_ATTRIBUTES = ("validation_scores_", "column_typical_")
_PLAIN_ATTRIBUTES = ("loss_curve_", "validation_loss_curve_", "n_iter_", "best_epoch_", "n_features_in_")


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


def _header(detector, payload):
    from . import __version__

    return {
        "format_version": FORMAT_VERSION,
        "versions": {"vaefilter": __version__, "torch": torch.__version__, "scikit-learn": sklearn.__version__},
        "params": {name: _json_param(value) for name, value in detector.get_params().items()},
        "fitted": {
            "thresholds_": list(detector.thresholds_),
            "importance_seed_": int(detector.importance_seed_),
            "feature_names_in_": (
                [str(n) for n in detector.feature_names_in_] if hasattr(detector, "feature_names_in_") else None
            ),
            **{name: np.asarray(getattr(detector, name)).tolist() for name in _ARRAY_ATTRIBUTES},
            **{name: _json_param(getattr(detector, name)) for name in _PLAIN_ATTRIBUTES},
        },
        "schema": detector.schema_.to_dict(),
        "network": detector.network_.config(),
        "payload": {"sha256": hashlib.sha256(payload).hexdigest(), "length": len(payload)},
    }


def model_bytes(detector):
    """A fitted detector in the safe format, as bytes."""
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in detector.network_.state_dict().items()}, buffer)
    payload = buffer.getvalue()
    header = json.dumps(_header(detector, payload), allow_nan=False).encode("utf-8")
    return MAGIC + struct.pack("<Q", len(header)) + header + payload


def save_model(detector, path):
    """Write a fitted detector to ``path`` in the safe format."""
    with open(path, "wb") as f:
        f.write(model_bytes(detector))


def _read_parts(path):
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise ModelFileError(f"{path}: not a vaefilter model file (wrong magic bytes)")
    if len(data) < len(MAGIC) + 8:
        raise ModelFileError(f"{path}: truncated model file (no header length)")
    (header_length,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    start = len(MAGIC) + 8
    if header_length > _MAX_HEADER_BYTES or start + header_length > len(data):
        raise ModelFileError(f"{path}: truncated or corrupt model file (header length {header_length})")
    try:
        header = json.loads(data[start : start + header_length].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt model header ({exc})") from None
    return header, data[start + header_length :]


def _check_payload(path, header, payload):
    expected = header.get("payload", {})
    if len(payload) != expected.get("length"):
        raise ModelFileError(
            f"{path}: truncated model file (tensor payload has {len(payload)} bytes, expected {expected.get('length')})"
        )
    if hashlib.sha256(payload).hexdigest() != expected.get("sha256"):
        raise ModelFileError(f"{path}: model file was modified (tensor checksum mismatch)")


def load_model(path):
    """Read a detector written by :func:`save_model`, without unpickling code."""
    from .estimator import VAEOutlierDetector

    header, payload = _read_parts(path)
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(f"{path}: unsupported model format version {header.get('format_version')!r}")
    _check_payload(path, header, payload)
    try:
        state_dict = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        network = VAENetwork.from_config(header["network"])
        network.load_state_dict(state_dict)
        params = dict(header["params"])
        for name in ("hidden_layer_sizes", "threshold_percentiles"):
            params[name] = tuple(params[name])
        detector = VAEOutlierDetector(**params)
        fitted = header["fitted"]
        detector.thresholds_ = tuple(fitted["thresholds_"])
        detector.importance_seed_ = fitted["importance_seed_"]
        if fitted["feature_names_in_"] is not None:
            detector.feature_names_in_ = np.asarray(fitted["feature_names_in_"], dtype=object)
        for name in _ARRAY_ATTRIBUTES:
            setattr(detector, name, np.asarray(fitted[name], dtype=np.float64))
        for name in _PLAIN_ATTRIBUTES:
            setattr(detector, name, fitted[name])
        detector.schema_ = TableSchema.from_dict(header["schema"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"{path}: model file content is inconsistent ({exc})") from None
    detector.network_ = network.eval()
    return detector


def read_header(path):
    """The JSON header of a model file (for ``vaefilter info``), checked like a load."""
    header, payload = _read_parts(path)
    _check_payload(path, header, payload)
    return header

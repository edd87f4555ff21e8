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
import struct

import numpy as np
import sklearn
import torch

from .columns import TableSchema
from .network import VAENetwork

MAGIC = b"VAEFILTER-MODEL2"
FORMAT_VERSION = 2
_REQUIRED_KEYS = {"format_version": int, "versions": dict, "params": dict, "fitted": dict, "schema": dict,
                  "network": dict, "payload": dict}
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
            "proposal_curve_": [[int(step), float(bound)] for step, bound in detector.proposal_curve_],
        },
        "schema": detector.schema_.to_dict(),
        "network": detector.network_.config(),
        "payload": {"length": len(payload)},
    }


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
    buffer = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in detector.network_.state_dict().items()}, buffer)
    payload = buffer.getvalue()
    return pack_model_file(_header(detector, payload), payload)


def save_model(detector, path):
    """Write a fitted detector to ``path`` in the safe format."""
    with open(path, "wb") as f:
        f.write(model_bytes(detector))


def _read_parts(path):
    """Header (a checked dict) and tensor payload of a model file."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(MAGIC):
        raise ModelFileError(f"{path}: not a vaefilter model file (wrong magic bytes)")
    start = len(MAGIC) + 8 + 32
    if len(data) < start:
        raise ModelFileError(f"{path}: truncated model file (no header)")
    (header_length,) = struct.unpack("<Q", data[len(MAGIC) : len(MAGIC) + 8])
    checksum = data[len(MAGIC) + 8 : start]
    if header_length > _MAX_HEADER_BYTES or start + header_length > len(data):
        raise ModelFileError(f"{path}: truncated or corrupt model file (header length {header_length})")
    header_bytes, payload = data[start : start + header_length], data[start + header_length :]
    if hashlib.sha256(header_bytes + payload).digest() != checksum:
        raise ModelFileError(f"{path}: model file is truncated or was modified (checksum mismatch)")
    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: corrupt model header ({exc})") from None
    _check_header(path, header, payload)
    return header, payload


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


def load_model(path):
    """Read a detector written by :func:`save_model`, without unpickling code."""
    from .estimator import VAEOutlierDetector

    header, payload = _read_parts(path)
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
        # files written before the proposal refit existed have no history
        detector.proposal_curve_ = [(int(step), float(bound)) for step, bound in fitted.get("proposal_curve_", [])]
        detector.schema_ = TableSchema.from_dict(header["schema"])
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"{path}: model file content cannot be loaded ({type(exc).__name__}: {first_line})") from None
    detector.network_ = network.eval()
    return detector


def read_header(path):
    """The JSON header of a model file (for ``vaefilter info``), checked like a load."""
    return _read_parts(path)[0]

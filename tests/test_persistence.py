"""Safe model files: exact round trips, and refusal of anything else.

Layout under test: MAGIC (16 bytes) | header length (8 bytes LE) | JSON header | torch payload.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct

import numpy as np
import pandas as pd
import pytest
import torch

from vaefilter import VAEOutlierDetector
from vaefilter.datasets import load_titanic
from vaefilter.persistence import (
    FORMAT_VERSION,
    MAGIC,
    ModelFileError,
    load_model,
    model_bytes,
    pack_model_file,
    read_header,
    save_model,
    unpack_model_file,
)

HEADER_START = len(MAGIC) + 8 + 32  # magic, header length, SHA-256 of header and payload

# 50 proposal refit steps, not 200: enough for a refit history of three checks (every 25 steps)
SMALL = dict(latent_dim=2, hidden_layer_sizes=(16,), n_importance_samples=16, max_epochs=10, proposal_steps=50,
             random_state=0)


@pytest.fixture(scope="module")
def numeric_model():
    rng = np.random.RandomState(0)
    X = rng.multivariate_normal([0, 1, 2], [[1, 0.5, 0], [0.5, 1, 0.3], [0, 0.3, 1]], size=300)
    return VAEOutlierDetector(**SMALL).fit(X), rng.normal(size=(50, 3)) * 2


@pytest.fixture(scope="module")
def mixed_model():
    frame = load_titanic()
    train, test = frame.iloc[:600], frame.iloc[600:700]
    detector = VAEOutlierDetector(**SMALL, handle_missing="model").fit(train)
    return detector, test


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, mixed_model):
    path = tmp_path_factory.mktemp("persistence") / "model.vf"
    save_model(mixed_model[0], path)
    return path


def _parts(data):
    raw, payload = unpack_model_file(data)
    return json.loads(raw), payload


def _assemble(header, payload, fix_checksum=True):
    """A model file of this header and payload; with fix_checksum, one that passes the checksum."""
    if fix_checksum:
        header = {**header, "payload": {**header.get("payload", {}), "length": len(payload)}}
        return pack_model_file(header, payload)
    raw = json.dumps(header).encode()
    return MAGIC + struct.pack("<Q", len(raw)) + b"\0" * 32 + raw + payload


# -------------------------------------------------------------- round trips
@pytest.mark.parametrize("which", ["numeric_model", "mixed_model"])
def test_round_trip_gives_identical_scores(which, request, tmp_path):
    detector, X = request.getfixturevalue(which)
    path = tmp_path / "m.vf"
    save_model(detector, path)
    loaded = load_model(path)
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))
    np.testing.assert_array_equal(loaded.predict(X), detector.predict(X))
    np.testing.assert_array_equal(loaded.decision_function(X), detector.decision_function(X))
    assert loaded.thresholds_ == tuple(detector.thresholds_)
    assert loaded.get_params()["threshold_percentiles"] == detector.get_params()["threshold_percentiles"]
    pd.testing.assert_frame_equal(loaded.explain(X), detector.explain(X))
    # saving the loaded model writes the same bytes: nothing is lost or re-derived
    assert model_bytes(loaded) == path.read_bytes()


def test_loaded_mixed_model_keeps_schema(mixed_model, model_file):
    detector, _ = mixed_model
    loaded = load_model(model_file)
    assert loaded.schema_.to_dict() == detector.schema_.to_dict()
    assert list(loaded.feature_names_in_) == list(detector.feature_names_in_)
    header = read_header(model_file)
    assert header["format_version"] == FORMAT_VERSION and header["payload"]["length"] > 0


def test_refit_history_survives_and_older_files_load(numeric_model, tmp_path):
    detector, X = numeric_model
    path = tmp_path / "m.vf"
    save_model(detector, path)
    loaded = load_model(path)
    assert loaded.proposal_curve_ == detector.proposal_curve_ and loaded.proposal_curve_
    # files written before the proposal refit existed lack its history
    header, payload = _parts(path.read_bytes())
    del header["fitted"]["proposal_curve_"]
    older = tmp_path / "older.vf"
    older.write_bytes(_assemble(header, payload))
    loaded = load_model(older)
    assert loaded.proposal_curve_ == []
    np.testing.assert_array_equal(loaded.score_samples(X), detector.score_samples(X))


@pytest.mark.parametrize("which", ["numeric_model", "mixed_model"])
def test_the_fitted_state_is_described_once_and_travels_whole(which, request, tmp_path):
    from vaefilter.estimator import FITTED_STATE

    detector, _ = request.getfixturevalue(which)
    described = {a.name for a in FITTED_STATE}
    fitted = {name for name in vars(detector) if name.endswith("_") and not name.startswith("_")}
    # every attribute fit sets is in FITTED_STATE (or is the network or the schema, saved apart)
    assert fitted - {"network_", "schema_"} <= described, "add new fitted attributes to FITTED_STATE"
    path = tmp_path / "m.vf"
    save_model(detector, path)
    loaded = load_model(path)
    for name in fitted - {"network_", "schema_"}:
        np.testing.assert_equal(getattr(loaded, name), getattr(detector, name), err_msg=name)
    # a pickle written before an attribute with a default existed gets that default
    state = detector.__getstate__()
    del state["proposal_curve_"]
    older = VAEOutlierDetector.__new__(VAEOutlierDetector)
    older.__setstate__(state)
    assert list(older.proposal_curve_) == []


def test_a_band_recalibrated_with_other_sides_is_saved_and_loaded(numeric_model, tmp_path):
    detector, X = numeric_model
    other = pickle.loads(pickle.dumps(detector))
    other.calibrate(X, threshold_percentiles=(1, None))
    assert other.thresholds_[1] is None and other.threshold_percentiles == detector.threshold_percentiles
    path = tmp_path / "m.vf"
    save_model(other, path)
    loaded = load_model(path)
    assert loaded.thresholds_ == other.thresholds_
    np.testing.assert_array_equal(loaded.predict(X), other.predict(X))


def test_a_model_file_missing_a_required_fitted_attribute_is_refused(model_file, tmp_path):
    header, payload = _parts(model_file.read_bytes())
    del header["fitted"]["validation_scores_"]
    bad = tmp_path / "bad.vf"
    bad.write_bytes(_assemble(header, payload))
    with pytest.raises(ModelFileError, match="fitted.validation_scores_ is missing"):
        load_model(bad)


# ----------------------------------------------------------- bad model files
def _corruptions(good):
    header, payload = _parts(good)
    (n,) = struct.unpack("<Q", good[16:24])
    h = HEADER_START
    flipped_payload = bytearray(good)
    flipped_payload[h + n + len(payload) // 2] ^= 0x01
    flipped_header = bytearray(good)
    flipped_header[h + n // 2] ^= 0x01
    cases = {
        "empty": (b"", "not a vaefilter model file"),
        "magic only": (MAGIC, "truncated"),
        "truncated in header length": (good[:20], "truncated"),
        "truncated in header": (good[: h + n // 2], "truncated"),
        "truncated in payload": (good[: h + n + len(payload) // 2], "truncated"),
        "one byte short": (good[:-1], "truncated"),
        "one byte extra": (good + b"\0", "checksum"),
        "flipped payload byte": (bytes(flipped_payload), "checksum"),
        "flipped header byte": (bytes(flipped_header), "checksum"),
        "header not JSON": (pack_model_file(b"#" * 40, payload), "corrupt model header"),
        "header not UTF-8": (pack_model_file(b"\xff" * 40, payload), "corrupt model header"),
        "huge header length": (good[:16] + struct.pack("<Q", 1 << 40) + good[24:], "header length"),
        "wrong format version": (_assemble({**header, "format_version": 99}, payload), "format version"),
        "header lacks network": (_assemble({k: v for k, v in header.items() if k != "network"}, payload), "'network' missing"),
        "header lacks params": (_assemble({k: v for k, v in header.items() if k != "params"}, payload), "'params' missing"),
        "foreign pickle": (pickle.dumps({"weights": np.zeros(3)}), "not a vaefilter model file"),
        "foreign torch file": (_torch_bytes({"w": torch.zeros(3)}), "not a vaefilter model file"),
        "random bytes": (np.random.RandomState(0).bytes(2048), "not a vaefilter model file"),
        "payload of other tensors": (_assemble(header, _torch_bytes({"w": torch.zeros(3)})), ""),
    }
    return cases


def _torch_bytes(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def test_bad_files_raise_model_file_error(model_file, tmp_path):
    for name, (data, words) in _corruptions(model_file.read_bytes()).items():
        path = tmp_path / (name.replace(" ", "_") + ".vf")
        path.write_bytes(data)
        with pytest.raises(ModelFileError) as raised:
            load_model(path)
        message = str(raised.value)
        assert message.startswith(str(path)), (name, message)
        assert words in message, (name, message)
        assert "\n" not in message, (name, message)


def test_mismatched_tensors_give_one_line_message(model_file, tmp_path):
    header, _ = _parts(model_file.read_bytes())
    path = tmp_path / "m.vf"
    path.write_bytes(_assemble(header, _torch_bytes({"w": torch.zeros(3)})))
    with pytest.raises(ModelFileError) as raised:
        load_model(path)
    assert "\n" not in str(raised.value)


def test_model_file_error_is_a_value_error():
    assert issubclass(ModelFileError, ValueError)


def test_read_header_refuses_tampered_payload(model_file, tmp_path):
    data = bytearray(model_file.read_bytes())
    data[-10] ^= 0xFF
    path = tmp_path / "m.vf"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum"):
        read_header(path)


def test_altered_header_values_are_refused(model_file, tmp_path):
    header, payload = _parts(model_file.read_bytes())
    header["fitted"]["thresholds_"][0] = -1e9  # everything would pass the gate
    path = tmp_path / "m.vf"
    path.write_bytes(_assemble(header, payload, fix_checksum=False))
    with pytest.raises(ModelFileError):
        load_model(path)


@pytest.mark.parametrize("header", [b"[1, 2]", b'"text"', b"null"])
def test_non_object_header_is_refused(model_file, tmp_path, header):
    _, payload = _parts(model_file.read_bytes())
    path = tmp_path / "m.vf"
    path.write_bytes(pack_model_file(header, payload))
    with pytest.raises(ModelFileError):
        load_model(path)


def test_read_header_refuses_incomplete_header(model_file, tmp_path):
    header, payload = _parts(model_file.read_bytes())
    del header["schema"]
    path = tmp_path / "m.vf"
    path.write_bytes(_assemble(header, payload))
    with pytest.raises(ModelFileError):
        read_header(path)


# ------------------------------------------------------------ never unpickle
class _Exploit:
    """Unpickling this runs a shell command (the classic pickle attack)."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_payloads(marker):
    return {
        "raw pickle": pickle.dumps(_Exploit(marker)),
        "raw pickle protocol 2": pickle.dumps(_Exploit(marker), protocol=2),
        "torch zip with exploit": _torch_bytes({"encoder.0.weight": _Exploit(marker)}),
    }


@pytest.mark.parametrize("kind", ["raw pickle", "raw pickle protocol 2", "torch zip with exploit"])
def test_malicious_payload_is_refused_without_side_effect(model_file, tmp_path, kind):
    marker = tmp_path / "pwned"
    header, _ = _parts(model_file.read_bytes())
    payload = _malicious_payloads(marker)[kind]
    path = tmp_path / "evil.vf"
    path.write_bytes(_assemble(header, payload))  # checksum matches: only the unpickler stands in the way
    with pytest.raises(Exception) as raised:
        load_model(path)
    assert not marker.exists(), "the loader executed code from the model file"
    assert not isinstance(raised.value, (AttributeError, NameError))
    # sanity: the same payload does run code under a plain pickle.load (so the test can detect it)
    if kind.startswith("raw"):
        pickle.loads(payload)
        assert marker.exists()


@pytest.mark.parametrize("kind", ["torch zip with exploit", "zero bytes"])
def test_unloadable_payload_raises_model_file_error(model_file, tmp_path, kind):
    marker = tmp_path / "pwned"
    header, _ = _parts(model_file.read_bytes())
    path = tmp_path / "evil.vf"
    payload = b"\x00" * 64 if kind == "zero bytes" else _malicious_payloads(marker)[kind]
    path.write_bytes(_assemble(header, payload))
    with pytest.raises(ModelFileError):
        load_model(path)
    assert not marker.exists()


# ------------------------------------------- forged header values (issue 14, item 12)
def _forged(header, change):
    """A deep copy of the header with `change` applied (checksum recomputed on assembly)."""
    forged = json.loads(json.dumps(header))
    change(forged)
    return forged


_FORGERIES = {
    "n_importance_samples 0": (lambda h: h["params"].update(n_importance_samples=0), "n_importance_samples"),
    "n_importance_samples 1e9": (lambda h: h["params"].update(n_importance_samples=10**9), "n_importance_samples"),
    "n_importance_samples float": (lambda h: h["params"].update(n_importance_samples=1.5), "n_importance_samples"),
    "latent_dim negative": (lambda h: h["params"].update(latent_dim=-1), "latent_dim"),
    "posterior steps huge": (lambda h: h["params"].update(posterior_search_steps=10**9), "posterior_search_steps"),
    "device unknown": (lambda h: h["params"].update(device="tpu"), "device"),
    "n_jobs 0": (lambda h: h["params"].update(n_jobs=0), "n_jobs"),
    "n_jobs float": (lambda h: h["params"].update(n_jobs=1.5), "n_jobs"),
    "n_jobs text": (lambda h: h["params"].update(n_jobs="all"), "n_jobs"),
    "hidden width 0": (lambda h: h["params"].update(hidden_layer_sizes=[0]), "hidden_layer_sizes"),
    "inverted band": (lambda h: h["fitted"].update(thresholds_=h["fitted"]["thresholds_"][::-1]), "thresholds_"),
    "band of strings": (lambda h: h["fitted"].update(thresholds_=["a", "b"]), "thresholds_"),
    "band without sides": (lambda h: h["fitted"].update(thresholds_=[None, None]), "thresholds_"),
    "percentiles inverted": (lambda h: h["params"].update(threshold_percentiles=[75, 25]), "threshold_percentiles"),
    "seed negative": (lambda h: h["fitted"].update(importance_seed_=-5), "importance_seed_"),
    "validation scores empty": (lambda h: h["fitted"].update(validation_scores_=[]), "validation_scores_"),
    "column_typical_ short": (lambda h: h["fitted"].update(column_typical_=[0.0]), "column_typical_"),
    "n_features_in_ wrong": (lambda h: h["fitted"].update(n_features_in_=99), "n_features_in_"),
    "network latent_dim differs": (lambda h: h["network"].update(latent_dim=7), "latent_dim"),
}


@pytest.mark.parametrize("case", sorted(_FORGERIES))
def test_forged_header_values_are_refused_naming_the_field(model_file, tmp_path, case):
    change, field = _FORGERIES[case]
    header, payload = _parts(model_file.read_bytes())
    path = tmp_path / "forged.vf"
    path.write_bytes(_assemble(_forged(header, change), payload))
    with pytest.raises(ModelFileError, match=field) as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ModelFileError, match=field):
        read_header(path)


def test_unchanged_header_still_loads(model_file):
    assert load_model(model_file).thresholds_


def test_files_with_numeric_relations_only_load_as_numeric(tmp_path):
    # last round's 'linear' had no categories' shifts: its files carry no 'discrete_relations'
    # entry and must load as 'numeric' (a refit as 'linear' would build another model)
    frame = load_titanic().iloc[:300]
    detector = VAEOutlierDetector(**SMALL, column_relations="numeric", handle_missing="model").fit(frame)
    path = tmp_path / "m.vf"
    save_model(detector, path)
    header, payload = _parts(path.read_bytes())
    assert header["network"]["likelihood"].pop("discrete_relations") is False
    header["params"]["column_relations"] = "linear"
    older = tmp_path / "older.vf"
    older.write_bytes(_assemble(header, payload))
    loaded = load_model(older)
    assert loaded.column_relations == "numeric" and loaded.network_.likelihood.discrete is None
    np.testing.assert_array_equal(loaded.score_samples(frame), detector.score_samples(frame))
    # this round's 'linear' files keep their name and their shifts
    current = VAEOutlierDetector(**SMALL, handle_missing="model").fit(frame)
    save_model(current, path)
    assert load_model(path).column_relations == "linear" and load_model(path).network_.likelihood.discrete is not None


def test_a_band_of_one_value_is_written_and_read_back(tmp_path):
    # every row alike: every calibration row scores the same, so the band's edges meet
    X = np.tile([[1.0, 2.0]], (20, 1))
    detector = VAEOutlierDetector(latent_dim=2, hidden_layer_sizes=(8,), max_epochs=5, n_importance_samples=8,
                                  proposal_steps=0, random_state=0).fit(X)
    lower, upper = detector.thresholds_
    assert lower == upper
    save_model(detector, tmp_path / "m.vf")
    assert load_model(tmp_path / "m.vf").thresholds_ == detector.thresholds_


def test_a_detector_that_cannot_be_written_leaves_the_file_there_alone(tmp_path, monkeypatch):
    import vaefilter.persistence as persistence

    path = tmp_path / "m.vf"
    path.write_bytes(b"an earlier model")

    def unwritable(detector):
        raise ValueError("cannot be written")

    monkeypatch.setattr(persistence, "model_bytes", unwritable)
    with pytest.raises(ValueError, match="cannot be written"):
        persistence.save_model(object(), path)
    assert path.read_bytes() == b"an earlier model"

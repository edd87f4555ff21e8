"""The HTML report: one self-contained, escaped, well-formed file."""

import base64
import re
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from vaefilter import VAEOutlierDetector  # noqa: E402
from vaefilter.datasets import load_titanic  # noqa: E402
from vaefilter.report import build_report, reason_groups, reason_key, write_report  # noqa: E402

SMALL = dict(latent_dim=2, hidden_layer_sizes=(64,), max_epochs=15, n_importance_samples=16, proposal_steps=20,
             random_state=0)
HOSTILE = "femal<script>alert(1)</script>"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
NAMES = ["pclass", "survived", "sex", "age", "sibsp", "parch", "fare", "embarked"]


class Checker(HTMLParser):
    """Collects tags, attributes and nesting errors."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.starts, self.attrs = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.starts.append(tag)
        self.attrs.extend(attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()


def parse(document):
    checker = Checker()
    checker.feed(document)
    checker.close()
    return checker


@pytest.fixture(scope="module")
def titanic():
    return load_titanic()


@pytest.fixture(scope="module")
def detector(titanic):
    return VAEOutlierDetector(handle_missing="model", **SMALL).fit(titanic)


@pytest.fixture(scope="module")
def batch(titanic):
    rows = titanic.sample(120, random_state=1).copy()
    fare = rows.columns.get_loc("fare")
    rows.iloc[:6, fare] = rows.iloc[:6, fare] * 1000 + 1000
    rows["sex"] = rows["sex"].astype(object)
    rows.iloc[6:9, rows.columns.get_loc("sex")] = HOSTILE
    return rows


@pytest.fixture(scope="module")
def document(detector, batch):
    return build_report(detector, batch=batch, title="Titanic <check>")


def test_report_is_well_formed_html(document):
    checker = parse(document)
    assert checker.errors == []
    assert checker.stack == []
    for tag in ("html", "head", "body", "style", "table", "h1", "h2"):
        assert tag in checker.starts
    assert document.startswith("<!DOCTYPE html>")


def test_report_is_self_contained(document):
    checker = parse(document)
    assert "script" not in checker.starts
    links = [value for name, value in checker.attrs if name in ("src", "href")]
    assert links and all(value.startswith("data:image/png;base64,") for value in links)
    assert "http://" not in document and "https://" not in document
    assert "@import" not in document and "url(" not in document
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', document)
    assert len(images) >= 2  # training curves and the score histogram
    for encoded in images:
        assert base64.b64decode(encoded)[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(document) < 600_000


def test_report_escapes_user_data(document):
    assert "<script>" not in document
    assert "&lt;script&gt;" in document
    assert "Titanic &lt;check&gt;" in document


def test_report_states_band_share_and_reasons(document, detector, batch):
    lower, upper = detector.thresholds_
    assert f"{lower:.6g}" in document and f"{upper:.6g}" in document
    share = np.mean(detector.predict(batch) == -1)
    assert f"{share:.1%}" in document
    # the corrupted fares are the least likely rows: their reason leads with fare
    assert "fare (below the band)" in document
    assert "Generated rows beside real ones" in document
    for spec in detector.schema_.columns:
        assert f"<td>{spec.name}</td>" in document


def test_report_without_a_batch_and_written_to_a_file(detector, tmp_path):
    path = write_report(detector, tmp_path / "model.html")
    text = path.read_text(encoding="utf-8")
    checker = parse(text)
    assert checker.errors == [] and checker.stack == []
    assert "data:image/png;base64," in text
    assert "Batch" not in text


def test_report_of_an_array_batch():
    rng = np.random.RandomState(0)
    X = rng.normal(size=(300, 3))
    detector = VAEOutlierDetector(**dict(SMALL, max_epochs=3)).fit(X)
    batch = np.vstack([rng.normal(size=(20, 3)), [[40.0, 0.0, 0.0]]])
    document = build_report(detector, batch=batch)
    assert parse(document).errors == []
    assert "x0 (below the band)" in document


def test_reason_key_takes_the_first_named_column():
    low = (
        "log p(x)=-25.6 below the band's lower edge -14.8: sex='femal' (6.8 nats below typical, "
        "a category never seen in training); fare=227.525 (3.4 nats below typical)"
    )
    high = (
        "log p(x)=-3.1 above the band's upper edge -6.9: unusually typical row (likelihood models "
        "score some anomalies, e.g. constant or blank rows, too high)"
    )
    joint = "log p(x)=-30.0 below the band's lower edge -14.8: jointly unlikely: no single column stands out"
    assert reason_key(low, NAMES) == "sex (below the band)"
    assert reason_key(high, NAMES) == "unusually typical (above the band)"
    assert reason_key(joint, NAMES) == "jointly unlikely (below the band)"
    # a column name that contains '=' is still found whole
    assert reason_key("log p(x)=-9.0 below the band's lower edge -5.0: a=b=3 (2.0 nats below typical)", ["a=b"]) == (
        "a=b (below the band)"
    )


def test_reason_groups_count_rejected_rows():
    import pandas as pd

    reasons = [
        "log p(x)=-25.6 below the band's lower edge -14.8: fare=1e6 (99.0 nats below typical); "
        "age=3 (1.2 nats below typical)",
        "log p(x)=-20.0 below the band's lower edge -14.8: fare=2e6 (80.0 nats below typical)",
        "log p(x)=-19.0 below the band's lower edge -14.8: age=99 (5.0 nats below typical); "
        "fare=80 (1.1 nats below typical)",
        "",
    ]
    explanation = pd.DataFrame({"log_px": [-25.6, -20.0, -19.0, -10.0], "is_valid": [False, False, False, True],
                                "reason": reasons})
    groups, anywhere = reason_groups(explanation, NAMES)
    assert groups["cause (first column named)"].tolist() == ["fare (below the band)", "age (below the band)"]
    assert groups["rows"].tolist() == [2, 1]
    assert anywhere.to_dict() == {"fare": 3, "age": 2}


def test_missing_matplotlib_names_the_extra(detector, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"vaefilter\[plot\]"):
        build_report(detector)


def test_report_of_a_batch_with_a_repeated_index(detector, batch):
    repeated = batch.set_axis(np.zeros(len(batch), dtype=int))
    document = build_report(detector, batch=repeated)
    assert parse(document).errors == []
    assert "fare (below the band)" in document

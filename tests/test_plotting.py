"""Pictures: each returns a Figure with drawn content and saves a PNG."""

import copy
import io
import sys

import numpy as np
import pytest
from scipy.stats import norm

pytest.importorskip("matplotlib")

from matplotlib.figure import Figure  # noqa: E402

from vaefilter import VAEOutlierDetector  # noqa: E402
from vaefilter import plotting  # noqa: E402
from vaefilter.datasets import digits_split, load_titanic  # noqa: E402
from vaefilter.estimator import training_bound_name  # noqa: E402

# 50 proposal refit steps, not 200: the refit curve still has three checks (every 25 steps) to draw
SMALL = dict(latent_dim=2, hidden_layer_sizes=(64,), max_epochs=30, n_importance_samples=16, proposal_steps=50,
             random_state=0)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def digits():
    known, unseen = digits_split()
    return known[:300], unseen[:100]


@pytest.fixture(scope="module")
def digit_detector(digits):
    return VAEOutlierDetector(**dict(SMALL, max_epochs=15)).fit(digits[0])


@pytest.fixture(scope="module")
def table():
    return load_titanic().iloc[:300]


@pytest.fixture(scope="module")
def table_detector(table):
    return VAEOutlierDetector(handle_missing="model", **dict(SMALL, max_epochs=5)).fit(table)


def assert_png(figure, min_bytes=3000):
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=60)
    data = buffer.getvalue()
    assert data[:8] == PNG_SIGNATURE
    assert len(data) > min_bytes


def the_axes(figure):
    # the first axes is the plot; a colour bar may follow
    assert isinstance(figure, Figure)
    assert figure.axes
    return figure.axes[0]


# ------------------------------------------------------------ latent grid
def test_latent_grid_of_images(digit_detector):
    figure = plotting.plot_latent_grid(digit_detector, n=6, image_shape=(8, 8))
    ax = the_axes(figure)
    assert len(ax.images) == 1
    canvas = np.ma.filled(ax.images[0].get_array(), np.nan)
    assert canvas.shape == (6 * 8 + 5, 6 * 8 + 5)  # 6x6 tiles, one-pixel gaps
    assert np.isnan(canvas[8, :]).all()  # the gap below the first row of tiles
    assert np.nanmax(canvas) > np.nanmin(canvas)  # the decoder does not draw one flat image
    assert "z1" in ax.get_xlabel() and "z2" in ax.get_ylabel()
    assert_png(figure)


def test_latent_grid_quantiles_span_the_extent(digit_detector, monkeypatch):
    seen = []
    original = digit_detector.decode
    monkeypatch.setattr(digit_detector, "decode", lambda Z: seen.append(np.asarray(Z)) or original(Z))
    plotting.plot_latent_grid(digit_detector, n=5, image_shape=(8, 8), extent=0.95)
    Z = seen[0]
    assert Z.shape == (25, 2)
    # probabilities 0.025 .. 0.975 evenly spaced, through the normal inverse CDF
    expected = norm.ppf([0.025, 0.2625, 0.5, 0.7375, 0.975])
    np.testing.assert_allclose(np.sort(np.unique(Z[:, 0])), expected, atol=1e-6)
    np.testing.assert_allclose(np.sort(np.unique(Z[:, 1])), expected, atol=1e-6)
    # the first decoded point is the top-left tile: lowest z1, highest z2
    np.testing.assert_allclose(Z[0], [expected[0], expected[-1]])


def test_latent_grid_heatmap_for_a_table(table_detector, table):
    figure = plotting.plot_latent_grid(table_detector, n=4)
    ax = the_axes(figure)
    assert ax.images[0].get_array().shape == (16, table.shape[1])
    assert [t.get_text() for t in ax.get_xticklabels()] == list(table.columns)
    assert ax.get_ylabel()
    assert_png(figure)


def test_latent_grid_needs_two_latent_dimensions(digits):
    detector = VAEOutlierDetector(**dict(SMALL, latent_dim=3, max_epochs=1)).fit(digits[0][:100])
    with pytest.raises(ValueError, match="latent_dim=3"):
        plotting.plot_latent_grid(detector)


def test_into_a_given_axes(digit_detector):
    figure = Figure()
    ax = figure.add_subplot(1, 2, 2)
    assert plotting.plot_latent_grid(digit_detector, n=3, image_shape=(8, 8), ax=ax) is figure
    assert ax.images


# ----------------------------------------------------------------- scores
def test_scores_with_a_batch(digit_detector, digits):
    figure = plotting.plot_scores(digit_detector, digits[1])
    ax = the_axes(figure)
    assert len(ax.patches) > 20  # histogram bars, the band's span
    share = np.mean(digit_detector.predict(digits[1]) == -1)
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"{share:.1%} rejected" in legend
    assert "valid band" in legend
    assert "log p(x)" in ax.get_xlabel() and ax.get_ylabel() == "density"
    assert_png(figure)


def test_scores_clip_extreme_rows_and_say_so(digit_detector, digits):
    batch = np.vstack([digits[1][:50], digits[1][:3] * 50])
    figure = plotting.plot_scores(digit_detector, {"corrupted": batch})
    ax = the_axes(figure)
    assert min(digit_detector.score_samples(batch)) < ax.get_xlim()[0]
    assert "clipped" in ax.get_xlabel()
    # the x-range stays near the calibration scores
    low, high = ax.get_xlim()
    assert high - low < 50 * np.subtract(*np.percentile(digit_detector.validation_scores_, [75, 25]))


def test_scores_with_a_one_sided_band(digit_detector, digits):
    detector = copy.deepcopy(digit_detector).calibrate(digits[0][:100], threshold_percentiles=(5, None))
    assert detector.thresholds_[1] is None
    figure = plotting.plot_scores(detector)
    ax = the_axes(figure)
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "+inf" in legend
    assert_png(figure)


# --------------------------------------------------------------- training
def test_training_curves(digit_detector):
    figure = plotting.plot_training(digit_detector)
    ax = the_axes(figure)
    assert len(ax.lines) >= 3  # training, held-out, the best-epoch line and dot
    training = ax.lines[0].get_ydata()
    np.testing.assert_allclose(training, digit_detector.loss_curve_)
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"best epoch {digit_detector.best_epoch_}" in legend
    assert ax.get_xlabel() == "epoch" and "nats" in ax.get_ylabel()
    assert_png(figure)


def test_proposal_refit_curve(digit_detector):
    figure = plotting.plot_proposal_refit(digit_detector)
    ax = the_axes(figure)
    steps, bounds = zip(*digit_detector.proposal_curve_)
    np.testing.assert_allclose(ax.lines[0].get_xdata(), steps)
    np.testing.assert_allclose(ax.lines[0].get_ydata(), bounds)
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert f"encoder as trained on the {training_bound_name(digit_detector)}" in legend
    assert_png(figure)


def test_proposal_refit_curve_without_refit(digits):
    detector = VAEOutlierDetector(max_epochs=2, proposal_steps=0, random_state=0).fit(digits[0])
    figure = plotting.plot_proposal_refit(detector)
    assert "proposal_steps=0" in " ".join(t.get_text() for t in figure.axes[0].texts)
    assert_png(figure)


# ---------------------------------------------------------------- samples
def test_samples_as_images(digit_detector, digits):
    figure = plotting.plot_samples(digit_detector, digits[0], n=4, image_shape=(8, 8))
    ax = the_axes(figure)
    canvas = np.ma.filled(ax.images[0].get_array(), np.nan)
    assert canvas.shape == (2 * 8 + 1, 4 * 8 + 3)
    assert np.isfinite(canvas[:8]).sum() == 4 * 64 and np.isfinite(canvas[9:]).sum() == 4 * 64
    assert [t.get_text() for t in ax.get_yticklabels()] == ["real", "generated"]
    assert_png(figure)


def test_samples_as_a_table(table_detector, table):
    figure = plotting.plot_samples(table_detector, table, n=3)
    ax = the_axes(figure)
    assert len(ax.tables) == 1
    cells = ax.tables[0].get_celld()
    assert cells[(0, 1)].get_text().get_text() == table.columns[0]
    labels = [cells[(r, 0)].get_text().get_text() for r in range(1, 7)]
    assert labels == ["real 1", "real 2", "real 3", "generated 1", "generated 2", "generated 3"]
    assert_png(figure)


# ------------------------------------------------------- optional extra
def test_missing_matplotlib_names_the_extra(digit_detector, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    for draw in (plotting.plot_training, plotting.plot_scores):
        with pytest.raises(ImportError, match=r"vaefilter\[plot\]"):
            draw(digit_detector)


def test_user_text_is_not_read_as_mathtext():
    import pandas as pd

    rng = np.random.RandomState(0)
    name = r"cost $\notacommand$"  # as mathtext this fails to draw
    frame = pd.DataFrame({name: rng.normal(size=120), "kind": pd.Categorical(rng.choice([r"$\bad$", "b"], 120))})
    detector = VAEOutlierDetector(**dict(SMALL, max_epochs=2)).fit(frame)
    for figure in (plotting.plot_latent_grid(detector, n=3), plotting.plot_samples(detector, frame, n=2)):
        assert_png(figure, min_bytes=1000)

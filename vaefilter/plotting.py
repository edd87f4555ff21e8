"""Pictures of a fitted detector (the optional ``plot`` extra, matplotlib).

Every function draws on a ``matplotlib.figure.Figure`` made without pyplot
(no global state, no display, the Agg renderer when saved) and returns it.
Pass ``ax`` to draw into an axes of your own figure instead.

* :func:`plot_latent_grid` -- what the decoder makes of a grid of latent points.
* :func:`plot_scores` -- the calibration scores, the band, and a new batch.
* :func:`plot_training` -- training and held-out loss per epoch.
* :func:`plot_epoch_scores` -- the cross-validated score of each epoch count.
* :func:`plot_samples` -- real rows beside generated ones.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.utils.validation import check_is_fitted

from ._optional import import_optional
from .band import signed_distance
from .estimator import (CV_EPOCHS_BELOW_ROWS, CV_EPOCHS_FOLDS, CV_TRIM_SHARE, chosen_epoch_count, held_out_label,
                        training_bound_name, training_loss_name)

__all__ = ["plot_epoch_scores", "plot_latent_grid", "plot_samples", "plot_score_histogram", "plot_scores",
           "plot_training", "require_matplotlib"]

VALID_COLOUR = "#2ca02c"
TILE_GAP_COLOUR = "#c6d4e6"
BATCH_COLOURS = ("#d62728", "#1f77b4", "#ff7f0e", "#9467bd")
# the x-range of score histograms spans the validation median minus this many
# interquartile ranges to the median plus SCORE_RANGE_RIGHT_IQRS of them (log p(x)
# has a long left tail); farther scores are clipped into the edge bins (log p(x)
# of a corrupted row can be -1e6)
SCORE_RANGE_LEFT_IQRS = 8.0
SCORE_RANGE_RIGHT_IQRS = 4.0


def require_matplotlib():
    """The matplotlib module; an ImportError naming the ``plot`` extra when it is missing."""
    return import_optional("matplotlib", extra="plot", purpose="plotting")


def _figure_and_axes(ax, figsize):
    """``ax``'s figure, or a new pyplot-free Figure with one axes."""
    require_matplotlib()
    if ax is not None:
        return ax.figure, ax
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, layout="constrained")
    return figure, figure.add_subplot()


def _numeric_matrix(detector, X):
    """Rows in the training space as a float matrix: the schema's own coding (categories as their codes)."""
    if not isinstance(X, pd.DataFrame):
        return np.asarray(X, dtype=float)
    return detector.schema_.encode(X)


def _plain(text):
    """``text`` shown literally: matplotlib would read '$...$' as mathtext."""
    return str(text).replace("$", r"\$")


def _tile(images, n_rows, n_cols, gap=1, fill=np.nan):
    """Arrange ``n_rows * n_cols`` images of one shape on a canvas."""
    height, width = images.shape[1:3]
    canvas = np.full((n_rows * (height + gap) - gap, n_cols * (width + gap) - gap), fill)
    for k, image in enumerate(images):
        r, c = divmod(k, n_cols)
        canvas[r * (height + gap) : r * (height + gap) + height, c * (width + gap) : c * (width + gap) + width] = image
    return canvas


def _as_images(matrix, image_shape):
    image_shape = tuple(int(s) for s in image_shape)
    if int(np.prod(image_shape)) != matrix.shape[1]:
        raise ValueError(f"image_shape {image_shape} does not hold {matrix.shape[1]} features")
    return matrix.reshape((matrix.shape[0],) + image_shape)


# ------------------------------------------------------------ latent grid
def plot_latent_grid(detector, n=15, image_shape=None, ax=None, extent=0.99, cmap="gray_r"):
    """Decode E[x | z] on an n x n grid of a 2-D latent space.

    The grid points are Gaussian quantiles: each axis takes ``n`` evenly
    spaced probabilities between ``(1 - extent) / 2`` and
    ``1 - (1 - extent) / 2`` through the standard-normal inverse CDF, so the
    grid covers the prior N(0, I) with equal mass between neighbours.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector with ``latent_dim == 2``
    n : int, default=15
        Grid points per latent axis.
    image_shape : tuple of int, optional
        Shape of one row as an image, e.g. ``(8, 8)`` for the digits: the
        decoded rows are tiled as greyscale images (z1 grows to the right, z2
        upwards). Without it, a heatmap with one row per grid point and one
        column per feature, standardised per feature.
    ax : matplotlib Axes, optional
    extent : float in (0, 1), default=0.99
        Prior mass covered by each axis of the grid.
    cmap : str, default='gray_r'
        Colour map of the images (dark ink on white for the digits).

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_is_fitted(detector)
    if detector.latent_dim != 2:
        raise ValueError(
            f"plot_latent_grid needs a 2-D latent space; this detector has latent_dim={detector.latent_dim}. "
            "Refit with latent_dim=2, or plot transform(X) after a projection."
        )
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    if not 0 < extent < 1:
        raise ValueError(f"extent must lie in (0, 1), got {extent}")
    tail = (1 - extent) / 2
    axis_values = norm.ppf(np.linspace(tail, 1 - tail, n))
    # row-major from the top-left: z2 from high to low, z1 from low to high
    z1, z2 = np.meshgrid(axis_values, axis_values[::-1])
    Z = np.column_stack([z1.ravel(), z2.ravel()])
    decoded = _numeric_matrix(detector, detector.decode(Z))

    if image_shape is not None:
        images = _as_images(decoded, image_shape)
        figure, ax = _figure_and_axes(ax, (6.4, 6.4))
        height, width = images.shape[1:3]
        # a one-pixel gap between the tiles keeps neighbouring strokes apart
        canvas = _tile(images, n, n, gap=1)
        cmap_object = require_matplotlib().colormaps[cmap].with_extremes(bad=TILE_GAP_COLOUR)
        # a robust grey scale: the grid's far corners can decode to extreme values
        vmin, vmax = np.nanpercentile(decoded, [1, 99.5])
        if vmax <= vmin:
            vmin, vmax = np.nanmin(decoded), np.nanmax(decoded) + 1e-12
        ax.imshow(canvas, cmap=cmap_object, interpolation="nearest", vmin=vmin, vmax=vmax)
        # ticks at the centres of a few cells, labelled with their z
        shown = np.unique(np.linspace(0, n - 1, min(n, 5)).round().astype(int))
        ax.set_xticks(shown * (width + 1) + (width - 1) / 2, [f"{axis_values[i]:.2f}" for i in shown])
        ax.set_yticks(shown * (height + 1) + (height - 1) / 2, [f"{axis_values[::-1][i]:.2f}" for i in shown])
        ax.set_xlabel("z1 (standard-normal quantile)")
        ax.set_ylabel("z2 (standard-normal quantile)")
        ax.set_title(f"E[x | z] on a {n}x{n} latent grid ({extent:.0%} of the prior per axis)")
        return figure

    mean = np.nanmean(decoded, axis=0)
    std = np.nanstd(decoded, axis=0)
    standardised = (decoded - mean) / np.where(std > 0, std, 1.0)
    n_features = decoded.shape[1]
    figure, ax = _figure_and_axes(ax, (max(4.8, 0.35 * n_features + 2.5), 6.0))
    limit = max(float(np.nanmax(np.abs(standardised))), 1e-12)
    image = ax.imshow(standardised, aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    names = [_plain(name) for name in detector.schema_.names]
    if n_features <= 40:
        ax.set_xticks(np.arange(n_features), names, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_xlabel("feature")
    ax.set_ylabel(f"latent grid point (row-major: z2 from {axis_values[-1]:.2f} down, z1 across)")
    ax.set_title(f"E[x | z] on a {n}x{n} latent grid, standardised per feature")
    figure.colorbar(image, ax=ax, label="standard deviations from the grid mean")
    return figure


# ----------------------------------------------------------------- scores
def _score_range(reference, others, thresholds):
    """A robust x-range: around the validation scores, band edges included."""
    q25, median, q75 = np.percentile(reference, [25, 50, 75])
    iqr = max(q75 - q25, 1e-6)
    low, high = median - SCORE_RANGE_LEFT_IQRS * iqr, median + SCORE_RANGE_RIGHT_IQRS * iqr
    everything = np.concatenate([reference] + list(others))
    low = max(low, float(everything.min()))
    high = min(high, float(everything.max()))
    for edge in thresholds:
        if edge is not None:
            low, high = min(low, edge), max(high, edge)
    if high - low < 1e-6:
        low, high = low - 0.5, high + 0.5
    return low, high


def _band_label(thresholds):
    lower, upper = thresholds
    left = "-inf" if lower is None else f"{lower:.1f}"
    right = "+inf" if upper is None else f"{upper:.1f}"
    return f"valid band [{left}, {right}]"


def plot_score_histogram(detector, batches, ax=None, bins=50):
    """Histogram of the calibration scores, the band and scores already computed.

    :func:`plot_scores` for batches that have been scored: ``batches`` maps a
    legend label to its rows' log p(x) (an empty dict draws the calibration
    scores and the band alone).

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_is_fitted(detector)
    figure, ax = _figure_and_axes(ax, (7.0, 4.2))
    reference = np.asarray(detector.validation_scores_, dtype=float)
    batches = {label: np.asarray(scores, dtype=float) for label, scores in batches.items()}
    low, high = _score_range(reference, list(batches.values()), detector.thresholds_)
    edges = np.linspace(low, high, int(bins) + 1)
    n_clipped = 0

    def clipped(values):
        nonlocal n_clipped
        n_clipped += int(np.sum((values < low) | (values > high)))
        return np.clip(values, low, high)

    ax.hist(
        clipped(reference),
        bins=edges,
        density=True,
        color="0.6",
        alpha=0.7,
        label=f"calibration rows (n={reference.size})",
    )
    rejected_shares = []
    for colour, (label, scores) in zip(BATCH_COLOURS * 4, batches.items()):
        rejected = float(np.mean(signed_distance(scores, detector.thresholds_) < 0)) if scores.size else 0.0
        rejected_shares.append(rejected)
        ax.hist(
            clipped(scores),
            bins=edges,
            density=bool(scores.size),  # an empty batch: a density of no rows is 0/0, drawn flat
            histtype="step",
            linewidth=1.8,
            color=colour,
            label=f"{_plain(label)} (n={scores.size}, {rejected:.1%} rejected)",
        )

    lower, upper = detector.thresholds_
    ax.axvspan(low if lower is None else lower, high if upper is None else upper, color=VALID_COLOUR, alpha=0.15,
               label=_band_label(detector.thresholds_), zorder=0)
    for edge in (lower, upper):
        if edge is not None:
            ax.axvline(edge, color=VALID_COLOUR, linestyle="--", linewidth=1.2)
    ax.set_xlim(low, high)
    xlabel = "log p(x) (nats per row; higher is more typical)"
    if n_clipped:
        xlabel += f"\n{n_clipped} score(s) outside [{low:.1f}, {high:.1f}] clipped into the edge bins"
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    if len(batches) == 1:
        ax.set_title(f"log p(x) and the valid band: {rejected_shares[0]:.1%} of the batch rejected")
    else:
        ax.set_title("log p(x) and the valid band")
    ax.legend(loc="upper left", fontsize="small", framealpha=0.85)
    return figure


def plot_scores(detector, X_new=None, ax=None, bins=50, label="new batch"):
    """Histogram of the calibration scores with the valid band, and a new batch.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
    X_new : array-like, DataFrame or dict of them, optional
        Rows to score and overlay; the legend gives each one's rejected share.
        A dict maps legend labels to batches.
    ax : matplotlib Axes, optional
    bins : int, default=50
    label : str, default='new batch'
        Legend label of ``X_new`` when it is a single batch.

    Returns
    -------
    matplotlib.figure.Figure

    Notes
    -----
    The x-range runs from 8 interquartile ranges below the median validation
    score to 4 above it (at most to the extreme scores), so that a few huge
    negative scores do not squash the histogram; scores beyond it are counted
    in the edge bins and the axis label says how many.
    """
    check_is_fitted(detector)
    require_matplotlib()
    if X_new is None:
        batches = {}
    elif isinstance(X_new, Mapping):
        batches = {str(name): detector.score_samples(rows) for name, rows in X_new.items()}
    else:
        batches = {label: detector.score_samples(X_new)}
    return plot_score_histogram(detector, batches, ax=ax, bins=bins)


# --------------------------------------------------------------- training
def plot_training(detector, ax=None):
    """Training and held-out loss (-ELBO, or the negative K-sample bound; nats per row) per epoch, best epoch marked.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_is_fitted(detector)
    figure, ax = _figure_and_axes(ax, (7.0, 4.2))
    train = np.asarray(detector.loss_curve_, dtype=float)
    val = np.asarray(detector.validation_loss_curve_, dtype=float)
    epochs = np.arange(1, train.size + 1)
    ax.plot(epochs, train, color=BATCH_COLOURS[1], linewidth=1.6, label="training")
    curves = [train]
    if val.size:
        ax.plot(np.arange(1, val.size + 1), val, color=BATCH_COLOURS[2], linewidth=1.6, label="held-out")
        curves.append(val)
    best = int(detector.best_epoch_)
    if 1 <= best <= train.size:
        monitored = val if val.size else train
        ax.axvline(best, color="0.4", linestyle=":", linewidth=1.2)
        ax.plot([best], [monitored[best - 1]], marker="o", color="black", linestyle="none",
                label=f"best epoch {best} ({monitored[best - 1]:.2f} nats/row, weights kept)")
    # the first epochs can sit far above the rest: keep the later ones readable
    finite = np.concatenate([c[np.isfinite(c)] for c in curves])
    later = np.concatenate([c[min(len(c) - 1, max(1, len(c) // 10)):] for c in curves])
    if finite.size and later.size:
        top, bottom = float(later.max()), float(finite.min())
        margin = 0.08 * max(top - bottom, 1e-6)
        if finite.max() > top + 4 * margin:
            ax.set_ylim(bottom - margin, top + 4 * margin)
            ax.set_title("Training curves (y-axis cut above: the first epochs are off the chart)")
        else:
            ax.set_title("Training curves")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{training_loss_name(detector)} (nats per row; lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="upper right")  # the curves fall from the upper left
    return figure


def _finish_line_chart(ax, title, xlabel, ylabel):
    """Title, axis labels, a light grid and the legend at the lower right (where rising curves leave room)."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")


def plot_epoch_scores(detector, ax=None):
    """Held-out log p(x) of each epoch count cross-validation tried (``epoch_scores_``), the chosen one marked.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
        Fitted with the epoch count cross-validated (``epoch_selection``).
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_is_fitted(detector)
    scores = getattr(detector, "epoch_scores_", None)
    if not scores:
        raise ValueError("the epoch count of this detector was not cross-validated (epoch_scores_ is None): "
                         f"fit with epoch_selection='cross_validation', or 'auto' below {CV_EPOCHS_BELOW_ROWS} rows")
    figure, ax = _figure_and_axes(ax, (7.0, 3.6))
    epochs, values = (np.asarray(v, dtype=float) for v in zip(*scores))
    finite = np.isfinite(values)
    ax.plot(epochs[finite], values[finite], color=BATCH_COLOURS[1], marker="o", linewidth=1.6,
            label=f"held-out log p(x), {CV_EPOCHS_FOLDS} folds (lowest {CV_TRIM_SHARE:.0%} of rows left out)")
    chosen = chosen_epoch_count(scores)
    score = dict(scores)[chosen]
    if np.isfinite(score):
        ax.plot([chosen], [score], marker="o", markersize=11, markerfacecolor="none", color="black",
                linestyle="none", label=f"chosen: {chosen} epochs ({score:.3f} nats/row)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(epochs, [str(int(e)) for e in epochs])
    _finish_line_chart(ax, "Epoch count by cross-validation", "epochs (each half the next)",
                       "log p(x) (nats per row; higher is better)")
    return figure


# ---------------------------------------------------------- proposal refit
def plot_proposal_refit(detector, ax=None):
    """Held-out 32-sample bound (nats per row, mean over rows) during the proposal refit.

    Step 0 is the encoder as trained (on the ELBO or the ``training_samples``-sample bound); a
    rising curve means the refitted encoder is a better importance-sampling proposal for the same model.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
    ax : matplotlib Axes, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_is_fitted(detector)
    figure, ax = _figure_and_axes(ax, (7.0, 4.2))
    if not detector.proposal_curve_:
        ax.text(0.5, 0.5, "no proposal refit (proposal_steps=0)", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return figure
    steps, bounds = (np.asarray(v, dtype=float) for v in zip(*detector.proposal_curve_))
    # without early-stopping rows (a cross-validated epoch count) the refit is checked on the training rows
    ax.plot(steps, bounds, color=BATCH_COLOURS[2], marker=".", linewidth=1.6,
            label=f"{held_out_label(detector)} bound, K=32")
    baseline = f"encoder as trained on the {training_bound_name(detector)} ({bounds[0]:.2f})"
    ax.axhline(bounds[0], color="0.5", linestyle="--", linewidth=1.0, label=baseline)
    _finish_line_chart(ax, "Proposal refit (decoder frozen)", "refit step",
                       "log p(x) bound (nats per row; higher is better)")
    return figure


# ---------------------------------------------------------------- samples
def _generated_rows(detector, n, random_state, draw):
    if draw == "sample":
        return detector.sample(n, random_state=random_state)
    if draw == "mean":
        z = np.random.RandomState(random_state).normal(size=(n, detector.latent_dim))
        return detector.decode(z)
    raise ValueError(f"draw must be 'sample' or 'mean', got {draw!r}")


def _pick_rows(X, n, random_state):
    n_rows = len(X)
    chosen = np.sort(np.random.RandomState(random_state).choice(n_rows, size=min(n, n_rows), replace=False))
    return X.iloc[chosen] if isinstance(X, pd.DataFrame) else np.asarray(X)[chosen]


def _format_cell(value):
    if isinstance(value, (float, np.floating)):
        return "NaN" if np.isnan(value) else f"{value:.4g}"
    return "NaN" if value is None or (not isinstance(value, str) and pd.isna(value)) else _plain(value)


def plot_samples(detector, X_real, n=10, image_shape=None, random_state=0, ax=None, draw="sample", cmap="gray_r"):
    """Real rows beside rows generated by the model.

    Parameters
    ----------
    detector : fitted VAEOutlierDetector
    X_real : array-like or DataFrame
        Real rows; ``n`` of them are picked at random.
    n : int, default=10
        Rows of each kind.
    image_shape : tuple of int, optional
        Shape of a row as an image: real images on the top row, generated ones
        below. Without it, one table with the real rows then the generated.
    random_state : int, default=0
        Seed of the picked real rows and of the generated ones.
    ax : matplotlib Axes, optional
    draw : {'sample', 'mean'}, default='sample'
        'sample': x ~ p(x | z), z ~ N(0, I) (``detector.sample``), noise
        included. 'mean': E[x | z] for z ~ N(0, I) (``detector.decode``).
    cmap : str, default='gray_r'

    Returns
    -------
    matplotlib.figure.Figure
    """
    check_is_fitted(detector)
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be a positive integer, got {n}")
    real = _pick_rows(X_real, n, random_state)
    generated = _generated_rows(detector, n, random_state, draw)
    what = "x ~ p(x | z)" if draw == "sample" else "E[x | z]"

    if image_shape is not None:
        real_matrix = _numeric_matrix(detector, real)
        generated_matrix = _numeric_matrix(detector, generated)
        images = np.concatenate([_as_images(real_matrix, image_shape), _as_images(generated_matrix, image_shape)])
        figure, ax = _figure_and_axes(ax, (max(4.0, 0.75 * n + 1.4), 2.4))
        n_cols = max(len(real_matrix), len(generated_matrix))
        padded = np.full((2 * n_cols,) + images.shape[1:], np.nan)
        padded[: len(real_matrix)] = images[: len(real_matrix)]
        padded[n_cols : n_cols + len(generated_matrix)] = images[len(real_matrix) :]
        height = images.shape[1]
        canvas = _tile(padded, 2, n_cols, gap=1)
        cmap_object = require_matplotlib().colormaps[cmap].with_extremes(bad="white")
        # the real rows set the grey scale: generated noise beyond it saturates
        # instead of washing out the real images
        scale = real_matrix if np.nanmax(real_matrix) > np.nanmin(real_matrix) else images
        ax.imshow(canvas, cmap=cmap_object, interpolation="nearest", vmin=np.nanmin(scale), vmax=np.nanmax(scale))
        ax.set_xticks([])
        ax.set_yticks([(height - 1) / 2, height + 1 + (height - 1) / 2], ["real", "generated"])
        ax.tick_params(axis="y", length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(f"Real rows (top) and generated rows, {what} (bottom)")
        return figure

    columns = list(detector.schema_.names)
    real = real if isinstance(real, pd.DataFrame) else pd.DataFrame(real, columns=columns)
    generated = generated if isinstance(generated, pd.DataFrame) else pd.DataFrame(generated, columns=columns)
    names = ["row"] + [_plain(c) for c in real.columns]
    cells = [[f"real {i + 1}"] + [_format_cell(v) for v in row] for i, row in enumerate(real.itertuples(index=False))]
    cells += [
        [f"generated {i + 1}"] + [_format_cell(v) for v in row]
        for i, row in enumerate(generated.itertuples(index=False))
    ]
    figure, ax = _figure_and_axes(ax, (max(6.0, 0.9 * len(names) + 1.0), 0.26 * (len(cells) + 1) + 0.5))
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=names, bbox=[0, 0, 1, 1], cellLoc="right")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (r, c), cell in table.get_celld().items():
        if r > len(real):
            cell.set_facecolor("#e3eef9")
        if r == 0 or c == 0:
            cell.set_text_props(weight="bold")
    ax.set_title(f"Real rows (white) and generated rows, {what} (blue)")
    return figure

"""Pictures for the README gallery, from the embedded data only.

Writes to benchmarks/gallery/:

* digits_latent_grid.png -- E[x | z] on a 15x15 grid of a 2-D latent space,
* digits_samples.png     -- real held-out digits above generated ones: x ~ p(x | z)
                            (independent Gaussian pixel noise included), then
                            E[x | z], both for z ~ N(0, I),
* digits_scores.png      -- log p(x) of the calibration rows with the band,
                            held-out known digits (0-4) and unseen ones (5-9),
* digits_training.png    -- training and held-out loss per epoch,
* report.html            -- the HTML report of a Titanic model checking a batch
                            with corrupted rows (fare x1000, typos, ...).

The digits model is trained on the known classes 0-4 only (80%; 20% held out),
so the score picture shows how well log p(x) flags classes it never saw.
The default Gaussian decoder on the raw 0..16 pixels gave the cleaner grid;
``--likelihood bernoulli`` (pixels / 16, continuous Bernoulli) gave speckled
means and took several times longer to train.

    python benchmarks/make_gallery.py [--likelihood gaussian|bernoulli] [--quick]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from sklearn.model_selection import train_test_split

from vaefilter import VAEOutlierDetector
from vaefilter.datasets import digits_split, load_titanic
from vaefilter.plotting import plot_latent_grid, plot_proposal_refit, plot_samples, plot_scores, plot_training
from vaefilter.report import write_report

OUT = Path(__file__).resolve().parent / "gallery"
DPI = 80
MAX_PNG_BYTES = 150_000
MAX_REPORT_BYTES = 600_000


def save(figure, name, dpi=DPI):
    path = OUT / name
    figure.savefig(path, dpi=dpi)
    size = path.stat().st_size
    print(f"  {path.relative_to(OUT.parent.parent)}: {size / 1000:.0f} kB")
    if size > MAX_PNG_BYTES:
        raise SystemExit(f"{name} is {size} bytes, over the {MAX_PNG_BYTES}-byte budget")


def digits_gallery(likelihood, quick):
    known, unseen = digits_split()
    train, held_out = train_test_split(known, test_size=0.2, random_state=0)
    # the Bernoulli family needs [0, 1]; the Gaussian one standardises itself
    scale = 16.0 if likelihood == "bernoulli" else 1.0
    detector = VAEOutlierDetector(
        latent_dim=2,
        hidden_layer_sizes=(256, 128),
        likelihood=likelihood,
        max_epochs=20 if quick else 150,
        learning_rate=2e-3,
        n_iter_no_change=20,
        n_importance_samples=64,
        random_state=0,
    )
    start = time.perf_counter()
    detector.fit(train / scale)
    print(
        f"digits ({likelihood}): {detector.n_iter_} epochs (best {detector.best_epoch_}) "
        f"in {time.perf_counter() - start:.0f} s; band {detector.thresholds_}"
    )
    save(plot_latent_grid(detector, n=15, image_shape=(8, 8)), "digits_latent_grid.png", dpi=100)
    # above: x ~ p(x | z), pixel noise included; below: E[x | z], the same real rows
    figure = Figure(figsize=(8.6, 4.2), layout="constrained")
    top, bottom = figure.subplots(2, 1)
    for ax, draw in ((top, "sample"), (bottom, "mean")):
        plot_samples(detector, held_out / scale, n=10, image_shape=(8, 8), random_state=0, ax=ax, draw=draw)
    save(figure, "digits_samples.png")
    save(
        plot_scores(
            detector,
            {"held-out known digits 0-4": held_out / scale, "unseen digits 5-9": unseen / scale},
        ),
        "digits_scores.png",
    )
    save(plot_training(detector), "digits_training.png")
    save(plot_proposal_refit(detector), "digits_proposal_refit.png")


def corrupted_titanic_batch(clean, rng):
    """Clean held-out passengers plus copies with typical data-entry faults."""
    batch = clean.copy()
    for name in ("sex", "embarked"):
        batch[name] = batch[name].astype(object)
    faults = []
    picks = iter(rng.permutation(len(batch)))

    def corrupt(n, column, change, what):
        for _ in range(n):
            position = next(picks)
            batch.iloc[position, batch.columns.get_loc(column)] = change(batch.iloc[position][column])
            faults.append((batch.index[position], what))

    corrupt(6, "fare", lambda v: v * 1000 if v == v else 9999.0, "fare x1000")
    corrupt(5, "sex", lambda v: {"female": "femal", "male": "Male"}.get(v, "?"), "sex typo")
    corrupt(4, "age", lambda v: 250.0, "age 250")
    corrupt(3, "embarked", lambda v: "X", "embarked 'X'")
    corrupt(3, "parch", lambda v: -1, "parch -1")
    return batch, faults


def titanic_report(quick):
    table = load_titanic()
    train, held_out = train_test_split(table, test_size=0.15, random_state=0)
    detector = VAEOutlierDetector(
        latent_dim=4,
        hidden_layer_sizes=(64, 64),
        max_epochs=20 if quick else 200,
        learning_rate=2e-3,
        n_importance_samples=64,
        threshold_percentiles=(2, None),
        handle_missing="model",
        random_state=0,
    )
    start = time.perf_counter()
    detector.fit(train)
    print(
        f"titanic: {detector.n_iter_} epochs (best {detector.best_epoch_}) in "
        f"{time.perf_counter() - start:.0f} s; band {detector.thresholds_}"
    )
    batch, faults = corrupted_titanic_batch(held_out, np.random.RandomState(0))
    valid = detector.predict(batch) == 1
    caught = [(row, what) for row, what in faults if not valid[batch.index.get_loc(row)]]
    print(f"  corrupted rows caught: {len(caught)} of {len(faults)}; missed: "
          f"{sorted({what for row, what in faults if (row, what) not in caught})}")
    print(f"  clean rows rejected: {np.sum(~valid) - len(caught)} of {len(batch) - len(faults)}")
    path = write_report(
        detector,
        OUT / "report.html",
        batch=batch,
        title="vaefilter report: Titanic passengers, a batch with corrupted rows",
    )
    size = path.stat().st_size
    print(f"  {path.relative_to(OUT.parent.parent)}: {size / 1000:.0f} kB")
    if size > MAX_REPORT_BYTES:
        raise SystemExit(f"report.html is {size} bytes, over the {MAX_REPORT_BYTES}-byte budget")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--likelihood", choices=("gaussian", "bernoulli"), default="gaussian")
    parser.add_argument("--quick", action="store_true", help="few epochs: a smoke test of the script")
    parser.add_argument("--only", choices=("digits", "titanic"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "digits"):
        digits_gallery(args.likelihood, args.quick)
    if args.only in (None, "titanic"):
        titanic_report(args.quick)


if __name__ == "__main__":
    main()

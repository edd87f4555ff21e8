"""Which rows does the posterior search pay for? Per-row data to choose the flag rule by.

For each task and seed (check_search_gap's tasks, splits and fitted models,
cached in its cache folder), every test row gets: its misplacement (the
flag's statistic, in float64), its K=100 estimate with every row searched and
with none searched, each under ``--draw-seeds`` importance seeds, and the
inliers' K=5000 estimate with every row searched (the reference). A row's
K=100 estimate under a flag rule is its searched estimate where the rule
flags it and its plain one elsewhere (the first half of a searched row's
draws are its plain draws, the rest the Laplace Gaussian's), so any
threshold on the misplacement is simulated exactly from one run:

    python benchmarks/check_search_flag.py --collect --tasks digits-5to9 --seeds 0 1 2
    python benchmarks/check_search_flag.py --thresholds 2 3 4 5 --tasks digits-5to9

prints, per task and threshold, the rows flagged, the inliers' mean K=100 vs
K=5000 gap, its change from the first threshold given, and ROC-AUC of
-log p(x) on all test rows. ``--bins`` prints instead the inliers' gain from
the search (searched minus plain K=100 estimate, per row and draw seed) by
misplacement and, among rows above 2, by the effective sample size of the
first 50 of the row's plain draws (a pilot that a flag rule could read).
``--statistics`` compares candidate flag statistics (the misplacement, the
Newton step's length in q's units, KL(Laplace || q) at the encoder's mean,
chance) by the estimate given up when only a share of the rows is searched;
``--split-half`` chooses ``posterior_search.raised_threshold`` on half of the
test rows and judges it on the other half; ``--fitted`` compares the fixed
threshold with each model's own ``search_threshold_``. Tables of
mixed_tables.py are tasks ``mixed:<table>`` (no outliers: ROC-AUC is nan).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from check_search_gap import CACHE, REPORT, TUNE, fitted_test_rows
from vaefilter.scoring import posterior_search
from vaefilter.scoring.marginal import _in_search_precision, encode_in_passes, estimate_log_marginal, log_weights
from vaefilter.scoring.row_noise import keyed_normal, row_keys

EVERY_ROW = 0.0  # a threshold below every misplacement: every row searched


def _scores(det, X, K, draw_seed, threshold):
    old = posterior_search.SEARCH_THRESHOLD
    import vaefilter.scoring.marginal as marginal

    marginal.SEARCH_THRESHOLD = threshold
    try:
        network = det._network()
        return estimate_log_marginal(network, torch.as_tensor(X, dtype=torch.float32), K,
                                     det.importance_seed_ + draw_seed, search_steps=det.posterior_search_steps)
    finally:
        marginal.SEARCH_THRESHOLD = old


def misplacements(det, X):
    network = det._network()
    X = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        mean, log_var = encode_in_passes(network, X)
        net64, X64, mean64, log_var64 = _in_search_precision(network, X, mean, log_var)
        return posterior_search.misplacement(net64, X64, mean64, log_var64).numpy()


def pilot_ess(det, X, draw_seed, n_draws=50):
    """Effective sample size of the first ``n_draws`` of each row's plain K=100 draws."""
    network = det._network()
    X = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        noise = keyed_normal(row_keys(X, det.importance_seed_ + draw_seed), 100, network.latent_dim)
        w = log_weights(network, X, noise)[0][:, :n_draws]
        return torch.exp(2 * torch.logsumexp(w, 1) - torch.logsumexp(2 * w, 1)).numpy()


def collect(names, seeds, draw_seeds):
    for name in names:
        for seed in seeds:
            path = os.path.join(CACHE, f"flag-{name.replace(':', '-')}-{seed}.npz")
            if os.path.exists(path):
                continue
            det, X_test, y = fitted_test_rows(name, seed)
            X = det._validate_for_scoring(X_test)
            inl = y == 0
            on = np.array([_scores(det, X, 100, d, EVERY_ROW).log_px for d in range(draw_seeds)])
            off = np.array([_scores(det, X, 100, d, 1e30).log_px for d in range(draw_seeds)])
            ref = _scores(det, X[inl], 5000, 0, EVERY_ROW).log_px
            m = misplacements(det, X)
            ess50 = np.array([pilot_ess(det, X, d) for d in range(draw_seeds)])
            np.savez(path, on=on, off=off, ref=ref, m=m, y=y, ess50=ess50)
            print(f"{name}/{seed}: {len(X)} rows, m > 2 on {np.mean(m > 2):.0%}", flush=True)


def report(names, seeds, thresholds):
    print(f"| task | threshold | flagged (test rows) | flagged (inliers) | gap K=100 vs K=5000 | "
          f"change from {thresholds[0]:g} | ROC-AUC |\n|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        rows = []
        for seed in seeds:
            path = os.path.join(CACHE, f"flag-{name.replace(':', '-')}-{seed}.npz")
            if os.path.exists(path):
                rows.append(dict(np.load(path)))
        if not rows:
            continue
        base = None
        for t in thresholds:
            flagged, flagged_in, gaps, aucs = [], [], [], []
            for r in rows:
                inl = r["y"] == 0
                s = np.where(r["m"] > t, r["on"], r["off"])  # (draws, rows)
                flagged.append(np.mean(r["m"] > t))
                flagged_in.append(np.mean(r["m"][inl] > t))
                gaps.append(np.mean(s[:, inl].mean(0) - r["ref"]))
                if r["y"].any():
                    aucs.append(np.mean([roc_auc_score(r["y"], -si) for si in s]))
            gap = np.mean(gaps)
            base = gap if t == thresholds[0] else base
            print(f"| {name} | {t:g} | {np.mean(flagged):.1%} | {np.mean(flagged_in):.1%} | {gap:+.4f} | "
                  f"{gap - base:+.4f} | {np.mean(aucs) if aucs else float('nan'):.4f} |")


def _collected(names, seeds):
    """``(name, seed, data)`` of every task and seed whose per-row data --collect saved."""
    for name in names:
        for seed in seeds:
            path = os.path.join(CACHE, f"flag-{name.replace(':', '-')}-{seed}.npz")
            if os.path.exists(path):
                yield name, seed, dict(np.load(path))


def report_fitted(names, seeds):
    """Per task and seed: rows flagged and the inliers' gap at the fixed threshold and at the model's own
    ``search_threshold_`` (chosen at fit time by ``posterior_search_tolerance``)."""
    print("| task/seed | fitted threshold | flagged at 2 | flagged at fitted | gap at 2 | gap at fitted | change |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for name, seed, r in _collected(names, seeds):
        threshold = float(fitted_test_rows(name, seed)[0].search_threshold_)
        inl = r["y"] == 0
        gaps = [np.mean(np.where(r["m"] > t, r["on"], r["off"])[:, inl].mean(0) - r["ref"])
                for t in (posterior_search.SEARCH_THRESHOLD, threshold)]
        print(f"| {name}/{seed} | {threshold:.3g} | {np.mean(r['m'] > 2):.1%} | {np.mean(r['m'] > threshold):.1%} | "
              f"{gaps[0]:+.4f} | {gaps[1]:+.4f} | {gaps[1] - gaps[0]:+.4f} |")


def row_statistics(det, X):
    """Candidate flag statistics per row, at the encoder's mean, in float64 (the Hessian for every row):
    the Newton step's length in q's standard deviations and KL(Laplace there || q)."""
    from vaefilter.scoring.posterior_search import CURVATURE_FLOOR, _derivatives

    network = det._network()
    X = torch.as_tensor(X, dtype=torch.float32)
    with torch.no_grad():
        mean, log_var = encode_in_passes(network, X)
    net64, X64, mu, lv = _in_search_precision(network, X, mean, log_var)
    steps, kls = [], []
    for s in range(0, len(X64), 256):
        x, m, l = X64[s:s + 256], mu[s:s + 256], lv[s:s + 256]
        _, g, negative_hessian = _derivatives(net64, x, m)
        curvature, axes = torch.linalg.eigh(negative_hessian.detach())
        curvature = curvature.abs().clamp(min=CURVATURE_FLOOR)
        step = (axes @ ((axes.transpose(-1, -2) @ g.detach().unsqueeze(-1)) / curvature.unsqueeze(-1))).squeeze(-1)
        sd = (0.5 * l).exp()
        covariance_over_q = ((axes ** 2) / curvature.unsqueeze(-2)).sum(-1) / sd ** 2
        steps.append((step / sd).norm(dim=-1))
        kls.append(0.5 * (covariance_over_q.sum(-1) + ((step / sd) ** 2).sum(-1) - m.shape[-1] + l.sum(-1)
                          + curvature.log().sum(-1)))
    return {"newton_step": torch.cat(steps).numpy(), "kl": torch.cat(kls).numpy()}


def statistics(names, seeds, shares=(1.0, 0.8, 0.6, 0.4, 0.2, 0.1)):
    """The inliers' K=100 estimate given up (vs every row searched) when only the top share of rows by each
    statistic is searched: does any statistic rank the rows by the search's gain better than chance?"""
    print("| task | statistic | " + " | ".join(f"{s:.0%} searched" for s in shares) + " |\n|---|---|"
          + "---:|" * len(shares))
    results = {}
    for name, seed, r in _collected(names, seeds):
        det, X_test, _ = fitted_test_rows(name, seed)
        stats = {"misplacement": r["m"], **row_statistics(det, det._validate_for_scoring(X_test)),
                 "random": np.random.RandomState(seed).rand(len(r["m"]))}
        inl = r["y"] == 0
        for key, v in stats.items():
            lost = []
            for share in shares:
                flag = np.zeros(len(v), bool)
                flag[np.argsort(-v)[: int(round(share * len(v)))]] = True
                lost.append(np.mean(np.where(flag, r["on"], r["off"])[:, inl].mean(0) - r["on"][:, inl].mean(0)))
            results.setdefault((name, key), []).append(lost)
    for (name, key), v in results.items():
        print(f"| {name} | {key} | " + " | ".join(f"{x:+.4f}" for x in np.mean(v, 0)) + " |")


def split_half(names, seeds, tolerance=0.005, draw_sets=(1, 4), factors=(0, 1, 2)):
    """posterior_search.raised_threshold chosen on half of the test rows, judged on the other half:
    the estimate given up there (at 2 minus at the threshold, mean over the draw seeds) and the share of rows
    searched."""
    from vaefilter.scoring import posterior_search as ps

    print("| task/seed | gains from | GAIN_SE_FACTOR | threshold | searched at 2 | searched at it | given up |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    old = ps.GAIN_SE_FACTOR
    try:
        for name, seed, r in _collected(names, seeds):
            m = r["m"]
            order = np.random.RandomState(seed).permutation(len(m))
            a, b = order[: len(m) // 2], order[len(m) // 2:]
            for n_draws in draw_sets:
                gain = np.where(m[a] > 2, (r["on"][:n_draws, a] - r["off"][:n_draws, a]).mean(0), 0.0)
                for factor in factors:
                    ps.GAIN_SE_FACTOR = factor
                    t = ps.raised_threshold(m[a], gain, tolerance)
                    at = lambda th: np.where(m[b] > th, r["on"][:, b], r["off"][:, b]).mean(0)
                    print(f"| {name}/{seed} | {n_draws} set(s) of draws | {factor:g} | {t:.3g} | {np.mean(m[b] > 2):.0%} | "
                          f"{np.mean(m[b] > t):.0%} | {np.mean(at(2) - at(t)):+.4f} |")
    finally:
        ps.GAIN_SE_FACTOR = old


def bins(names, seeds):
    print("| task/seed | rows | count (inlier rows x draw seeds) | mean gain, nats | share of rows gaining < 0.01 | share of the "
          "total gain |\n|---|---|---:|---:|---:|---:|")
    for name, seed, r in _collected(names, seeds):
        inl = r["y"] == 0
        gain = (r["on"] - r["off"])[:, inl]
        m = np.broadcast_to(r["m"][inl], gain.shape)
        ess = r["ess50"][:, inl]
        groups = [(f"misplacement in ({lo}, {hi}]", (m > lo) & (m <= hi))
                  for lo, hi in ((0, 2), (2, 3), (3, 4), (4, 6), (6, np.inf))]
        groups += [(f"misplacement > 2, pilot ESS in ({lo}, {hi}]", (m > 2) & (ess > lo) & (ess <= hi))
                   for lo, hi in ((0, 3), (3, 5), (5, 10), (10, 50))]
        for label, k in groups:
            if k.any():
                print(f"| {name}/{seed} | {label} | {k.sum()} | {gain[k].mean():+.3f} | {np.mean(gain[k] < 0.01):.0%} | "
                      f"{gain[k].sum() / gain.sum():.0%} |")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--collect", action="store_true")
    p.add_argument("--tasks", nargs="*", default=list(TUNE + REPORT))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--draw-seeds", type=int, default=4)
    p.add_argument("--thresholds", nargs="*", type=float, default=[2, 3, 4, 5, 6, 8])
    p.add_argument("--bins", action="store_true")
    p.add_argument("--statistics", action="store_true", help="compare candidate flag statistics")
    p.add_argument("--split-half", action="store_true",
                   help="the fitted threshold's rule chosen on half of the rows, judged on the rest")
    p.add_argument("--fitted", action="store_true",
                   help="compare the fixed threshold with each model's own search_threshold_")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.collect:
        collect(args.tasks, args.seeds, args.draw_seeds)
    if args.bins:
        bins(args.tasks, args.seeds)
    elif args.fitted:
        report_fitted(args.tasks, args.seeds)
    elif args.statistics:
        statistics(args.tasks, args.seeds)
    elif args.split_half:
        split_half(args.tasks, args.seeds)
    else:
        report(args.tasks, args.seeds, args.thresholds)


if __name__ == "__main__":
    main()

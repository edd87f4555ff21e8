"""Choose the sequential decisions' margin rule, label-free, on tables no reported benchmark uses.

For each tuning table of ``choose_defaults`` (and a seed), a detector is fitted at the defaults;
the held-out rows behind its margins and every row of the table (train and test) are scored at
full K, recording each round's estimate and standard error. A rule turns the held-out record into
margins; on the table's rows it is judged by

* calibration: the share of rows whose rise (fall) exceeds the margin at a round, against the
  nominal ``1 - q`` (rise and fall together: ``2 (1 - q)``);
* the bound: the share of rows beyond margin + SE_FACTOR x se at some round. A row can only take a
  decision other than full K's where it is, so this bounds the disagreements whatever the band;
  the filter's target is 99.9% of decisions as full K's, so a rule passes when the bound is
  <= 0.1% pooled and on every table of >= 1,000 rows (on smaller ones one row is more than 0.1%);
* cost: draws per row over the bands (25, 75) and (1, None), simulated from the record (the same
  draws a sequential run takes; the pilot of searched rows is left out).

The choice, in two steps: the quantile estimator must be calibrated (rows beyond the margin near
the nominal share) at the quantile the target names, 0.999; then the smallest SE factor (of 1, 2,
2.5, 3) with which that estimator passes. The grid prints every pair, so a cheaper pair that
passes is visible too. The generalised Pareto tail's shape (``TAIL_SHAPE``) is fitted here, by
maximum likelihood on the tables' excesses pooled.

Command: ``python benchmarks/choose_margins.py --seeds 0 1 --save DIR`` (about 8 minutes a seed on
one thread); ``--load DIR`` re-judges saved records, ``--per-record`` adds each record's figures under
the library's rule, ``--training-samples 1`` fits on the ELBO instead of the default. RESULTS.md ``sequential_margins_tail``.
"""
import argparse
import glob
import os
import time
import warnings
from unittest import mock

import numpy as np
import pandas as pd

import choose_defaults
from vaefilter.scoring import sequential

MIN_BIG_TABLE = 1000
BANDS = ((25, 75), (1, None))


def records(seed, save, fractions=None, overrides=None):
    """Record every tuning table at ``seed`` into ``save`` (one .npz a table); with ``fractions``,
    at those rounds' draws instead of the library's ``ROUND_FRACTIONS``; ``overrides``: estimator
    parameters set instead of the defaults (e.g. ``training_samples=1``)."""
    import torch

    from vaefilter import VAEOutlierDetector

    torch.set_num_threads(1)
    tasks = choose_defaults.mixed_tuning_tasks() + choose_defaults.tuning_tasks() + choose_defaults.wide_tuning_tasks()
    for name, params, train, test in tasks:
        t0 = time.perf_counter()
        held = {}

        def spy(record):
            held["record"] = record
            return sequential.fit_margins(record)

        fractions_ = sequential.ROUND_FRACTIONS if fractions is None else tuple(fractions)
        with warnings.catch_warnings(), mock.patch("vaefilter.estimator.fit_margins", spy), \
                mock.patch.object(sequential, "ROUND_FRACTIONS", fractions_):
            warnings.simplefilter("ignore")
            detector = VAEOutlierDetector(random_state=seed, handle_missing="model",
                                          **{**params, **(overrides or {})}).fit(train)
            rows = pd.concat([train, test]) if isinstance(train, pd.DataFrame) else np.vstack([train, test])
            every = detector._margin_record(detector._network(), detector._validate_for_scoring(rows))
        h = held["record"]
        np.savez(os.path.join(save, f"{name}_seed{seed}.npz"), held_full=h.full, held_rounds=h.rounds, held_se=h.se,
                 full=every.full, rounds=every.rounds, se=every.se, draws=np.array(every.draws),
                 validation=detector.validation_scores_, K=detector.n_importance_samples)
        print(f"{name} seed {seed}: {len(rows)} rows, {h.full.size} held out, {time.perf_counter() - t0:.0f} s",
              flush=True)


def empirical(q):
    def rule(values):
        values = values[np.isfinite(values)]
        return np.inf if values.size < sequential.MIN_MARGIN_ROWS else max(float(np.quantile(values, q)), 0.0)
    return rule


def tail(q, u, shape):
    def rule(values):
        return sequential.tail_quantile(values, q, u, shape)
    return rule


#: name -> (rule, the quantile it aims at); shape 0 is the exponential
RULES = {
    "empirical 0.995 (earlier)": (empirical(0.995), 0.995), "empirical 0.999": (empirical(0.999), 0.999),
    **{f"exponential above {u}, at {q}": (tail(q, u, 0.0), q) for u in (0.8, 0.9) for q in (0.995, 0.999, 0.9999)},
    **{f"Pareto {sequential.TAIL_SHAPE} above 0.9, at {q}": (tail(q, 0.9, sequential.TAIL_SHAPE), q)
       for q in (0.995, 0.999, 0.9995)},
}


def tail_shape(tables, n_boot=50):
    """Generalised Pareto shape of the excesses over the TAIL_FROM quantile, pooled over tables and
    rounds (each scaled by its mean); returns (shape of every row's, 5-95% over tables resampled,
    shape of the held-out rows')."""
    from scipy import stats

    def excesses(d, held):
        out = []
        for r in range(len(d["draws"])):
            gap = d["held_full"] - d["held_rounds"][r] if held else d["full"] - d["rounds"][r]
            for values in (gap, -gap):
                u = np.quantile(values, sequential.TAIL_FROM)
                e = values[values > u] - u
                if e.size and e.mean() > 0:
                    out.append(e / e.mean())
        return np.concatenate(out)

    big = [d for d in tables if d["held_full"].size >= 60]  # >= 6 excesses a round
    every = [excesses(d, False) for d in big]
    shape = stats.genpareto.fit(np.concatenate(every), floc=0)[0]
    rng = np.random.RandomState(0)
    boot = [stats.genpareto.fit(np.concatenate([every[i] for i in rng.randint(len(every), size=len(every))]),
                                floc=0)[0] for _ in range(n_boot)]
    held = stats.genpareto.fit(np.concatenate([excesses(d, True) for d in big]), floc=0)[0]
    return shape, np.percentile(boot, [5, 95]), held, sum(e.size for e in every), len(big)
SE_FACTORS = (1.0, 2.0, 2.5, 3.0)


def _may_stop(d, r, ess_floor):
    """Rows of record ``d`` whose effective sample size at round ``r`` reaches ``ess_floor``
    (the ESS from the recorded standard error, se^2 = 1/ESS - 1/k)."""
    return 1.0 / (d["se"][r] ** 2 + 1.0 / d["draws"][r]) >= ess_floor


def simulate(d, band, rise, fall, se_factor, ess_floor=sequential.MIN_STOP_ESS):
    """(decisions other than full K's, mean draws per row) of a sequential run from the record."""
    import torch

    lower, upper = band
    full = d["full"]
    inside = np.ones(full.size, bool)
    inside &= True if lower is None else full >= lower
    inside &= True if upper is None else full <= upper
    decision, used, active = inside.copy(), np.full(full.size, int(d["K"])), np.ones(full.size, bool)
    for r, k in enumerate(d["draws"]):
        estimate, se = torch.as_tensor(d["rounds"][r]), torch.as_tensor(d["se"][r])
        clear = sequential.decided(estimate, se, band, rise[r], fall[r], se_factor=se_factor).numpy()
        clear_in = sequential.decided(estimate, se, band, rise[r], fall[r], inside_only=True,
                                      se_factor=se_factor).numpy()
        safe = sequential.beyond_any_rise(estimate, se, band, fall[r], se_factor=se_factor).numpy()
        stop = active & clear & (_may_stop(d, r, ess_floor) | safe)
        decision[stop], used[stop], active = clear_in[stop], k, active & ~stop
    return int((decision != inside).sum()), float(used.mean())


def beyond_margins(d, rounds, rise, fall, se_factor, ess_floor=sequential.MIN_STOP_ESS):
    """Rows of a record beyond margin + se_factor x se at some of ``rounds`` (indices into its
    rounds; ``rise[i]``, ``fall[i]`` the margins of ``rounds[i]``) where they may stop (ESS floor)."""
    out = np.zeros(d["full"].size, bool)
    for i, r in enumerate(rounds):
        gap, s = d["full"] - d["rounds"][r], se_factor * d["se"][r]
        out |= ((gap > rise[i] + s) | (-gap > fall[i] + s)) & _may_stop(d, r, ess_floor)
    return out


def judge_ess_floors(files, floors, se_factor=sequential.SE_FACTOR):
    """The library's margin rule with each effective-sample-size floor: bound, decisions, draws."""
    rule = RULES[f"Pareto {sequential.TAIL_SHAPE} above 0.9, at {sequential.MARGIN_QUANTILE}"][0]
    print("\n| ESS floor | bound, pooled | bound, worst table >= 1,000 rows | passes | draws/row | decisions ≠ full K |"
          "\n|---:|---:|---:|---|---:|---:|")
    tables = [d for d in (np.load(f) for f in files) if d["held_full"].size >= sequential.MIN_MARGIN_ROWS]
    for floor in floors:
        beyond = rows = draws = differ = 0
        worst = 0.0
        for d in tables:
            rise = [rule(d["held_full"] - e) for e in d["held_rounds"]]
            fall = [rule(e - d["held_full"]) for e in d["held_rounds"]]
            out = beyond_margins(d, range(len(d["draws"])), rise, fall, se_factor, floor)
            beyond, rows = beyond + out.sum(), rows + out.size
            worst = max(worst, out.mean()) if out.size >= MIN_BIG_TABLE else worst
            for percentiles in BANDS:
                band = tuple(None if p is None else float(np.percentile(d["validation"], p)) for p in percentiles)
                x, y = simulate(d, band, rise, fall, se_factor, floor)
                differ, draws = differ + x, draws + y * out.size
        passes = beyond / rows <= 0.001 and worst <= 0.001
        print(f"| {floor:g} | {beyond / rows:.3%} | {worst:.3%} | {'yes' if passes else 'no'} | "
              f"{draws / rows / len(BANDS):.1f} | {differ} of {rows * len(BANDS):,} |")


def _relative_ess(se, k):
    """ESS / k from the recorded standard error (se^2 = 1/ESS - 1/k)."""
    return 1.0 / (se ** 2 + 1.0 / k) / k


def _stratified_margins(d, r, edges, sign):
    """Per-row margins of round ``r``: the library's tail quantile over the held-out rows of the row's
    own stratum of ESS / k (``edges`` between strata); ``sign`` +1 for the rise, -1 for the fall."""
    k = d["draws"][r]
    held, rows = _relative_ess(d["held_se"][r], k), _relative_ess(d["se"][r], k)
    values = sign * (d["held_full"] - d["held_rounds"][r])
    out = np.full(d["full"].size, np.inf)
    bounds = [0.0, *edges, np.inf]
    for low, high in zip(bounds[:-1], bounds[1:]):
        out[(rows >= low) & (rows < high)] = sequential.tail_quantile(values[(held >= low) & (held < high)])
    return out


def judge_ess_strata(files, strata, se_factor=sequential.SE_FACTOR):
    """Margins read per stratum of the rows' ESS / k at each round (rows with nearly equal weights
    might stop with smaller margins) against the library's single margin per round."""
    import torch

    tables = [d for d in (np.load(f) for f in files) if d["held_full"].size >= sequential.MIN_MARGIN_ROWS]
    if any("held_se" not in d for d in tables):
        raise SystemExit("these records hold no held-out standard errors: record them again with this script")
    print("\n| strata edges (ESS / k) | bound, pooled | bound, worst table >= 1,000 rows | passes | "
          "draws/row (25, 75) | draws/row (1, None) | decisions ≠ full K |\n|---|---:|---:|---|---:|---:|---:|")
    for edges in [[]] + strata:
        beyond = rows = differ = 0
        worst, draws = 0.0, np.zeros(len(BANDS))
        for d in tables:
            n_rounds = len(d["draws"])
            rise = [torch.as_tensor(_stratified_margins(d, r, edges, 1)) for r in range(n_rounds)]
            fall = [torch.as_tensor(_stratified_margins(d, r, edges, -1)) for r in range(n_rounds)]
            out = beyond_margins(d, range(n_rounds), [m.numpy() for m in rise], [m.numpy() for m in fall], se_factor)
            beyond, rows = beyond + out.sum(), rows + out.size
            worst = max(worst, out.mean()) if out.size >= MIN_BIG_TABLE else worst
            for b, percentiles in enumerate(BANDS):
                band = tuple(None if p is None else float(np.percentile(d["validation"], p)) for p in percentiles)
                x, y = simulate(d, band, rise, fall, se_factor)
                differ, draws[b] = differ + x, draws[b] + y * out.size
        passes = beyond / rows <= 0.001 and worst <= 0.001
        print(f"| {', '.join(f'{e:g}' for e in edges) or 'none (the library)'} | {beyond / rows:.3%} | {worst:.3%} | "
              f"{'yes' if passes else 'no'} | {draws[0] / rows:.1f} | {draws[1] / rows:.1f} | "
              f"{differ} of {rows * len(BANDS):,} |")


def judge(files):
    tables = [np.load(f) for f in files]
    keep = [(f, d) for f, d in zip(files, tables) if d["held_full"].size >= sequential.MIN_MARGIN_ROWS]
    n_rows = sum(d["full"].size for _, d in keep)
    print(f"{len(keep)} records ({n_rows:,} rows) with >= {sequential.MIN_MARGIN_ROWS} held-out rows\n")
    shape, (low, high), held, n_excess, n_tables = tail_shape([d for _, d in keep])
    print(f"Generalised Pareto shape of the excesses over the {sequential.TAIL_FROM} quantile ({n_excess:,} "
          f"excesses of {n_tables} records with >= 60 held-out rows): {shape:.3f} (tables resampled, 5-95%: "
          f"{low:.3f}-{high:.3f}; the held-out rows' alone: {held:.3f}); the library's TAIL_SHAPE: "
          f"{sequential.TAIL_SHAPE}\n")
    print("| rule | rows beyond the margin at each round (rise + fall), pooled over the tables' rows | nominal |")
    print("|---|---|---:|")
    for name, (rule, q) in RULES.items():
        beyond = np.zeros(len(keep[0][1]["draws"]))
        for _, d in keep:
            for r in range(len(d["draws"])):
                rise, fall = d["full"] - d["rounds"][r], d["rounds"][r] - d["full"]
                m_rise, m_fall = rule(d["held_full"] - d["held_rounds"][r]), rule(d["held_rounds"][r] - d["held_full"])
                beyond[r] += np.sum(rise > m_rise) + np.sum(fall > m_fall)
        print(f"| {name} | " + " / ".join(f"{v / n_rows:.2%}" for v in beyond) + f" | {2 * (1 - q):.2%} |")
    print("\n| rule | SE factor | bound, pooled | bound, worst table >= 1,000 rows | passes | draws/row | "
          "decisions ≠ full K |")
    print("|---|---:|---:|---:|---|---:|---:|")
    for se_factor in SE_FACTORS:
        for name, (rule, _) in RULES.items():
            beyond = rows = draws = differ = 0
            worst = 0.0
            for _, d in keep:
                rise = [rule(d["held_full"] - e) for e in d["held_rounds"]]
                fall = [rule(e - d["held_full"]) for e in d["held_rounds"]]
                out = beyond_margins(d, range(len(d["draws"])), rise, fall, se_factor)
                beyond += out.sum()
                rows += out.size
                if out.size >= MIN_BIG_TABLE:
                    worst = max(worst, out.mean())
                for percentiles in BANDS:
                    band = tuple(None if p is None else float(np.percentile(d["validation"], p)) for p in percentiles)
                    x, y = simulate(d, band, rise, fall, se_factor)
                    differ += x
                    draws += y * out.size
            passes = beyond / rows <= 0.001 and worst <= 0.001
            print(f"| {name} | {se_factor} | {beyond / rows:.3%} | {worst:.3%} | {'yes' if passes else 'no'} | "
                  f"{draws / rows / len(BANDS):.1f} | {differ} of {rows * len(BANDS):,} |")


def per_record(files, se_factor=sequential.SE_FACTOR):
    """Each record's bound and decisions differing from full K under the library's margin rule."""
    rule = RULES[f"Pareto {sequential.TAIL_SHAPE} above 0.9, at {sequential.MARGIN_QUANTILE}"][0]
    print(f"\n| record | rows | held out | bound (beyond margin + {se_factor:g} se at some round) | decisions ≠ full K "
          "(both bands) | draws/row at (25, 75) |\n|---|---:|---:|---:|---:|---:|")
    for f in files:
        d = np.load(f)
        if d["held_full"].size < sequential.MIN_MARGIN_ROWS:
            continue
        rise = [rule(d["held_full"] - e) for e in d["held_rounds"]]
        fall = [rule(e - d["held_full"]) for e in d["held_rounds"]]
        out = beyond_margins(d, range(len(d["draws"])), rise, fall, se_factor)
        runs = [simulate(d, tuple(None if p is None else float(np.percentile(d["validation"], p)) for p in band),
                         rise, fall, se_factor) for band in BANDS]
        print(f"| {os.path.basename(f)[:-4]} | {out.size} | {d['held_full'].size} | {out.mean():.3%} | "
              f"{sum(x for x, _ in runs)} | {runs[0][1]:.1f} |")


def judge_schedules(files, schedules):
    """The library's margin rule at each SE factor on each schedule of rounds (draws before the
    last), every schedule a subset of the recorded rounds: the bound, draws per row, decisions."""
    tables = [np.load(f) for f in files]
    keep = [d for d in tables if d["held_full"].size >= sequential.MIN_MARGIN_ROWS]
    print("\n| rounds (draws) | SE factor | bound, pooled | bound, worst table >= 1,000 rows | passes | draws/row | "
          "draws/row (25, 75) | draws/row (1, None) | decisions ≠ full K |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for schedule in schedules:
        for se_factor in SE_FACTORS:
            beyond = rows = differ = 0
            draws = np.zeros(len(BANDS))
            worst = 0.0
            for d in keep:
                recorded = [int(k) for k in d["draws"]]
                if not set(schedule) <= set(recorded):
                    raise SystemExit(f"schedule {schedule} is not a subset of the recorded rounds {recorded}")
                at = [recorded.index(k) for k in schedule]
                sub = {"draws": np.array(schedule), "rounds": d["rounds"][at], "se": d["se"][at], "full": d["full"],
                       "K": d["K"]}
                rise = [sequential.tail_quantile(d["held_full"] - d["held_rounds"][r]) for r in at]
                fall = [sequential.tail_quantile(d["held_rounds"][r] - d["held_full"]) for r in at]
                out = beyond_margins(d, at, rise, fall, se_factor)
                beyond += out.sum()
                rows += out.size
                if out.size >= MIN_BIG_TABLE:
                    worst = max(worst, out.mean())
                for b, percentiles in enumerate(BANDS):
                    band = tuple(None if p is None else float(np.percentile(d["validation"], p)) for p in percentiles)
                    x, y = simulate(sub, band, rise, fall, se_factor)
                    differ += x
                    draws[b] += y * out.size
            passes = beyond / rows <= 0.001 and worst <= 0.001
            print(f"| {', '.join(map(str, schedule))} | {se_factor} | {beyond / rows:.3%} | {worst:.3%} | "
                  f"{'yes' if passes else 'no'} | {draws.sum() / rows / len(BANDS):.1f} | {draws[0] / rows:.1f} | "
                  f"{draws[1] / rows:.1f} | {differ} of {rows * len(BANDS):,} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--save", help="directory for the records (default: a temporary one)")
    parser.add_argument("--load", help="judge the records saved in this directory instead")
    parser.add_argument("--fractions", type=float, nargs="+",
                        help="record at these rounds (cumulative shares of K) instead of the library's")
    parser.add_argument("--schedules", nargs="+", metavar="DRAWS",
                        help="judge these subsets of the recorded rounds, each as comma-separated draw counts "
                             "(e.g. 6,10,30 6,10,30,60) with the library's margin rule")
    parser.add_argument("--training-samples", type=int,
                        help="fit with this training_samples instead of the default (1: the ELBO)")
    parser.add_argument("--ess-floors", type=float, nargs="+",
                        help="judge the library's rule with each of these effective-sample-size floors")
    parser.add_argument("--ess-strata", nargs="+", metavar="EDGES",
                        help="judge margins read per stratum of ESS / k, each stratification as comma-separated "
                             "edges (e.g. 0.5 0.3,0.7), beside the library's single margin")
    parser.add_argument("--per-record", action="store_true",
                        help="also print, per record, the library rule's bound and decisions differing")
    args = parser.parse_args()
    if args.load:
        files = sorted(glob.glob(os.path.join(args.load, "*.npz")))
    else:
        import tempfile

        save = args.save or tempfile.mkdtemp()
        os.makedirs(save, exist_ok=True)
        for seed in args.seeds:
            records(seed, save, args.fractions,
                    None if args.training_samples is None else {"training_samples": args.training_samples})
        files = sorted(glob.glob(os.path.join(save, "*.npz")))
    if args.schedules:
        judge_schedules(files, [[int(k) for k in schedule.split(",")] for schedule in args.schedules])
    elif args.ess_strata:
        judge_ess_strata(files, [[float(e) for e in edges.split(",")] for edges in args.ess_strata])
    else:
        judge(files)
    if args.per_record:
        per_record(files)
    if args.ess_floors:
        judge_ess_floors(files, args.ess_floors)



if __name__ == "__main__":
    main()

"""Do sequential decisions equal full-K decisions on data where the encoder misses rows?

Data not used to set the rule: digits 5-9 trained with 0-4 unseen, breast cancer (benign trained,
malignant unseen), titanic and anes96 with bench_mixed's planted faults; bands (25, 75) and
(1, None). Prints the rows whose decision differs, the draws per row and the share of rows searched.
Command: ``python benchmarks/check_sequential.py`` (about 3 minutes on one thread).
"""
import numpy as np, torch, warnings
warnings.filterwarnings("ignore")
torch.set_num_threads(1)
from sklearn.datasets import load_digits, load_breast_cancer
from vaefilter import VAEOutlierDetector
import mixed_tables
from faults import plant_faults

def check(name, d, sets):
    for band in [(25, 75), (1, None)]:
        d.calibrate(threshold_percentiles=band)
        for label, X in sets:
            d.set_params(sequential_decisions=True); s = d.predict(X)
            decided = d._decide(d._validate_for_scoring(X))
            nd, searched = decided.n_draws.mean(), np.mean(decided.searched)
            d.set_params(sequential_decisions=False); f = d.predict(X)
            print(f"{name} {band} {label}: {int((s != f).sum())} of {len(X)} differ, {nd:.1f} draws/row, "
                  f"{searched:.1%} searched", flush=True)

dg = load_digits(); X, y = dg.data, dg.target
rng = np.random.RandomState(1); inl = rng.permutation(np.flatnonzero(y >= 5))
d = VAEOutlierDetector(random_state=1).fit(X[inl[180:]])
check("digits 5-9", d, [("held-out", X[inl[:180]]), ("unseen 0-4", X[y < 5])])
bc = load_breast_cancer(); X, y = bc.data, bc.target
ben = rng.permutation(np.flatnonzero(y == 1))
d = VAEOutlierDetector(random_state=1).fit(X[ben[100:]])
check("breast cancer", d, [("held-out benign", X[ben[:100]]), ("malignant", X[y == 0])])
for table in ("titanic", "anes96"):
    train, test, cat, num, r = mixed_tables.split(table, 5)
    test, kind, _, _ = plant_faults(train, test, cat, num, r)
    d = VAEOutlierDetector(random_state=5, handle_missing="model").fit(train)
    check(table, d, [("test with planted faults", test)])

"""`filter_csv` of two checkouts of vaefilter timed by turns, beside pandas read_csv + to_csv.

Question: how much faster is this checkout's filter than another's, on the same file and model,
on a machine whose load changes from minute to minute?

Usage::

    git archive <commit> | tar -x -C /tmp/before        # the other checkout, anywhere
    python benchmarks/filter_by_turns.py titanic --before /tmp/before --turns 3 --threads 2

The table (benchmarks/mixed_tables.py) is replicated to 60,000 rows and fitted once by this
checkout (``fit_csv`` at the defaults); each checkout runs in its own worker process, refits the
model's decision margins on the fit's calibration rows with its own code (the rounds are part of
the code), filters once to warm up, then filters the file once per turn. Turns alternate pandas,
the other checkout and this one; medians are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

_WORKER = """
import json, sys, time
import torch, pandas as pd
from sklearn.utils import check_random_state
from vaefilter.pipeline import filter_csv, load_detector
from vaefilter.io.texttypes import parse_text_table
model, small, big, threads, out = sys.argv[1:6]
torch.set_num_threads(int(threads))
det = load_detector(model)
typed, _ = parse_text_table(pd.read_csv(small, dtype=str, keep_default_na=False), det.schema_)
X = det._validate_for_scoring(typed)
_, _, calibration = det._split_rows(len(X), check_random_state(det.random_state))
det.decision_margins_ = det._fit_decision_margins(X[calibration])
filter_csv(det, big, out + "_v.csv", out + "_r.csv")
print("ready", flush=True)
for _ in sys.stdin:
    t = time.perf_counter()
    filter_csv(det, big, out + "_v.csv", out + "_r.csv")
    print(json.dumps(time.perf_counter() - t), flush=True)
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table")
    parser.add_argument("--before", required=True, help="root of the other checkout (holds vaefilter/)")
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=60_000)
    args = parser.parse_args()

    import pandas as pd

    sys.path.insert(0, str(HERE))
    import mixed_tables
    from vaefilter.pipeline import fit_csv

    with tempfile.TemporaryDirectory(prefix="filter_by_turns_") as work:
        frame, _, _ = mixed_tables.load(args.table)
        small, big, model = (os.path.join(work, f) for f in ("small.csv", "big.csv", "model.vf"))
        frame.to_csv(small, index=False)
        reps = int(np.ceil(args.rows / len(frame)))
        pd.concat([frame] * reps, ignore_index=True).iloc[: args.rows].to_csv(big, index=False)
        fit_csv([small], model, params={"random_state": 0, "handle_missing": "model"})
        workers = {}
        for tag, root in (("before", Path(args.before).resolve()), ("after", HERE.parent)):
            env = dict(os.environ, PYTHONPATH=str(root))
            workers[tag] = subprocess.Popen(
                [sys.executable, "-c", _WORKER, model, small, big, str(args.threads), os.path.join(work, tag)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=str(root))
        for worker in workers.values():
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a worker failed to start")
        times = {"pandas": [], "before": [], "after": []}
        for _ in range(args.turns):
            t = time.perf_counter()
            pd.read_csv(big).to_csv(os.path.join(work, "pd.csv"), index=False)
            times["pandas"].append(time.perf_counter() - t)
            for tag, worker in workers.items():
                worker.stdin.write("run\n")
                worker.stdin.flush()
                times[tag].append(json.loads(worker.stdout.readline()))
        for worker in workers.values():
            worker.stdin.close()
            worker.wait()
    med = {k: float(np.median(v)) for k, v in times.items()}
    print(f"{args.table}: pandas {med['pandas']:.2f} s; filter before {med['before']:.2f} s "
          f"({med['pandas'] / med['before']:.1%} of pandas), after {med['after']:.2f} s "
          f"({med['pandas'] / med['after']:.1%}); speed-up {med['before'] / med['after']:.2f}x; "
          f"{args.turns} turns, {args.threads} torch threads; load {os.getloadavg()[0]:.1f}; "
          f"all {json.dumps({k: [round(x, 2) for x in v] for k, v in times.items()})}")


if __name__ == "__main__":
    main()

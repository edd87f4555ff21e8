"""vaefilter: a variational autoencoder as a learned data-validation gate."""

import os

# Before torch loads its OpenMP runtime (which reads this once, at load): idle
# OpenMP threads sleep instead of spinning. Scoring runs thousands of small
# parallel ops, and on a machine busy with other work a spinning thread holds a
# core while the thread it waits for is not scheduled: on the shared 2-core
# test machine at a load average of 7-9, sequential decisions of 10,000 titanic
# rows took 22-44 s with 2 torch threads spinning (the default; 3.7 s with
# GOMP_SPINCOUNT=10000) against 1.4-2.7 s with them sleeping and 1.6-4.1 s on
# 1 thread. A value set by the user is kept (OMP_WAIT_POLICY=ACTIVE for a
# machine the run has to itself); a process that loaded torch first keeps its own.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
__all__ = ["VAEOutlierDetector", "__version__"]


def __getattr__(name):
    # The estimator (and torch) load on first use, not at 'import vaefilter': the console
    # script (vaefilter.__main__) catches a Ctrl-C while they load.
    if name == "VAEOutlierDetector":
        from .estimator import VAEOutlierDetector

        return VAEOutlierDetector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "VAEOutlierDetector"])

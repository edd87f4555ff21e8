"""How finely the model's float32 tensors resolve a column.

Cells reach the network as float32, whose spacing near a value v is about
``eps * |v|`` (eps = 1.2e-7). A column whose spread is only a few such steps
of its mean (epoch seconds 1.7e9 +- 100 s: steps of 128 s) reads as nearly
constant there, and its standardisation treats it as constant.
"""

from __future__ import annotations

import numpy as np

#: a spread below this many float32 steps of the mean counts as constant: at 4 a
#: cell rounds by at most 1/8 of a standard deviation. It was 10 steps with a
#: floor of 1 (max(1, |mean|)), which took N(0, 1e-7) and 1.7e9 + N(0, 1000)
#: for constants, so values 100 sd out scored as typical.
RESOLVED_STEPS = 4.0
#: ... and below this absolute scale: standardised values stay far inside float32
SMALLEST_SCALE = 1e-30


def float32_resolves(loc, scale):
    """Whether float32 cells resolve a spread ``scale`` around ``loc`` (elementwise)."""
    loc, scale = np.asarray(loc, dtype=np.float64), np.asarray(scale, dtype=np.float64)
    return (scale >= RESOLVED_STEPS * np.finfo(np.float32).eps * np.abs(loc)) & (scale >= SMALLEST_SCALE)

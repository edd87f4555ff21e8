"""glibc heap settings that let each scoring pass reuse the memory the last one freed.

A scoring pass on a CPU allocates a few activations of 1-30 MB and frees them
at its end. With glibc's starting settings, blocks above M_MMAP_THRESHOLD are
mapped and unmapped one by one, and free() hands the top of the heap back to
the OS once more than M_TRIM_THRESHOLD of it is free. The next pass then
faults the same memory back in, page by page: 186,000-250,000 minor page
faults (0.7-1 GB) for 10^4 rows at 10 features. Without them, scoring those
rows took 0.64 s instead of 1.05 s, and 2.13 s instead of 3.44 s at 200
features (2 cores; benchmarks/RESULTS.md, bench_speed).

glibc raises both thresholds itself after a program frees a large mapped
block, to at most 32 MB and 64 MB; :func:`keep_freed_memory` sets that state
directly, once per process, through mallopt. Freed memory up to 64 MB then
stays with the process for the next pass, and the faults drop to a few
hundred at 10 features. It is left alone where glibc is not the C library,
where the user has set glibc's malloc options themselves
(``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``, ``GLIBC_TUNABLES``),
and where ``VAEFILTER_TUNE_MALLOC=0``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import platform

# mallopt's parameter numbers, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc's own ceiling for its dynamic mmap threshold on 64-bit systems, and
# the trim threshold it sets beside it (twice as large)
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES

OPT_OUT_VARIABLE = "VAEFILTER_TUNE_MALLOC"
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def _wanted():
    if os.environ.get(OPT_OUT_VARIABLE, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    return platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


@functools.lru_cache(maxsize=None)
def keep_freed_memory():
    """Set glibc's mmap and trim thresholds for scoring, once per process; return whether they were set."""
    if not _wanted():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; the mmap threshold first, since setting
    # either one ends glibc's dynamic adjustment of both
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )

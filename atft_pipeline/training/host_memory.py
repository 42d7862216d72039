"""Keep the C heap's freed memory for reuse while training on the host.

A CPU training step allocates a handful of tensors of hundreds of MB (the gathered windows
``[M, T, F]``, the variable-selection activations and their gradients) and frees them at
the end of the step. glibc serves every allocation above its mmap threshold (at most 32 MB)
with a fresh ``mmap`` and unmaps it on ``free``, so each step faults in, and the kernel
zero-fills, every one of those pages again. On the 2-core development machine that was
about half of the CPU time of a demo-preset step (measured with ``python -m bench
training``); a forward-only prediction pass over 95 dates of the demo took half the time
with it (3.8 s instead of 7-9 s).

:func:`reuse_freed_memory` turns ``mmap`` allocation off and raises the trim threshold for
its duration, so freed blocks stay in the heap and the next step reuses them; on exit the
defaults are restored and the free memory is handed back (``malloc_trim``). Without glibc
(macOS, musl) it does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
from collections.abc import Iterator

# mallopt parameters and glibc's defaults (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_DEFAULT_TRIM_THRESHOLD = 128 * 1024
_DEFAULT_MMAP_MAX = 65536
_MAX_TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    libc.mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    libc.malloc_trim.argtypes = (ctypes.c_size_t,)
    return libc


_depth = 0  # nesting: prediction inside training must not restore the defaults early


@contextlib.contextmanager
def reuse_freed_memory() -> Iterator[None]:
    """Reentrant: only the outermost exit restores the defaults and trims."""
    global _depth
    libc = _glibc()
    if libc is None:
        yield
        return
    if _depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, _MAX_TRIM_THRESHOLD)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0:
            libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
            libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
            libc.malloc_trim(0)

"""Keep glibc's heap from going back to the kernel between two buffers (mio's CLI processes).

A process that moves hundreds of MB/s through asyncio allocates and frees a few buffers of
64 KiB to 300 KiB per read or write: a session's output buffer, the bytes of asyncio's TLS
memory BIO, a transport's buffer. With glibc's defaults each free at the top of the heap
trims it (``brk`` down) and the next allocation grows it again, so every page of every
buffer is faulted in and zeroed anew: a TLS relay took 200-380 minor page faults per MB it
tunneled, about 40% of its CPU time per GB. Two ``mallopt`` settings stop that:

* ``M_TOP_PAD`` 4 MiB: the heap keeps (and grows by) 4 MiB beyond what is in use, so
  buffers churning at its top reuse pages already faulted in. At most that much freed
  memory stays resident.
* ``M_MMAP_THRESHOLD`` 1 MiB: blocks below 1 MiB come from the heap, not from a fresh
  ``mmap`` each (setting ``M_TOP_PAD`` turns off glibc's own adjustment of this threshold).

Only the long-running commands call :func:`tune_allocator` (``mio echo``, ``mio tunnel``):
a library does not change its application's allocator. Applications embedding mio get the
same effect with ``MALLOC_TOP_PAD_=4194304 MALLOC_MMAP_THRESHOLD_=1048576`` in the
environment (docs/guides/tuning.md). Nothing is changed when the environment already sets
one of the heap-layout options (``MALLOC_TOP_PAD_``, ``MALLOC_TRIM_THRESHOLD_``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_MMAP_MAX_``, ``MALLOC_ARENA_MAX``, or ``glibc.malloc``
tunables in ``GLIBC_TUNABLES``), or on a C library other than glibc.
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ("TOP_PAD", "MMAP_THRESHOLD", "tune_allocator")

#: ``mallopt`` parameter numbers (glibc's ``malloc.h``).
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: Bytes the heap keeps beyond what is in use.
TOP_PAD = 4 * 1024 * 1024
#: Allocations at least this large get their own ``mmap``.
MMAP_THRESHOLD = 1024 * 1024
#: Environment variables with which a user already chose glibc's malloc behaviour.
_USER_SETTINGS = (
    "MALLOC_TOP_PAD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_ARENA_MAX",
)


def tune_allocator() -> bool:
    """Apply the settings above to this process (and the children it forks).

    Returns True when they were applied; False on a C library other than glibc, when
    ``mallopt`` refuses them, or when the environment sets a heap-layout option itself
    (one of ``_USER_SETTINGS`` or ``glibc.malloc`` in ``GLIBC_TUNABLES``): the user's choice
    wins.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _USER_SETTINGS):
        return False
    if "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_TOP_PAD, TOP_PAD)) and bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))

"""glibc's allocator, kept from handing TensorFlow's per-step buffers back to the kernel.

TensorFlow's CPU kernels (Eigen's convolution and matmul temporaries, gradients) allocate and
free buffers of a few MiB every step from many threads. glibc gives each thread arena's heap
back to the kernel as soon as it is empty (and maps anything over its mmap threshold on its
own), so a step can start by mapping fresh pages again and fault on every one of them. Whether
that happens depends on what else the process allocated first: with hpctrain's streaming
reader the workshop CNN's step spent a third of its time in page faults (654,000 a second,
`perf stat`; 18 s of system time in a 35 s run against 2 s with the same batches served from
memory) on an AMD EPYC with AVX2 only, and ran at 0.66 of plain Keras there.

`tune()` sets three of glibc's documented `mallopt` parameters before TensorFlow loads: a
32 MiB mmap threshold (glibc's largest; larger blocks are still mapped on their own), 64 MiB
of padding kept at the top of a heap when it shrinks, and trimming only past 256 MiB free.
The cost is resident memory: 780 MB at most instead of 674 for the CNN run above (plain
Keras on in-memory data: 839). Skipped when the C library is not glibc, when the user set
any MALLOC_*_ variable or preloads another allocator (tcmalloc, jemalloc), or with
HPCTRAIN_MALLOC=default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's malloc.h
SETTINGS = {M_MMAP_THRESHOLD: 32 << 20, M_TOP_PAD: 64 << 20, M_TRIM_THRESHOLD: 256 << 20}
SWITCH = "HPCTRAIN_MALLOC"  # "default": leave glibc's allocator as it is


def skip_reason(environ: dict[str, str] | os._Environ) -> str | None:
    """Why the allocator is left alone in this environment, or None to tune it."""
    if environ.get(SWITCH, "").lower() == "default":
        return f"{SWITCH}=default"
    user = sorted(k for k in environ if k.startswith("MALLOC_") and k.endswith("_"))
    if user:
        return f"{user[0]} is set"
    preload = environ.get("LD_PRELOAD", "")
    if any(name in preload for name in ("tcmalloc", "jemalloc", "mimalloc")):
        return "another allocator is preloaded"
    return None


def tune(environ: dict[str, str] | os._Environ = os.environ) -> str:
    """Apply SETTINGS through mallopt; returns what was done, for the log."""
    reason = skip_reason(environ)
    if reason:
        return f"allocator left as it is ({reason})"
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: AttributeError elsewhere
    except (OSError, AttributeError):
        return "allocator left as it is (not glibc)"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    failed = [param for param, value in SETTINGS.items() if mallopt(param, value) != 1]
    if failed:
        return f"allocator: mallopt refused {failed}"
    return "allocator: glibc heaps kept between steps (mmap threshold 32 MiB, top pad 64 MiB)"

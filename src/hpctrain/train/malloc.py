"""glibc's allocator, kept from handing TensorFlow's per-step buffers back to the kernel.

TensorFlow's CPU kernels (Eigen's convolution and matmul temporaries, gradients) allocate and
free buffers of a few MiB every step from many threads. glibc gives each thread arena's heap
back to the kernel as soon as it is empty (and maps anything over its mmap threshold on its
own), so a step can start by mapping fresh pages again and fault on every one of them. Whether
that happens depends on what else the process allocated first: with hpctrain's streaming
reader the workshop CNN's step spent a third of its time in page faults (654,000 a second,
`perf stat`; 18 s of system time in a 35 s run against 2 s with the same batches served from
memory) on an AMD EPYC with AVX2 only, and ran at 0.66 of plain Keras there.

`tune()` sets three of glibc's documented `mallopt` parameters before TensorFlow loads: no
block mapped on its own (M_MMAP_MAX 0: a convolution's gradient allocates an 81 MiB and a
26 MiB im2col buffer every step, which glibc would otherwise map and unmap each time, the first
above any mmap threshold it accepts, the second whenever the thread's 64 MiB arena heap is too
full), 64 MiB of padding kept at the top of a heap when it shrinks, and trimming only past
256 MiB free. Blocks too large for a thread's arena come from the main heap instead. The cost
is resident memory: 820 MB at most instead of 674 for the CNN run above (plain Keras on
in-memory data, untuned: 839); memory freed inside the heap is kept for reuse, not returned.
Skipped when the C library is not glibc, when the user set any MALLOC_*_ variable or preloads
another allocator (tcmalloc, jemalloc), or with
HPCTRAIN_MALLOC=default.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameter (glibc's malloc.h) -> the environment variable glibc reads for it at start
PARAMS = {-4: "MALLOC_MMAP_MAX_", -2: "MALLOC_TOP_PAD_", -1: "MALLOC_TRIM_THRESHOLD_"}
M_MMAP_MAX, M_TOP_PAD, M_TRIM_THRESHOLD = PARAMS
SETTINGS = {M_MMAP_MAX: 0, M_TOP_PAD: 64 << 20, M_TRIM_THRESHOLD: 256 << 20}
SWITCH = "HPCTRAIN_MALLOC"  # "default": leave glibc's allocator as it is


def environment() -> dict[str, str]:
    """The same settings as environment variables: what a user gives another program (the
    benchmarks' plain Keras baseline) to run with this tuning."""
    return {PARAMS[param]: str(value) for param, value in SETTINGS.items()}


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
    return "allocator: glibc heaps kept between steps (no mmap per block, top pad 64 MiB)"

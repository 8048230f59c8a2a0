"""train/malloc.py: when glibc's allocator is tuned, and that the tuning takes."""

import subprocess
import sys

from hpctrain.train import malloc


def test_a_users_choice_leaves_the_allocator_alone():
    assert malloc.skip_reason({}) is None
    assert malloc.skip_reason({"PATH": "/bin", "MALLOC": "x"}) is None
    assert malloc.skip_reason({"HPCTRAIN_MALLOC": "default"}) == "HPCTRAIN_MALLOC=default"
    assert malloc.skip_reason({"MALLOC_ARENA_MAX_": "2"}) == "MALLOC_ARENA_MAX_ is set"
    assert malloc.skip_reason({"LD_PRELOAD": "/usr/lib/libtcmalloc_minimal.so.4"}) == \
        "another allocator is preloaded"
    assert malloc.tune({"HPCTRAIN_MALLOC": "default"}) == \
        "allocator left as it is (HPCTRAIN_MALLOC=default)"


def test_tuning_keeps_a_freed_heap_mapped():
    """In a fresh process, a block freed and allocated again 20 times faults in its pages
    once when tuned (no block is mapped on its own: the heap keeps it); untuned, glibc maps a
    16 MiB block on its own and unmaps it when freed at least once (its mmap threshold only
    rises after that), and a 48 MiB one every time (above the largest threshold it accepts),
    as TensorFlow's convolution gradients do each step. The pathology this guards against
    (TensorFlow's per-step buffers mapped afresh) needs TensorFlow: the trainer benchmark on
    an AVX2 host measures it."""
    probe = """
import ctypes, sys
from hpctrain.train import malloc
if sys.argv[1] == "tuned":
    print(malloc.tune({}))
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def faults():
    return int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[7])
for mib in (16, 48):
    before = faults()
    for _ in range(20):
        p = libc.malloc(mib << 20)
        ctypes.memset(p, 1, mib << 20)
        libc.free(p)
    print(faults() - before)
"""
    out = {mode: subprocess.run([sys.executable, "-c", probe, mode], capture_output=True,
                                text=True, check=True).stdout.split()
           for mode in ("tuned", "untuned")}
    assert out["tuned"][0] == "allocator:" and "no mmap per block" in " ".join(out["tuned"])
    pages = {16: 4096, 48: 3 * 4096}
    for mib, tuned in zip((16, 48), out["tuned"][-2:], strict=True):
        assert int(tuned) < 1.5 * pages[mib], (mib, tuned)
    assert int(out["untuned"][-2]) > 1.8 * pages[16]
    assert int(out["untuned"][-1]) > 15 * pages[48]

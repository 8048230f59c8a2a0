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
    """In a fresh process, a 16 MiB block freed and allocated again 20 times faults in its
    pages once when tuned (the 32 MiB mmap threshold puts it on the heap, which keeps it);
    untuned, glibc maps the first one on its own and unmaps it when freed (its threshold
    only rises after that), so it faults at least twice as often. The pathology this guards
    against (heaps of TensorFlow's threads given back every step) needs TensorFlow: the
    trainer benchmark on an AVX2 host measures it."""
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
before = faults()
for _ in range(20):
    p = libc.malloc(16 << 20)
    ctypes.memset(p, 1, 16 << 20)
    libc.free(p)
print(faults() - before)
"""
    out = {mode: subprocess.run([sys.executable, "-c", probe, mode], capture_output=True,
                                text=True, check=True).stdout.split()
           for mode in ("tuned", "untuned")}
    assert out["tuned"][0] == "allocator:" and "mmap threshold 32 MiB" in " ".join(out["tuned"])
    tuned, untuned = int(out["tuned"][-1]), int(out["untuned"][-1])
    assert tuned < 1.5 * 4096 and untuned > 1.8 * 4096  # 4,096 pages a block

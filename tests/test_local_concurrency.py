"""LRN and lp_normalize from many Python threads at once, at sizes above both backends'
parallel thresholds: every call gives the bits of a lone call. In a subprocess, so an abort
(numba's workqueue layer, were the launches not serialized) fails this test alone."""
import subprocess
import sys
import textwrap

import pytest

from fastnorm import _dispatch

SCRIPT = textwrap.dedent("""
    import sys, threading
    import numpy as np
    import fastnorm, fastnorm.functional as fn

    fastnorm.set_backend(sys.argv[1])
    fastnorm.set_num_threads(2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 16, 130, 130)).astype(np.float32)
    r = rng.standard_normal((600, 1001))

    def work():
        return (fn.local_response_norm(x, 5), fn.local_response_norm_backward(x, x, 4),
                fn.lp_normalize(r, p=3), fn.weight_norm(r, np.ones(600)))

    want = work()
    bad = []

    def run():
        for _ in range(3):
            got = work()
            if not all(np.array_equal(a.view(np.uint8), b.view(np.uint8)) for a, b in zip(got, want)):
                bad.append(1)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("ok" if not bad else "MISMATCH")
""")


@pytest.mark.parametrize("backend", _dispatch.BACKENDS)
def test_threads_at_once_give_the_bits_of_a_lone_call(backend):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, backend], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"

"""Dropout and the penalties from many Python threads at once, and in a forked child after the
parent ran the parallel kernels: same bits as one thread (each scenario in a subprocess, so an
abort or a hang fails one test, not the suite)."""
import subprocess
import sys
import textwrap

import pytest

from fastnorm import _dispatch

SCRIPT = textwrap.dedent("""
    import hashlib, os, sys, threading
    import numpy as np
    import fastnorm, fastnorm.functional as fn

    fastnorm.set_backend(sys.argv[1])
    fastnorm.set_num_threads(2)
    x = np.random.default_rng(0).standard_normal((1 << 20) + 77).astype(np.float32)

    def digest():
        h = hashlib.sha256()
        for a in (fn.dropout(x, 0.3, seed=5), fn.dropout_backward(x, 0.3, 5),
                  fn.gaussian_dropout(x, 0.3, seed=5), np.array([fn.l2_penalty([x])])):
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    ref = digest()
    bad = []
    barrier = threading.Barrier(6)

    def worker():
        barrier.wait()
        for _ in range(3):
            if digest() != ref:
                bad.append(1)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad, "a thread saw different bits"
    pid = os.fork()
    if pid == 0:
        os._exit(0 if digest() == ref else 3)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked child saw different bits"
    print("ok")
""")


@pytest.mark.parametrize("backend", _dispatch.BACKENDS)
def test_threads_and_fork_give_the_same_bits(backend):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, backend], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

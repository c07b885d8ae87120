"""Many Python threads at once, and fork: each scenario runs in a subprocess, so an abort
(numba's workqueue layer kills the process when two threads launch a parallel kernel at once,
unless fastnorm serializes them) or a hang (libgomp in a forked child) fails one test instead
of taking the suite down. Kernels run at sizes above both backends' parallel thresholds, so the parallel paths
are the ones exercised."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from fastnorm import _dispatch

TIMEOUT = 60

# Shared prelude of the scripts: the workload and a bitwise comparison.
PRELUDE = textwrap.dedent("""
    import hashlib, os, sys
    import numpy as np
    import fastnorm, fastnorm.functional as fn
    from fastnorm import _dispatch

    BACKEND = sys.argv[1]
    fastnorm.set_backend(BACKEND)
    fastnorm.set_num_threads(2)
    SHAPE = (300, 2050)
    assert SHAPE[0] * SHAPE[1] >= max(_dispatch.PARALLEL_MIN_WORK, _dispatch.NUMBA_PARALLEL_MIN_WORK)
    rng = np.random.default_rng(0)
    DATA = {dt: tuple(rng.standard_normal(s).astype(dt) for s in (SHAPE, SHAPE, SHAPE[1:], SHAPE[1:]))
            for dt in (np.float32, np.float64)}

    def work(dt):
        x, dy, w, b = DATA[dt]
        y, mean, rstd = fn.layer_norm(x, w, b, return_stats=True)
        dx, dw, db = fn.layer_norm_backward(dy, x, w, b)
        r, invrms = fn.rms_norm(x, w, return_stats=True)
        rdx, rdw = fn.rms_norm_backward(dy, x, w)
        return (y, mean, rstd, dx, dw, db, r, invrms, rdx, rdw)

    def digest(res):
        h = hashlib.sha256()
        for a in res:
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    def all_digests():
        return {np.dtype(dt).name: digest(work(dt)) for dt in DATA}
""")

THREADS_SCRIPT = PRELUDE + textwrap.dedent("""
    import threading
    ref = all_digests()   # one Python thread
    NTHREADS, CALLS = 8, 20
    barrier = threading.Barrier(NTHREADS)
    bad, done = [], []

    def worker(i):
        barrier.wait()
        for c in range(CALLS):
            dt = (np.float32, np.float64)[(i + c) % 2]
            d = digest(work(dt))
            if d != ref[np.dtype(dt).name]:
                bad.append((i, c, np.dtype(dt).name))
        done.append(i)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(NTHREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(done) == NTHREADS, done
    assert not bad, bad
    print("OK", NTHREADS * CALLS)
""")

FORK_SCRIPT = PRELUDE + textwrap.dedent("""
    import multiprocessing, threading

    def child_digests(_):
        return all_digests()

    parent = all_digests()   # the parent has run the parallel kernels (thread pools exist)

    # os.fork: the child recomputes and reports through its exit status
    pid = os.fork()
    if pid == 0:
        try:
            code = 0 if all_digests() == parent else 3
        except BaseException:
            code = 4
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, ("os.fork child", status)

    # multiprocessing with the 'fork' start method
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        got = pool.map(child_digests, range(4))
    assert all(g == parent for g in got), "multiprocessing fork child differs"

    # fork while another thread is inside a kernel (it may hold fastnorm's launch lock)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            work(np.float64)

    t = threading.Thread(target=busy)
    t.start()
    try:
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                try:
                    code = 0 if all_digests() == parent else 3
                except BaseException:
                    code = 4
                os._exit(code)
            _, status = os.waitpid(pid, 0)
            assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, ("fork during kernel", status)
    finally:
        stop.set()
        t.join()
    assert all_digests() == parent   # the parent still works after forking
    print("OK fork")
""")


def run_script(script, backend):
    """Runs script in its own session; on timeout kills that session (forked children too)."""
    proc = subprocess.Popen([sys.executable, "-c", script, backend], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"hung: no result in {TIMEOUT}s\nstdout: {stdout[-3000:]}\nstderr: {stderr[-3000:]}")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # leftover forked children of this script only
        except ProcessLookupError:
            pass
    assert proc.returncode == 0, (
        f"exit status {proc.returncode}\nstdout: {stdout[-3000:]}\nstderr: {stderr[-3000:]}")
    return stdout


@pytest.mark.parametrize("backend_name", _dispatch.BACKENDS)
def test_many_threads_bitwise_equal_to_single_thread(backend_name):
    assert run_script(THREADS_SCRIPT, backend_name).strip() == "OK 160"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("backend_name", _dispatch.BACKENDS)
def test_kernels_work_after_fork(backend_name):
    assert run_script(FORK_SCRIPT, backend_name).strip().endswith("OK fork")

"""Starts the MPI tests: ``mpiexec -n 2 python -m mpi4py -m pytest tests/distributed`` (the
tests there need every rank), and a script whose ranks disagree on the channel count, which
must fail with a clear error on both ranks rather than hang. Skipped only where mpi4py is not
installed (``pip install -e ".[test]"`` installs it, with the MPICH wheel's mpiexec)."""
import os
import subprocess
import sys
import textwrap

import pytest

from fastnorm import _mpirun

pytestmark = pytest.mark.skipif(not _mpirun.have_mpi4py(),
                                reason=f"mpi4py is not installed: {_mpirun.INSTALL_HINT}")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_mpi(args, timeout):
    env = {**_mpirun.environment(), "FASTNORM_MPI_TESTS": "1"}
    try:
        return subprocess.run(_mpirun.command(2, args), capture_output=True, text=True, env=env,
                              cwd=ROOT, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"mpiexec did not finish in {timeout} s (a rank waiting forever?): {e.stdout}")


def test_distributed_suite_under_mpiexec():
    proc = run_mpi(["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/distributed"], 300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    passed = [line for line in out.splitlines() if " passed" in line and "failed" not in line]
    assert len(passed) == 2, out[-3000:]  # one summary per rank


MISMATCH = textwrap.dedent("""
    import numpy as np
    from mpi4py import MPI
    from fastnorm.distributed import SyncBatchNorm1d
    rank = MPI.COMM_WORLD.Get_rank()
    C = 3 + rank
    try:
        SyncBatchNorm1d(C)(np.ones((4, C), np.float32))
    except ValueError as e:
        print(f"rank {rank} raised: {e}", flush=True)
    else:
        print(f"rank {rank} did not raise", flush=True)
""")


def test_ranks_with_different_channel_counts_fail_on_both_ranks_without_hanging(tmp_path):
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCH)
    proc = run_mpi([str(script)], 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in (0, 1):
        assert (f"rank {rank} raised: SyncBatchNorm1d: the ranks disagree on the input: "
                f"channels per rank [3, 4]") in proc.stdout, proc.stdout + proc.stderr


def test_mpiexec_is_found_next_to_python_or_on_path():
    path = _mpirun.mpiexec()
    assert os.access(path, os.X_OK)
    assert _mpirun.command(2, ["x.py"])[1:] == ["-n", "2", sys.executable, "-m", "mpi4py", "x.py"]

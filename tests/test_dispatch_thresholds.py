"""The parallel thresholds: their defaults (the suite itself runs with lower ones, set in
conftest.py), the environment override, and a clear error for a bad value."""
import os
import subprocess
import sys

import pytest

CODE = ("from fastnorm import _dispatch as d; import fastnorm; fastnorm.set_num_threads(2); "
        "print(d.PARALLEL_MIN_WORK, d.NUMBA_PARALLEL_MIN_WORK, "
        "d.threads_for(d.PARALLEL_MIN_WORK - 1), d.threads_for(d.PARALLEL_MIN_WORK))")


def _run(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FASTNORM_")}
    clean.update(env)
    return subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=clean,
                          timeout=120)


def test_defaults():
    proc = _run(FASTNORM_BACKEND="cython")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(1 << 20), str(1 << 21), "1", "2"]


def test_environment_sets_them():
    proc = _run(FASTNORM_BACKEND="cython", FASTNORM_PARALLEL_MIN_WORK="1000",
                FASTNORM_NUMBA_PARALLEL_MIN_WORK="2000")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1000", "2000", "1", "2"]


@pytest.mark.parametrize("bad", ["-1", "lots", "1e6"])
def test_bad_value_names_the_variable(bad):
    proc = _run(FASTNORM_PARALLEL_MIN_WORK=bad)
    assert proc.returncode != 0
    assert "FASTNORM_PARALLEL_MIN_WORK must be a non-negative integer" in proc.stderr

"""Cold start: with the Cython backend, importing fastnorm and calling any op must not import
numba (seconds of import and JIT) nor anything heavy behind it (numba imports SciPy). The cold
start target (at most 0.15x of `import torch` + a first F.layer_norm) rests on this."""
import os
import subprocess
import sys

import pytest

from fastnorm import _dispatch

CODE = """
import sys
import numpy as np
import fastnorm, fastnorm.functional as fn
from fastnorm import nn, optim
x = np.random.default_rng(0).standard_normal((4, 8, 6)).astype(np.float32)
fn.layer_norm(x); fn.rms_norm(x); fn.batch_norm(x, training=True); fn.group_norm(x, 2)
fn.instance_norm(x); fn.local_response_norm(x, 3); fn.lp_normalize(x)
fn.dropout(x, 0.5, seed=1); fn.dropout_backward(x, 0.5, seed=1); fn.clip_grad_norm_([x], 1.0)
fn.softmax_cross_entropy(x[:, :, 0], np.zeros(4, np.int64)); fn.kl_div(x**2 + 1, x**2 + 2)
p = np.ones(8, np.float32); optim.Adam([p]).step([p.copy()])
nn.LayerNorm(6)(x); nn.Dropout(0.1)(x)
heavy = sorted(m for m in ("numba", "scipy", "torch", "llvmlite") if m in sys.modules)
print(",".join(heavy))
"""


@pytest.mark.skipif(not _dispatch._cython_available(), reason="the Cython extensions are not built")
def test_cython_backend_imports_no_numba():
    env = {**os.environ, "FASTNORM_BACKEND": "cython"}
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "", f"imported by the Cython path: {proc.stdout.strip()}"


WAIT_CODE = """
import os
import fastnorm
fastnorm.get_backend()  # loads the cython extensions, and with them libgomp
print(os.environ.get("OMP_WAIT_POLICY"))
"""


@pytest.mark.skipif(not _dispatch._cython_available(), reason="the Cython extensions are not built")
@pytest.mark.parametrize("user_policy, shown", [
    (None, "GOMP_SPINCOUNT = '0'"),  # passive; libgomp's own default would spin 300000 times
    ("active", "OMP_WAIT_POLICY = 'ACTIVE'"),
])
def test_openmp_runtime_is_loaded_passive_unless_the_user_chose(user_policy, shown):
    """libgomp prints its settings at load with OMP_DISPLAY_ENV; fastnorm sets the wait policy
    only while loading it, and leaves a user's choice and the process environment alone."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(FASTNORM_BACKEND="cython", OMP_DISPLAY_ENV="verbose")
    if user_policy:
        env["OMP_WAIT_POLICY"] = user_policy
    proc = subprocess.run([sys.executable, "-c", WAIT_CODE], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert shown in proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(user_policy)

"""The examples in the public docstrings run and print what they say."""
import doctest
import importlib
import pkgutil

import pytest

import fastnorm

# every module and subpackage but the private ones, the benchmarks (their examples would time
# things) and the CUDA host modules (they import numba.cuda; tested under the simulator)
PUBLIC = sorted(
    {"fastnorm", "fastnorm.functional"}
    | {m.name for m in pkgutil.walk_packages(fastnorm.__path__, "fastnorm.")
       if not any(part.startswith("_") for part in m.name.split("."))
       and m.name.split(".")[1] not in ("bench", "cuda")}
)


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples(name):
    if name == "fastnorm.distributed":
        pytest.importorskip("mpi4py", reason="fastnorm.distributed needs pip install 'fastnorm[dist]'")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"

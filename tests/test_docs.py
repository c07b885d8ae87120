"""The examples in the public docstrings run and print what they say."""
import doctest
import importlib
import pkgutil

import pytest

import fastnorm

PUBLIC = sorted(
    ({"fastnorm.functional", "fastnorm.nn"}
    | {m.name for m in pkgutil.iter_modules(fastnorm.__path__, "fastnorm.") if not m.name.split(".")[-1].startswith("_")}
    | {m.name for m in pkgutil.iter_modules(fastnorm.nn.__path__, "fastnorm.nn.")})
    - {"fastnorm.bench"}  # its examples would time things
)


@pytest.mark.parametrize("name", PUBLIC)
def test_docstring_examples(name):
    if name == "fastnorm.distributed":
        pytest.importorskip("mpi4py", reason="fastnorm.distributed needs pip install 'fastnorm[dist]'")
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"

"""The package's layout keeps its promises: the ops are exported at the top level, dispatch's
tables name modules that exist and serve every routed op, and no modules import each other in a
circle."""
import ast
import importlib
import importlib.util
import inspect
import pathlib

import pytest

import fastnorm
import fastnorm.functional as fn
import fastnorm.optim.functional as optim_fn
from fastnorm import _dispatch

ROOT = pathlib.Path(fastnorm.__file__).parent


def test_functional_ops_are_exported_at_the_top_level():
    assert len(fn.__all__) > 40
    for name in fn.__all__:
        assert getattr(fastnorm, name) is getattr(fn, name), name
    assert set(fn.__all__) <= set(fastnorm.__all__)


@pytest.mark.parametrize("group", sorted(_dispatch.CPU_KERNELS))
def test_cpu_kernel_table_names_existing_modules(group):
    assert set(_dispatch.CPU_KERNELS[group]) == set(_dispatch.BACKENDS)
    for module in _dispatch.CPU_KERNELS[group].values():
        assert importlib.util.find_spec(module) is not None, module


def _defined_functions(module_name):
    """Names of the functions a module defines, read from its source (importing a CUDA module
    would import numba.cuda)."""
    tree = ast.parse(pathlib.Path(importlib.util.find_spec(module_name).origin).read_text())
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}


def _routed():
    """(public module, function) for every op that routes device arrays (``device_variant``)."""
    for module in {f.__module__ for f in (getattr(fn, n) for n in fn.__all__)} | {optim_fn.__name__}:
        for name, f in vars(importlib.import_module(module)).items():
            if callable(f) and hasattr(f, "device_module") and f.__module__ == module:
                yield module, name


def test_every_routed_op_has_its_device_function():
    routed = list(_routed())
    assert len(routed) > 20
    for module, name in routed:
        device = getattr(importlib.import_module(module), name).device_module
        assert device == _dispatch.DEVICE_MODULES[module], (module, name)
        assert name in _defined_functions(device), (module, name)
    for name in optim_fn.__all__:  # the optimizer steps route through _device_call
        assert name in _defined_functions(_dispatch.DEVICE_MODULES[optim_fn.__name__]), name


def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path, name):
    """The fastnorm modules a module imports at its top level (not inside functions)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fastnorm")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            if not base.startswith("fastnorm"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if importlib.util.find_spec(base) and _is_module(sub) else base)
    return found


def _is_module(name):
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError, ValueError):
        return False


def test_no_import_cycles():
    graph = {}
    for path in ROOT.rglob("*.py"):
        name = _module_name(path)
        graph[name] = {m for m in _imports(path, name) if m != name}
    assert graph["fastnorm.cuda.optim"] and "fastnorm.optim.functional" not in graph["fastnorm.cuda.optim"]
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                raise AssertionError("import cycle: " + " -> ".join([*stack, node, dep]))
            if dep not in state:
                visit(dep, [*stack, node])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_device_variant_refuses_a_module_without_a_device_table_entry():
    def op(x):
        return x

    op.__module__ = "fastnorm.ops.nowhere"
    with pytest.raises(LookupError, match="DEVICE_MODULES"):
        _dispatch.device_variant(op)
    assert inspect.isfunction(_dispatch.device_variant(fn.layer_norm.__wrapped__))

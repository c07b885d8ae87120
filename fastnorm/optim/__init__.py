"""Optimizers with torch.optim's arithmetic, param groups and state_dict layout.

    from fastnorm.optim import Adam
    opt = Adam(layer.params, lr=1e-3)       # a dict name -> array, a list, or param groups
    opt.step(layer.grads)                   # grads in the same structure; params updated in place

Each ``step`` equals torch.optim's step for the same hyper-parameters (see
``fastnorm.optim.functional`` for the formulas and how closely the bits agree) and runs all
the tensors of one dtype in one parallel launch of a fused kernel: the tensors are cut into
chunks of ``functional.CHUNK`` elements listed in one table, so a model of many small tensors
still uses every thread. Params on a CUDA device (numba device arrays, CuPy: C-contiguous)
run the numba.cuda steps of ``fastnorm.optim.functional``, one launch per tensor, their state
kept on the device. ``state_dict()`` / ``load_state_dict()`` use torch.optim's layout and
names, so ``opt.load_state_dict(torch_opt.state_dict())`` continues a torch run, and
``torch_opt.load_state_dict(to_torch(opt.state_dict()))`` continues ours.
"""
import copy
import math

import numpy as np

from . import _coef, functional
from .functional import chunk_table, multi_step, pointer_table
from .. import _validation as v
from .._dispatch import device_module, on_device

__all__ = ["Optimizer", "SGD", "Adagrad", "Adadelta", "RMSprop", "Adam", "AdamW", "to_torch",
           "functional"]

# torch.optim flags that select torch's implementation, not the arithmetic: kept in the
# param groups (so state_dicts convert both ways), not used here
_TORCH_FLAGS = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}


def _number(x, name, low=0.0, high=math.inf, high_open=False):
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(x).__name__}")
    x = float(x)
    if not (low <= x and (x < high if high_open else x <= high)):
        raise ValueError(f"Invalid {name} value: {x}")
    return x


class Optimizer:
    """Base class: param groups, per-parameter state, the step loop and state_dicts.

    A subclass gives ``algorithm`` (the kernel), ``defaults`` (torch's group keys, in torch's
    order, with torch's defaults) and ``_tensor(p, group, state, coefs)``, which returns the
    state arrays in the kernel's slot order and the tensor's coefficient row (shared through
    ``coefs`` by the tensors of a group at the same step).
    """

    algorithm = None
    defaults = {}

    def __init__(self, params, **hyper):
        unknown = set(hyper) - set(self.defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword(s) {sorted(unknown)}")
        self._defaults = {**self.defaults, **hyper}
        self._names = None
        if isinstance(params, dict):
            self._names = list(params)
            groups = [{"params": list(params.values())}]
        else:
            params = list(params)
            if not params:
                raise ValueError("optimizer got an empty parameter list")
            groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        self._params = []
        self.state = {}
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------ groups

    def add_param_group(self, group):
        """Add a group {'params': [arrays], hyper-parameter: value, ...}; missing
        hyper-parameters take the optimizer's."""
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError("a param group must be a dict with a 'params' list")
        params = group["params"]
        params = list(params.values()) if isinstance(params, dict) else list(params)
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"unknown hyper-parameter(s) {sorted(unknown)} in a param group")
        seen = {id(p) for p in self._params}
        for j, p in enumerate(params):
            if on_device(p):
                _device_optim().check_param(p)
            elif type(p) is not np.ndarray:
                raise TypeError(f"params must be numpy arrays (updated in place), got {type(p).__name__}")
            elif p.dtype not in v.FLOAT_DTYPES:
                raise TypeError(f"params must be float32 or float64 arrays, got dtype {p.dtype}")
            elif not (p.flags.c_contiguous and p.flags.aligned and p.flags.writeable):
                raise ValueError("params must be writeable, aligned, C-contiguous arrays")
            if id(p) in seen:
                raise ValueError("some parameters appear in more than one parameter group")
            seen.add(id(p))
        full = {k: group.get(k, self._defaults[k]) for k in self.defaults}
        self._check(full)
        full["params"] = params
        self.param_groups.append(full)
        for p in params:
            self._params.append(p)
            self._init_state(p, full, self.state.setdefault(len(self._params) - 1, {}))

    def _check(self, g):
        _number(g["lr"], "learning rate")
        if "eps" in g:
            _number(g["eps"], "epsilon value")
        _number(g["weight_decay"], "weight_decay value")

    def _init_state(self, p, group, state):
        """State created when a param joins (Adagrad's); others create it at the first step."""

    # ------------------------------------------------------------ stepping

    def _grads(self, grads):
        n = len(self._params)
        if self._names is not None and isinstance(grads, dict):
            unknown = set(grads) - set(self._names)
            if unknown:
                raise ValueError(f"grads for unknown params {sorted(unknown)}")
            return [grads.get(k) for k in self._names]
        grads = list(grads)
        if len(grads) == len(self.param_groups) and len(grads) != n or (
                grads and all(isinstance(g, (list, tuple, dict)) for g in grads)):
            flat = []
            for g in grads:
                flat.extend(g.values() if isinstance(g, dict) else g)
            grads = flat
        if len(grads) != n:
            raise ValueError(f"expected {n} grads (one per param, None to skip), got {len(grads)}")
        return grads

    def step(self, grads):
        """Update every param that has a grad (None skips it) and its state, in place."""
        grads = self._grads(grads)
        work, k = [], 0
        for group in self.param_groups:  # every check before anything is written
            for p in group["params"]:
                g = grads[k]
                if g is not None and on_device(p):
                    work.append((k, p, _device_optim().check_grad(g, p, k), group))
                elif g is not None:
                    if on_device(g):
                        raise TypeError(f"grads[{k}] is a device array but its param is a host array")
                    g = v.float_array(g, f"grads[{k}]")
                    if g.shape != p.shape:
                        raise ValueError(f"grads[{k}] must have its param's shape {p.shape}, got {g.shape}")
                    if g.dtype != p.dtype:
                        raise TypeError(f"grads[{k}] must have its param's dtype {p.dtype}, got {g.dtype}")
                    work.append((k, p, np.ascontiguousarray(g), group))
                k += 1
        batches = {}
        coefs = {}  # tensors of one group at one step share their coefficients
        for k, p, g, group in work:
            state = self.state.setdefault(k, {})
            if "step" in state or self._counts_steps:
                state["step"] = float(state.get("step", 0.0)) + 1.0
            slots, coef = self._tensor(p, group, state, coefs)
            if on_device(p):
                self._device_step(p, g, group, state, slots, coef)
                continue
            b = batches.setdefault(p.dtype, ([], [], []))
            b[0].extend((p, g, *slots))  # holds converted grads through the launch
            b[1].append(coef)
            b[2].append(p.size)
        nslots = 2 + len(functional.SLOTS[self.algorithm])
        for dtype, (arrays, rows, sizes) in batches.items():
            multi_step(self.algorithm, dtype, pointer_table(arrays, nslots), chunk_table(sizes),
                       np.array(rows, np.float64), sum(sizes))

    _counts_steps = True

    def _device_step(self, p, g, group, state, slots, coef):
        """One tensor's step on the device: the ``fastnorm.optim.functional`` step (which
        routes device arrays to fastnorm.cuda.optim)."""
        raise NotImplementedError(f"fastnorm.optim.{type(self).__name__}: no CUDA step")

    # ------------------------------------------------------------ state_dict

    def state_dict(self):
        """torch.optim's layout: {'state': {index: {name: array or step}}, 'param_groups':
        [{hyper-parameters..., 'params': [indices]}]}. Arrays are the optimizer's own (not
        copies, as in torch); 'step' is a float32 0-d array (torch's float32 tensor)."""
        groups, k = [], 0
        for group in self.param_groups:
            packed = {key: copy.copy(val) for key, val in group.items() if key != "params"}
            packed["params"] = list(range(k, k + len(group["params"])))
            k += len(group["params"])
            groups.append(packed)
        state = {}
        for i, st in self.state.items():
            if st:
                state[i] = {name: (np.array(val, np.float32) if name == "step" else val)
                            for name, val in st.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state_dict of ours or torch's (tensors are converted); checked in full
        before anything changes."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        index = {}
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 "match the size of optimizer's group")
            index.update(zip(saved["params"], group["params"]))
        positions = {id(p): k for k, p in enumerate(self._params)}
        new_state = {}
        for key, st in state_dict["state"].items():
            key = int(key)
            if key not in index:
                raise ValueError(f"state for unknown parameter index {key}")
            p = index[key]
            loaded = {}
            for name, val in st.items():
                if name == "step":
                    loaded["step"] = float(np.asarray(_numpy(val)))
                elif val is None:
                    loaded[name] = None
                else:
                    a = np.array(_numpy(val), dtype=p.dtype, order="C", copy=True)
                    if a.shape != tuple(p.shape):
                        raise ValueError(f"state {name!r} of parameter {key} has shape {a.shape}, "
                                         f"its parameter {p.shape}")
                    loaded[name] = _device_optim().to_device(a) if on_device(p) else a
            new_state[positions[id(p)]] = loaded
        new_groups = []
        for saved, group in zip(groups, self.param_groups):
            g = {k: _plain(val) for k, val in saved.items() if k != "params"}
            if "betas" in g:
                g["betas"] = tuple(g["betas"])
            full = {k: g.get(k, self.defaults[k]) for k in self.defaults}
            full.update({k: val for k, val in g.items() if k not in full})
            self._check(full)
            full["params"] = group["params"]
            new_groups.append(full)
        self.param_groups = new_groups
        self.state = {k: new_state.get(k, {}) for k in range(len(self._params))}

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {val}" for k, val in g.items() if k != "params")
        return "\n".join(lines + [")"])


def _numpy(val):
    """A torch tensor, a device array (copied back: loading a state_dict) or anything
    array-like as NumPy."""
    if on_device(val) and hasattr(val, "copy_to_host"):
        return val.copy_to_host()
    if hasattr(val, "detach"):
        val = val.detach().cpu().numpy()
    return val


def _plain(val):
    if hasattr(val, "item") and getattr(val, "ndim", 1) == 0:
        return val.item()
    return val


def _device_optim():
    return device_module(__name__)


def _full(p, value):
    """A new state array like ``p`` (on p's device when p is a device array)."""
    if on_device(p):
        return _device_optim().full_like(p, value)
    return np.full_like(p, value)


def _zeros(state, name, p):
    a = state.get(name)
    if a is None:
        a = state[name] = _full(p, 0)
    return a


class SGD(Optimizer):
    """Stochastic gradient descent with momentum (``torch.optim.SGD``); the update is
    ``functional.sgd_``'s (torch's form; the seed's NAG form is shown there)."""

    algorithm = "sgd"
    defaults = {"lr": 1e-3, "momentum": 0, "dampening": 0, "weight_decay": 0, "nesterov": False,
                "maximize": False, "foreach": None, "differentiable": False, "fused": None}
    _counts_steps = False

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False,
                 *, maximize=False, **flags):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov, maximize=maximize, **flags)

    def _check(self, g):
        super()._check(g)
        _number(g["momentum"], "momentum value")
        if g["nesterov"] and (g["momentum"] <= 0 or g["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    def _tensor(self, p, g, state, coefs):
        first = False
        buf = None
        if g["momentum"] != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = _full(p, 0) if on_device(p) else np.empty_like(p)
                first = True
        key = (id(g), first)
        if key not in coefs:
            coefs[key] = _coef.sgd_coef(g["lr"], g["momentum"], g["dampening"],
                                        g["weight_decay"], g["nesterov"], g["maximize"], first)
        return (buf,), coefs[key]

    def _device_step(self, p, grad, g, state, slots, coef):
        functional.sgd_(p, grad, slots[0], lr=g["lr"], momentum=g["momentum"],
                        dampening=g["dampening"], weight_decay=g["weight_decay"],
                        nesterov=g["nesterov"], maximize=g["maximize"], first_step=coef[6])


class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``); see ``functional.adagrad_``."""

    algorithm = "adagrad"
    defaults = {"lr": 1e-2, "lr_decay": 0, "eps": 1e-10, "weight_decay": 0,
                "initial_accumulator_value": 0, "foreach": None, "maximize": False,
                "differentiable": False, "fused": None}

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10, *, maximize=False, **flags):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps,
                         maximize=maximize, **flags)

    def _check(self, g):
        super()._check(g)
        _number(g["lr_decay"], "lr_decay value")
        _number(g["initial_accumulator_value"], "initial_accumulator_value")

    def _init_state(self, p, group, state):
        state["step"] = 0.0
        state["sum"] = _full(p, group["initial_accumulator_value"])

    def _tensor(self, p, g, state, coefs):
        if "sum" not in state:
            state["sum"] = _full(p, g["initial_accumulator_value"])
        key = (id(g), state["step"])
        if key not in coefs:
            coefs[key] = _coef.adagrad_coef(g["lr"], g["lr_decay"], g["weight_decay"],
                                            g["eps"], g["maximize"], state["step"])
        return (state["sum"],), coefs[key]

    def _device_step(self, p, grad, g, state, slots, coef):
        functional.adagrad_(p, grad, slots[0], state["step"], lr=g["lr"], lr_decay=g["lr_decay"],
                            weight_decay=g["weight_decay"], eps=g["eps"], maximize=g["maximize"])


class Adadelta(Optimizer):
    """Adadelta (``torch.optim.Adadelta``); see ``functional.adadelta_``."""

    algorithm = "adadelta"
    defaults = {"lr": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0, "maximize": False,
                "capturable": False, "foreach": None, "differentiable": False}

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0, *, maximize=False,
                 **flags):
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay,
                         maximize=maximize, **flags)

    def _check(self, g):
        super()._check(g)
        _number(g["rho"], "rho value", 0.0, 1.0)

    def _tensor(self, p, g, state, coefs):
        key = id(g)
        if key not in coefs:
            coefs[key] = _coef.adadelta_coef(g["lr"], g["rho"], g["eps"], g["weight_decay"],
                                             g["maximize"])
        return (_zeros(state, "square_avg", p), _zeros(state, "acc_delta", p)), coefs[key]

    def _device_step(self, p, grad, g, state, slots, coef):
        functional.adadelta_(p, grad, *slots, lr=g["lr"], rho=g["rho"], eps=g["eps"],
                             weight_decay=g["weight_decay"], maximize=g["maximize"])


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``, centered and momentum); see ``functional.rmsprop_``."""

    algorithm = "rmsprop"
    defaults = {"lr": 1e-2, "momentum": 0, "alpha": 0.99, "eps": 1e-8, "centered": False,
                "weight_decay": 0, "capturable": False, "foreach": None, "maximize": False,
                "differentiable": False}

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False, *, maximize=False, **flags):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered, maximize=maximize, **flags)

    def _check(self, g):
        super()._check(g)
        _number(g["momentum"], "momentum value")
        _number(g["alpha"], "alpha value")

    def _tensor(self, p, g, state, coefs):
        sq = _zeros(state, "square_avg", p)
        buf = _zeros(state, "momentum_buffer", p) if g["momentum"] > 0 else None
        ga = _zeros(state, "grad_avg", p) if g["centered"] else None
        key = id(g)
        if key not in coefs:
            coefs[key] = _coef.rmsprop_coef(g["lr"], g["alpha"], g["eps"], g["weight_decay"],
                                            g["momentum"], g["centered"], g["maximize"])
        return (sq, ga, buf), coefs[key]

    def _device_step(self, p, grad, g, state, slots, coef):
        sq, ga, buf = slots
        functional.rmsprop_(p, grad, sq, lr=g["lr"], alpha=g["alpha"], eps=g["eps"],
                            weight_decay=g["weight_decay"], momentum=g["momentum"],
                            centered=g["centered"], maximize=g["maximize"], grad_avg=ga,
                            momentum_buffer=buf)


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``; AMSGrad with ``amsgrad=True``; AdamW's decoupled weight
    decay with ``decoupled_weight_decay=True``); see ``functional.adam_``.

    Examples
    --------
    >>> import numpy as np; from fastnorm.optim import Adam
    >>> w = np.zeros(2, np.float32); opt = Adam([w], lr=0.1)
    >>> opt.step([np.array([1.0, -1.0], np.float32)]); w
    array([-0.09999999,  0.09999999], dtype=float32)
    >>> opt.state_dict()["state"][0]["exp_avg"]
    array([ 0.1, -0.1], dtype=float32)
    """

    algorithm = "adam"
    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                "amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                "differentiable": False, "fused": None, "decoupled_weight_decay": False}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False, *, maximize=False, decoupled_weight_decay=None, **flags):
        if decoupled_weight_decay is None:
            decoupled_weight_decay = self.defaults["decoupled_weight_decay"]
        super().__init__(params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize,
                         decoupled_weight_decay=decoupled_weight_decay, **flags)

    def _check(self, g):
        super()._check(g)
        b1, b2 = g["betas"]
        _number(b1, "beta parameter at index 0", 0.0, 1.0, high_open=True)
        _number(b2, "beta parameter at index 1", 0.0, 1.0, high_open=True)

    def _tensor(self, p, g, state, coefs):
        m = _zeros(state, "exp_avg", p)
        s = _zeros(state, "exp_avg_sq", p)
        vmax = _zeros(state, "max_exp_avg_sq", p) if g["amsgrad"] else None
        key = (id(g), state["step"])
        if key not in coefs:
            b1, b2 = g["betas"]
            coefs[key] = _coef.adam_coef(
                g["lr"], b1, b2, g["eps"], g["weight_decay"], g["decoupled_weight_decay"],
                g["amsgrad"], g["maximize"], state["step"])
        return (m, s, vmax), coefs[key]

    def _device_step(self, p, grad, g, state, slots, coef):
        m, s, vmax = slots
        b1, b2 = g["betas"]
        functional.adam_(p, grad, m, s, state["step"], lr=g["lr"], beta1=b1, beta2=b2,
                         eps=g["eps"], weight_decay=g["weight_decay"],
                         decoupled=g["decoupled_weight_decay"], max_exp_avg_sq=vmax,
                         maximize=g["maximize"])


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): Adam with decoupled weight decay (default 1e-2)."""

    defaults = {**Adam.defaults, "weight_decay": 1e-2, "decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False, *, maximize=False, **flags):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, **flags)


def to_torch(state_dict):
    """An optimizer state_dict of ours with torch tensors for arrays (what
    ``torch.optim.<X>.load_state_dict`` expects: 'step' a float32 scalar tensor)."""
    import torch

    def conv(val):
        if isinstance(val, np.ndarray):
            return torch.tensor(val)
        if isinstance(val, dict):
            return {k: conv(x) for k, x in val.items()}
        if isinstance(val, list):
            return [conv(x) for x in val]
        return val

    return conv(state_dict)

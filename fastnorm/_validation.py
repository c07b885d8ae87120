"""Checks and conversions shared by every public function: what fastnorm accepts lives here.

Kernels receive C-contiguous, native-byte-order float32/float64 arrays; everything else
(other layouts, byte orders, Python sequences) is converted here, and bad input is refused
here with an error naming the argument, before anything is written.
"""
import numpy as np

from ._dispatch import on_device

_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
FLOAT_DTYPES = (_F32, _F64)


def float_array(a, name):
    """``a`` as a float32/float64 ndarray (native byte order); TypeError for any other dtype,
    and for a CUDA device array (the call runs on the host: its first array argument is a host
    array; a device array here would be copied back silently)."""
    if type(a) is not np.ndarray:
        if on_device(a):
            raise TypeError(f"{name} is a CUDA device array but this call runs on the host (its "
                            "first array argument is a host array): pass every array on the device, "
                            "or copy it to the host first")
        a = np.asarray(a)
    dt = a.dtype
    if dt is _F32 or dt is _F64:
        return a
    if dt.kind == "f" and dt.itemsize in (4, 8):
        # equal dtypes that are not the canonical singletons, or non-native byte order
        return a.astype(dt.newbyteorder("="), copy=False)
    raise TypeError(f"{name} must be a float32 or float64 array, got dtype {dt}")


def contiguous(a):
    """C-contiguous view of ``a`` (a copy only when its layout needs one)."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def param_array(a, name, shape, dtype):
    """An optional parameter (weight, bias): None, or a float array of ``shape``, as ``dtype``."""
    if a is None or (type(a) is np.ndarray and a.dtype is dtype and a.shape == shape
                     and a.flags.c_contiguous):
        return a
    a = float_array(a, name)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if a.dtype != dtype:
        a = a.astype(dtype)
    return contiguous(a)


def same_shape(a, name_a, b, name_b):
    if a.shape != b.shape:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}")


def grad_like(dy, x, name="dy"):
    """The upstream gradient of a backward: a float array of x's shape and dtype."""
    dy = float_array(dy, name)
    same_shape(dy, name, x, "x")
    if dy.dtype != x.dtype:
        raise TypeError(f"{name} must have the dtype of x ({x.dtype}), got {dy.dtype}")
    return dy


def normalize_axis(axis, ndim, name="axis"):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array of {ndim} dimension(s)")
    return int(axis) % ndim


def check_eps(eps):
    eps = float(eps)
    if not eps >= 0.0:
        raise ValueError(f"eps must be a non-negative number, got {eps}")
    return eps


def out_array(out, shape, dtype, name="out"):
    """Check a caller's ``out`` (before anything is written) or allocate one. An ``out`` of the
    right dtype in the other byte order is accepted (the kernel writes a scratch array that is
    copied into it): in place on a byte-swapped input works."""
    if out is None:
        return np.empty(shape, dtype)
    if type(out) is not np.ndarray:
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype and out.dtype.newbyteorder("=") != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def kernel_target(out, *inputs):
    """The C-contiguous native array a kernel may write for ``out``: ``out`` itself when it is
    C-contiguous, native and either is one of the (contiguous) inputs or overlaps none of
    them, else a scratch array whose contents ``finish`` copies into ``out`` afterwards."""
    if out.flags.c_contiguous and out.dtype.isnative:
        for a in inputs:
            if a is not None and a is not out and np.may_share_memory(a, out):
                if not (a.__array_interface__["data"][0] == out.__array_interface__["data"][0]
                        and a.strides == out.strides and a.shape == out.shape):
                    return np.empty(out.shape, out.dtype)
        return out
    return np.empty(out.shape, out.dtype.newbyteorder("="))


def out_target(out, shape, dtype, *inputs):
    """``(out, target)`` for an op writing ``shape``/``dtype`` from ``inputs``: a new array as
    both when ``out`` is None, else the checked ``out`` (``out_array``) and the array the kernel
    may write for it (``kernel_target``); ``finish(out, target)`` completes it."""
    if out is None:
        out = np.empty(shape, dtype)
        return out, out
    out = out_array(out, shape, dtype)
    return out, kernel_target(out, *inputs)


def finish(out, target):
    """Copy a scratch result into the caller's ``out`` (no-op when the kernel wrote ``out``)."""
    if target is not out:
        out[...] = target
    return out

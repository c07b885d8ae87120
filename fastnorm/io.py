"""``fastnorm.save(path, state_dict)`` / ``fastnorm.load(path)``: safetensors files, written by
this module alone (no pickle, no dependency).

The file is safetensors (https://github.com/huggingface/safetensors): 8 bytes of little-endian
u64 header length, a JSON header mapping each tensor name to its ``dtype``, ``shape`` and
``data_offsets`` (start, end) in the data section, plus ``__metadata__`` (a dict of strings),
then the raw little-endian C-order data. Any safetensors reader loads the arrays (names are
the dotted paths, e.g. ``state.0.exp_avg``); ours also restores the nested structure:

- ``fastnorm.structure``: JSON of the state_dict with every array replaced by
  ``{"__tensor__": name}``; dicts keep their key types and order (``{"__dict__": [[k, v]]}``),
  tuples stay tuples; numbers, strings, booleans and None are kept as they are, so the
  hyper-parameters of an optimizer's param groups travel in the metadata.
- ``fastnorm.sha256``: SHA-256 over the structure, the tensor table and the data, so that a
  truncated or altered file raises ``ValueError`` instead of loading wrong numbers.

Loading reads and checks the whole file before building anything (nothing is half-loaded)
and never runs code from the file. Saving writes a temporary file in the same directory,
fsyncs it and renames it over ``path`` (``os.replace``, atomic): a crash mid-write leaves the
previous file intact.
"""
import hashlib
import json
import math
import os
import struct
import tempfile

import numpy as np

__all__ = ["save", "load"]

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "|i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "|u1", "BOOL": "|b1"}
_CODES = {np.dtype(s).newbyteorder("<") if np.dtype(s).itemsize > 1 else np.dtype(s): code
          for code, s in _DTYPES.items()}
_MAX_HEADER = 100 << 20


def _code(dtype):
    d = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
    try:
        return _CODES[d]
    except KeyError:
        raise TypeError(f"cannot save arrays of dtype {dtype} (safetensors dtypes: "
                        f"{', '.join(_DTYPES)})") from None


def _encode(obj, path, tensors):
    """JSON-able structure of ``obj``; arrays go to ``tensors`` (name -> little-endian array)."""
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):  # a torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        name = ".".join(path) or "tensor"
        while name in tensors:
            name += "_"
        dt = obj.dtype
        _code(dt)
        tensors[name] = obj.astype(dt.newbyteorder("<") if dt.itemsize > 1 else dt, order="C", copy=False)
        return {"__tensor__": name}
    if isinstance(obj, dict):
        items = []
        for k, val in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"state_dict keys must be str or int, got {type(k).__name__} at {'.'.join(path) or 'top level'}")
            items.append([k, _encode(val, path + [str(k)], tensors)])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        enc = [_encode(x, path + [str(i)], tensors) for i, x in enumerate(obj)]
        return {"__tuple__": enc} if isinstance(obj, tuple) else enc
    if isinstance(obj, np.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot save a {type(obj).__name__} at {'.'.join(path) or 'top level'} "
                    "(arrays, dicts, lists, tuples, numbers, strings, None)")


def _decode(obj, arrays):
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return arrays[obj["__tensor__"]]
        if "__tuple__" in obj:
            return tuple(_decode(x, arrays) for x in obj["__tuple__"])
        return {k: _decode(val, arrays) for k, val in obj["__dict__"]}
    if isinstance(obj, list):
        return [_decode(x, arrays) for x in obj]
    return obj


def _digest(structure, table, chunks):
    h = hashlib.sha256()
    h.update(structure.encode())
    h.update(b"\0")
    h.update(json.dumps(table, sort_keys=True).encode())
    h.update(b"\0")
    for c in chunks:
        h.update(c)
    return h.hexdigest()


def save(path, state_dict):
    """Write ``state_dict`` (a layer's or an optimizer's; nested dicts/lists/tuples of arrays,
    numbers, strings, None) to ``path`` as a safetensors file, atomically.

    Examples
    --------
    >>> import numpy as np, fastnorm, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
    >>> fastnorm.save(path, {"weight": np.ones(2, np.float32), "eps": 1e-5})
    >>> fastnorm.load(path)
    {'weight': array([1., 1.], dtype=float32), 'eps': 1e-05}
    """
    tensors = {}
    structure = json.dumps(_encode(state_dict, [], tensors), allow_nan=True)
    table, offset = {}, 0
    for name, a in tensors.items():
        table[name] = {"dtype": _code(a.dtype), "shape": list(a.shape),
                       "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    views = [memoryview(a.reshape(-1).view(np.uint8)) for a in tensors.values()]
    header = dict(table)
    header["__metadata__"] = {"format": "fastnorm", "fastnorm.structure": structure,
                              "fastnorm.sha256": _digest(structure, table, views)}
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)  # data aligned to 8 bytes, as safetensors writes it
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for view in views:
                f.write(view)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _corrupt(path, why):
    return ValueError(f"{path}: not a valid fastnorm/safetensors file ({why}); it is truncated, "
                      "altered or was not written by fastnorm.save")


def load(path):
    """Read a file written by ``save`` and return the state_dict (new arrays). A plain
    safetensors file (no fastnorm metadata) loads as a flat dict name -> array.

    Raises ValueError, and builds nothing, when the file is truncated or altered (the
    header does not parse, the offsets do not tile the data, or the checksum differs).
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise _corrupt(path, f"{len(data)} bytes, shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > _MAX_HEADER or 8 + n > len(data):
        raise _corrupt(path, f"header length {n} exceeds the file's {len(data) - 8} bytes")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _corrupt(path, f"header is not JSON: {e}") from None
    if not isinstance(header, dict):
        raise _corrupt(path, "header is not a JSON object")
    body = memoryview(data)[8 + n:]
    meta = header.pop("__metadata__", None) or {}
    table, spans = {}, []
    for name, info in header.items():
        try:
            dtype = np.dtype(_DTYPES[info["dtype"]])
            shape = tuple(int(s) for s in info["shape"])
            start, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise _corrupt(path, f"bad entry for tensor {name!r}") from None
        if any(s < 0 for s in shape) or end - start != math.prod(shape) * dtype.itemsize:
            raise _corrupt(path, f"tensor {name!r}: offsets do not match its shape and dtype")
        table[name] = (dtype, shape, start, end)
        spans.append((start, end))
    spans.sort()
    pos = 0
    for start, end in spans:
        if start != pos:
            raise _corrupt(path, "tensor data has gaps or overlaps")
        pos = end
    if pos != len(body):
        raise _corrupt(path, f"data section is {len(body)} bytes, the tensors need {pos}")
    structure = meta.get("fastnorm.structure")
    if structure is not None:
        plain = {name: {"dtype": header[name]["dtype"], "shape": list(t[1]),
                        "data_offsets": [t[2], t[3]]} for name, t in table.items()}
        ordered = sorted(table, key=lambda k: table[k][2])
        digest = _digest(structure, plain, [body[table[k][2]:table[k][3]] for k in ordered])
        if digest != meta.get("fastnorm.sha256"):
            raise _corrupt(path, "SHA-256 checksum mismatch")
        try:
            tree = json.loads(structure)
        except ValueError:
            raise _corrupt(path, "structure metadata is not JSON") from None
    arrays = {}
    for name, (dtype, shape, start, end) in table.items():
        a = np.frombuffer(body[start:end], dtype=dtype).reshape(shape)
        arrays[name] = a.astype(dtype.newbyteorder("="), copy=True)
    if structure is None:
        return arrays
    try:
        return _decode(tree, arrays)
    except (KeyError, TypeError, ValueError):
        raise _corrupt(path, "structure metadata does not match the tensors") from None

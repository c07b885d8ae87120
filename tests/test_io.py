"""fastnorm.save / fastnorm.load: round trips, safetensors compatibility, corrupted files
refused with nothing loaded, and the atomic write."""
import json
import os
import struct

import numpy as np
import pytest

import fastnorm
from fastnorm import io, optim


def nested():
    return {
        "weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "bias": np.array([1.5, -2.0]),
        "num_batches_tracked": np.array(7, np.int64),
        "mask": np.array([True, False]),
        "empty": np.zeros((0, 4), np.float32),
        "groups": [{"lr": 0.1, "betas": (0.9, 0.999), "name": "head", "flag": None, "on": True}],
        7: {"step": np.array(3.0, np.float32), "ints": [1, 2, 3]},
        "eps": 1e-5,
        "nan": float("nan"),
    }


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b


def test_round_trip_keeps_structure_types_and_values(tmp_path):
    path = tmp_path / "s.safetensors"
    sd = nested()
    fastnorm.save(path, sd)
    assert_same(sd, fastnorm.load(path))


def test_byteswapped_and_strided_arrays_round_trip(tmp_path):
    a = np.arange(12, dtype=">f8").reshape(3, 4)[:, ::2]
    fastnorm.save(tmp_path / "a", {"a": a})
    b = fastnorm.load(tmp_path / "a")["a"]
    assert b.dtype == np.float64 and b.dtype.isnative
    np.testing.assert_array_equal(a, b)


def test_optimizer_state_survives_save_and_load(tmp_path, backend):
    rng = np.random.default_rng(0)
    ps = [rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)]
    qs = [p.copy() for p in ps]
    opt = optim.Adam([{"params": ps[:1], "lr": 0.01}, {"params": ps[1:]}], amsgrad=True)
    grads = [[rng.standard_normal(p.shape).astype(np.float32) for p in ps] for _ in range(6)]
    for g in grads[:3]:
        opt.step(g)
    fastnorm.save(tmp_path / "opt.safetensors", opt.state_dict())
    fastnorm.save(tmp_path / "params.safetensors", {"params": ps})
    loaded = fastnorm.load(tmp_path / "opt.safetensors")
    assert loaded["param_groups"][0]["betas"] == (0.9, 0.999)
    params = fastnorm.load(tmp_path / "params.safetensors")["params"]
    resumed = optim.Adam([{"params": params[:1], "lr": 0.5}, {"params": params[1:]}], amsgrad=True)
    resumed.load_state_dict(loaded)
    assert resumed.param_groups[0]["lr"] == 0.01
    for g in grads[3:]:
        opt.step(g)
        resumed.step(g)
    for p, q in zip(ps, params):
        np.testing.assert_array_equal(p, q)
    assert not np.array_equal(ps[0], qs[0])


def test_safetensors_reads_our_files_and_we_read_its():
    st = pytest.importorskip("safetensors.numpy")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x.safetensors")
        sd = nested()
        fastnorm.save(path, sd)
        flat = st.load_file(path)
        np.testing.assert_array_equal(flat["weight"], sd["weight"])
        np.testing.assert_array_equal(flat["7.step"], sd[7]["step"])
        assert flat["empty"].shape == (0, 4)
        theirs = os.path.join(d, "y.safetensors")
        st.save_file({"a": np.arange(3, dtype=np.float32), "b": np.ones((2, 2), np.int64)}, theirs)
        back = fastnorm.load(theirs)  # no fastnorm metadata: a flat dict
        np.testing.assert_array_equal(back["a"], np.arange(3, dtype=np.float32))
        np.testing.assert_array_equal(back["b"], np.ones((2, 2), np.int64))


def test_file_layout_is_safetensors(tmp_path):
    path = tmp_path / "w"
    fastnorm.save(path, {"w": np.ones(3, np.float32)})
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert header["w"] == {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]}
    assert set(header["__metadata__"]) >= {"fastnorm.structure", "fastnorm.sha256"}
    assert all(isinstance(v, str) for v in header["__metadata__"].values())
    assert (8 + n) % 8 == 0 and len(raw) == 8 + n + 12
    assert raw[8 + n:] == np.ones(3, "<f4").tobytes()


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "s.safetensors"
    fastnorm.save(path, nested())
    return path, path.read_bytes()


def test_truncated_files_are_refused(saved):
    path, raw = saved
    for cut in (0, 4, 8, 20, len(raw) // 2, len(raw) - 8, len(raw) - 1):
        path.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="truncated, altered"):
            fastnorm.load(path)


def test_altered_data_is_refused(saved):
    path, raw = saved
    (n,) = struct.unpack("<Q", raw[:8])
    for pos in (8 + n, 8 + n + 5, len(raw) - 1):
        bad = bytearray(raw)
        bad[pos] ^= 0x01
        path.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match="checksum mismatch"):
            fastnorm.load(path)


def test_altered_header_is_refused(saved):
    path, raw = saved
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    edits = [
        lambda h: h["__metadata__"].__setitem__("fastnorm.structure",
                                                h["__metadata__"]["fastnorm.structure"].replace("0.1", "0.2")),
        lambda h: h["weight"].__setitem__("shape", [3, 2]),
        lambda h: h["weight"].__setitem__("dtype", "I32"),
        lambda h: h["bias"].__setitem__("data_offsets", [h["bias"]["data_offsets"][0], h["bias"]["data_offsets"][1] + 8]),
    ]
    for edit in edits:
        h = json.loads(json.dumps(header))
        edit(h)
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
        with pytest.raises(ValueError, match="truncated, altered"):
            fastnorm.load(path)
    path.write_bytes(struct.pack("<Q", n) + b"{" * n + raw[8 + n:])
    with pytest.raises(ValueError, match="not JSON"):
        fastnorm.load(path)


def test_unsupported_values_are_refused_before_writing(tmp_path):
    path = tmp_path / "x"
    with pytest.raises(TypeError, match="cannot save a set"):
        fastnorm.save(path, {"a": {1, 2}})
    with pytest.raises(TypeError, match="dtype complex128"):
        fastnorm.save(path, {"a": np.ones(2, complex)})
    with pytest.raises(TypeError, match="keys must be str or int"):
        fastnorm.save(path, {(1, 2): 3})
    assert not path.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("fail_at", ["fsync", "replace", "write"])
def test_a_crash_mid_write_leaves_the_previous_file(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "ckpt.safetensors"
    fastnorm.save(path, {"v": np.zeros(1000)})
    before = path.read_bytes()

    class Crash(Exception):
        pass

    def crash(*args, **kwargs):
        raise Crash

    if fail_at == "write":
        real = os.fdopen

        def fdopen(fd, *a, **k):
            f = real(fd, *a, **k)

            class Half:
                def __enter__(self):
                    return self

                def __exit__(self, *exc):
                    f.close()

                def write(self, b):
                    f.write(bytes(b)[: len(b) // 2])  # part of the bytes reach the disk
                    raise Crash

            return Half()

        monkeypatch.setattr(io.os, "fdopen", fdopen)
    else:
        monkeypatch.setattr(io.os, fail_at, crash)
    with pytest.raises(Crash):
        fastnorm.save(path, {"v": np.ones(1000)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # the temporary file is gone
    np.testing.assert_array_equal(fastnorm.load(path)["v"], np.zeros(1000))


def test_loading_never_unpickles(tmp_path):
    import pickle

    path = tmp_path / "p"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ValueError, match="truncated, altered"):
        fastnorm.load(path)


def test_layer_state_dict_round_trip(tmp_path):
    from fastnorm import nn

    layer = nn.LayerNorm(6)
    layer.params["weight"][:] = np.arange(6)
    fastnorm.save(tmp_path / "ln", layer.state_dict())
    other = nn.LayerNorm(6)
    other.load_state_dict(fastnorm.load(tmp_path / "ln"))
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer(x), other(x))

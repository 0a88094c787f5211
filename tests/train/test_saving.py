import json
import os
import stat
import struct

import numpy as np
import pytest

import lamina
from lamina import nn
from lamina.data import Standardizer
from lamina.io import FormatError, atomic_write, load_file, save_file, write_bytes_atomic


def small_model():
    model = nn.Sequential(nn.Dense(8, activation="relu"), nn.BatchNorm(), nn.Dense(3), nn.Softmax())
    model(lamina.tensor(np.random.default_rng(0).standard_normal((4, 5))))
    return model


def test_save_load_round_trip(tmp_path):
    model = small_model()
    pre = Standardizer().fit(np.random.default_rng(1).standard_normal((20, 5)))
    path = tmp_path / "m.safetensors"
    lamina.save(model, path, preprocessing=pre, info={"classes": ["a", "b", "c"]})
    bundle = lamina.load_bundle(path)
    assert bundle.info == {"classes": ["a", "b", "c"]}
    x = np.random.default_rng(2).standard_normal((6, 5)).astype(np.float32)
    model.eval()
    with lamina.no_grad():
        np.testing.assert_array_equal(model(lamina.tensor(x)).numpy(), bundle.model(lamina.tensor(x)).numpy())
    np.testing.assert_allclose(bundle.preprocessing.transform(x), pre.transform(x))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(bundle.model.state_dict()[key], value)


def test_file_is_readable_by_the_reference_safetensors_library(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    model = small_model()
    lamina.save(model, tmp_path / "m.safetensors")
    theirs = st.load_file(str(tmp_path / "m.safetensors"))
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(theirs[f"model/{key}"], value)
    st.save_file({"w": np.arange(6, dtype=np.float32).reshape(2, 3)}, str(tmp_path / "t.safetensors"))
    ours, _ = load_file(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(ours["w"], np.arange(6, dtype=np.float32).reshape(2, 3))


def test_zero_dimensional_and_non_contiguous_arrays_keep_their_shapes(tmp_path):
    arrays = {"count": np.array(7, dtype=np.int64), "scalar": np.float32(2.5) * np.ones((), np.float32),
              "strided": np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]}
    save_file(arrays, tmp_path / "a.safetensors")
    loaded, _ = load_file(tmp_path / "a.safetensors")
    for name, value in arrays.items():
        assert loaded[name].shape == value.shape, name
        np.testing.assert_array_equal(loaded[name], value, err_msg=name)


def test_atomic_write_keeps_previous_file_on_error(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"a": np.ones(3, dtype=np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_write(path) as handle:
            handle.write(b"partial")
            raise RuntimeError("crash in the middle of a write")
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_atomic_write_gives_the_permissions_of_a_plain_write(tmp_path):
    """A new file gets 0o666 less the umask (as open(path, 'wb')), not the private mode of the
    temporary file; a replaced file keeps its own mode."""
    old_mask = os.umask(0o027)
    try:
        fresh, plain = tmp_path / "fresh.bin", tmp_path / "plain.bin"
        write_bytes_atomic(fresh, b"new")
        plain.write_bytes(b"new")
        assert stat.S_IMODE(fresh.stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o640
        os.chmod(fresh, 0o604)
        write_bytes_atomic(fresh, b"again")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o604 and fresh.read_bytes() == b"again"
    finally:
        os.umask(old_mask)


def test_save_interrupted_by_bad_array_leaves_previous_file(tmp_path):
    path = tmp_path / "m.safetensors"
    save_file({"a": np.ones(3, dtype=np.float32)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_file({"a": np.ones(3), "b": np.array(["text"])}, path)
    assert path.read_bytes() == before


def test_load_refuses_wrong_header(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    with pytest.raises(FormatError, match="header length"):
        lamina.load(path)
    path.write_bytes(struct.pack("<Q", 10) + b"not json!!")
    with pytest.raises(FormatError, match="JSON"):
        lamina.load(path)


def test_load_refuses_truncated_file(tmp_path):
    path = tmp_path / "m.safetensors"
    lamina.save(small_model(), path)
    blob = path.read_bytes()
    path.write_bytes(blob[:-10])
    with pytest.raises(FormatError, match="truncated"):
        lamina.load(path)


def test_load_refuses_unknown_layer(tmp_path):
    path = tmp_path / "m.safetensors"
    lamina.save(small_model(), path)
    arrays, metadata = load_file(path)
    config = json.loads(metadata["config"])
    config["architecture"]["config"]["layers"][0]["class_name"] = "EvalEverything"
    metadata["config"] = json.dumps(config)
    save_file(arrays, path, metadata)
    with pytest.raises(ValueError, match="unknown layer class 'EvalEverything'"):
        lamina.load(path)


def test_load_refuses_a_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"a": np.ones(2, dtype=np.float32)}, path)
    with pytest.raises(FormatError, match="not a lamina model"):
        lamina.load(path)


def test_save_unbuilt_model_is_refused(tmp_path):
    with pytest.raises(RuntimeError, match="no weights yet"):
        lamina.save(nn.Sequential(nn.Dense(3)), tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_save_refuses_a_pruned_model_until_the_pruning_is_permanent(tmp_path):
    from lamina.nn import module as module_state
    from lamina.nn import prune

    model = small_model()
    prune.l1_unstructured(model[0], "weight", 0.5)
    path = tmp_path / "m.safetensors"
    try:
        with pytest.raises(ValueError, match=r"lamina.save: Sequential has pruned parameters \['dense.weight'\].*"
                                             r"prune.remove"):
            lamina.save(model, path)
        assert not path.exists()
        prune.remove(model[0], "weight")
        lamina.save(model, path)
    finally:
        module_state._HOOKED_MODULES.clear()
        module_state._stop_running_hooks()
    loaded = lamina.load(path)
    np.testing.assert_array_equal(loaded[0].weight.numpy(), model[0].weight.numpy())
    assert (loaded[0].weight.numpy() == 0).sum() >= model[0].weight.size // 2


def test_a_model_with_tied_weights_saves_and_loads(tmp_path):
    model = nn.Sequential(nn.Dense(4, use_bias=False), nn.Dense(4, use_bias=False))
    model(lamina.tensor(np.ones((2, 4))))
    model[1].weight = model[0].weight
    path = tmp_path / "m.safetensors"
    lamina.save(model, path)
    loaded = lamina.load(path)
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    with lamina.no_grad():
        np.testing.assert_allclose(loaded(lamina.tensor(x)).numpy(), model(lamina.tensor(x)).numpy(), rtol=1e-6)


def test_zoo_model_loads_in_a_fresh_process(tmp_path):
    import subprocess
    import sys

    from threadpoolctl import threadpool_limits

    model = lamina.models.resnet_cifar(8)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    model.eval()
    threads = lamina.parallel.get_num_threads()
    lamina.parallel.set_num_threads(1)
    try:              # one thread in both processes: BLAS may split a GEMM's sums differently per thread count
        with lamina.no_grad(), threadpool_limits(1):
            expected = model(lamina.tensor(x)).numpy()
    finally:
        lamina.parallel.set_num_threads(threads)
    lamina.save(model, tmp_path / "r8.safetensors")
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, lamina; from threadpoolctl import threadpool_limits; "
            "threadpool_limits(1); lamina.parallel.set_num_threads(1); m = lamina.load(sys.argv[1]); "
            "np.save(sys.argv[3], m(lamina.tensor(np.load(sys.argv[2]))).numpy())")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "r8.safetensors"), str(tmp_path / "x.npy"),
                    str(tmp_path / "y.npy")], check=True, capture_output=True)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), expected)


def _raw_file(path, header: dict, data: bytes):
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


@pytest.mark.parametrize("entry, data, problem", [
    ({"dtype": "F32", "shape": "12", "data_offsets": [0, 8]}, 8, "lists of integers"),
    ({"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}, 8, "lists of integers"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8, 8]}, 8, "two of them"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, 12, "4 bytes after the last tensor"),
    ({"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}, 8, "leaves bytes 0..4 unused"),
])
def test_load_refuses_what_the_reference_library_refuses(tmp_path, entry, data, problem):
    path = _raw_file(tmp_path / "bad.safetensors", {"a": entry}, bytes(data))
    with pytest.raises(FormatError, match=f"bad.safetensors.*{problem}"):
        load_file(path)
    st = pytest.importorskip("safetensors.numpy")
    with pytest.raises(Exception):  # noqa: B017 (the library's own error type varies between versions)
        st.load_file(str(path))


def test_load_refuses_overlapping_tensors(tmp_path):
    header = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}
    with pytest.raises(FormatError, match="'b' at bytes 4..8 overlaps"):
        load_file(_raw_file(tmp_path / "bad.safetensors", header, bytes(8)))


def test_big_endian_arrays_are_saved_little_endian(tmp_path):
    arrays = {"w": np.arange(6, dtype=">f4").reshape(2, 3), "i": np.arange(3, dtype=">i8"), "b": np.array([True])}
    save_file(arrays, tmp_path / "be.safetensors")
    loaded, _ = load_file(tmp_path / "be.safetensors")
    for name, array in arrays.items():
        assert loaded[name].dtype == array.dtype.newbyteorder("=") and loaded[name].dtype.isnative
        np.testing.assert_array_equal(loaded[name], array)
    st = pytest.importorskip("safetensors.numpy")
    np.testing.assert_array_equal(st.load_file(str(tmp_path / "be.safetensors"))["w"], arrays["w"])

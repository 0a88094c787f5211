"""The check the ONNX tests of the language models share: an exported model that reads token ids
gives in ONNX Runtime what it gives in lamina, for several batch sizes and lengths."""

import numpy as np
import onnx
import onnxruntime as ort

import lamina
from helpers import assert_close
from lamina.export import export_onnx


def check_token_model_in_onnx_runtime(model, path, name: str, vocab: int, width: int, batches_and_steps) -> None:
    """Export ``model`` (evaluation mode) to ``path``: its input is int64 ids of dynamic (batch, time),
    its output has a dynamic time axis, the (vocab, width) token table is stored once (shared with a
    tied head), and ONNX Runtime's outputs equal lamina's for random ids of each (batch, steps)."""
    path = export_onnx(model, path)
    graph = onnx.load(str(path)).graph
    tensor_type = graph.input[0].type.tensor_type
    assert tensor_type.elem_type == onnx.TensorProto.INT64
    assert [d.dim_param for d in tensor_type.shape.dim] == ["batch", "time"]
    assert graph.output[0].type.tensor_type.shape.dim[1].dim_param == "time"
    tables = [t for t in graph.initializer if tuple(t.dims) == (vocab, width)]
    assert len(tables) == 1
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seed, (batch, steps) in enumerate(batches_and_steps):
        ids = np.random.default_rng(seed).integers(0, vocab, (batch, steps)).astype(np.int64)
        with lamina.no_grad():
            expected = model(lamina.tensor(ids)).numpy()
        if batch > 1:
            assert np.ptp(expected, axis=0).max() > 1e-3 * np.abs(expected).max()
        (got,) = session.run(None, {"input": ids})
        assert got.shape == expected.shape
        assert_close(got, expected, rtol=1e-4, what=f"{name}, {steps} steps")

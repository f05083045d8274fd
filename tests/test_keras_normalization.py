"""A Keras Normalization layer's adapted mean and variance are constants of the model, not
inputs: the export has exactly the model's own inputs and holds the adapted values."""

from __future__ import annotations

import numpy as np
import pytest

from onnxkit.errors import ConversionError
from onnxkit.passes.fold_constant_inputs import fold_constant_inputs


def _graph_with_extra_input(shape=(1, 3)):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Sub", ["x", "mean"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("mean", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_fold_turns_the_extra_input_into_an_initializer():
    import onnxruntime as ort

    model = _graph_with_extra_input()
    mean = np.array([[1.0, 2.0, 3.0]], np.float32)
    assert fold_constant_inputs(model, {"mean": mean}, ["x"]) == ["mean"]
    assert [vi.name for vi in model.graph.input] == ["x"]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x - mean)


def test_an_extra_input_nothing_reads_is_dropped_not_kept_as_a_dead_weight():
    model = _graph_with_extra_input()
    model.graph.node[0].input[1] = "x"  # Sub(x, x): "mean" is read by nothing now
    assert fold_constant_inputs(model, {}, ["x"]) == ["mean"]
    assert [vi.name for vi in model.graph.input] == ["x"] and len(model.graph.initializer) == 0


def test_fold_refuses_an_extra_input_with_no_known_value():
    model = _graph_with_extra_input()
    before = model.SerializeToString()
    with pytest.raises(ConversionError, match="needs input.*mean.*source's inputs are x"):
        fold_constant_inputs(model, {}, ["x"])
    assert model.SerializeToString() == before


def test_fold_refuses_a_value_of_another_shape_or_dtype():
    model = _graph_with_extra_input()
    with pytest.raises(ConversionError, match="does not match the constant"):
        fold_constant_inputs(model, {"mean": np.zeros((1, 4), np.float32)}, ["x"])
    with pytest.raises(ConversionError, match="does not match the constant"):
        fold_constant_inputs(model, {"mean": np.zeros((1, 3), np.float64)}, ["x"])


# ---------------------------------------------------------------- the real exporter

@pytest.fixture(scope="module")
def normalized_keras(tmp_path_factory):
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    import keras

    rng = np.random.default_rng(0)
    # Columns on very different scales, so a model without the adapted values is far off.
    data = (rng.standard_normal((256, 6)) * [1, 5, 10, 0.1, 3, 2] + [0, 3, -2, 1, 7, 0]).astype("float32")
    norm = keras.layers.Normalization(axis=-1)
    norm.adapt(data)
    inp = keras.Input((6,), name="features")
    out = keras.layers.Dense(3, name="head")(keras.layers.Dense(8, activation="relu")(norm(inp)))
    model = keras.Model(inp, out)
    path = tmp_path_factory.mktemp("keras_norm") / "normalized.keras"
    model.save(path)
    return path, data, np.asarray(norm.mean).ravel(), np.asarray(norm.variance).ravel()


@pytest.mark.slow
def test_export_has_only_the_models_inputs_and_its_adapted_values(cli, normalized_keras, tmp_path):
    import keras
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    src, data, mean, variance = normalized_keras
    out = tmp_path / "normalized.onnx"
    r = cli("export", src, "-o", out)
    assert r.code == 0, r
    model = onnx.load(str(out))
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    assert [vi.name for vi in model.graph.input if vi.name not in inits] == ["features"]
    held = [a.ravel() for a in inits.values() if a.size == 6]
    assert any(np.allclose(a, mean) for a in held)
    # TensorFlow's graph optimizer may already have folded the variance into 1/sqrt(variance)
    assert any(np.allclose(a, variance) or np.allclose(a, 1 / np.sqrt(variance), rtol=1e-4) for a in held)
    consumed = {name for node in model.graph.node for name in node.input}
    assert set(inits) <= consumed  # no dead constant left behind
    # A user feeding only the model's input gets the Keras answer.
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"features": data[:16]})[0]
    want = np.asarray(keras.models.load_model(src)(data[:16], training=False))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_an_extra_input_with_no_value_fails_the_export_and_writes_nothing(cli, normalized_keras, tmp_path, monkeypatch):
    import onnxkit.passes.fold_constant_inputs as fold

    monkeypatch.setattr(fold, "captured_constants", lambda function: {})
    src, *_ = normalized_keras
    before = src.read_bytes()
    out = tmp_path / "normalized.onnx"
    r = cli("export", src, "-o", out)
    assert r.code == 4, r
    assert "Error: the exported graph needs input(s) the source model does not have" in r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert src.read_bytes() == before

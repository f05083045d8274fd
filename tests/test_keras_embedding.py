"""A Keras model whose integer input feeds an Embedding is validated on ids inside its table
(random ids up to 10 used to fall outside a 5-row table and Keras refused them)."""

from __future__ import annotations

import pytest

pytest.importorskip("tensorflow")

pytestmark = pytest.mark.slow


def test_keras_embedding_exports_on_in_range_ids(cli, tmp_path):
    import keras

    inp = keras.Input(shape=(6,), dtype="int32", name="ids")
    x = keras.layers.Embedding(5, 4)(inp)
    x = keras.layers.GlobalAveragePooling1D()(x)
    out = keras.layers.Dense(2)(x)
    model = keras.Model(inp, out)
    model.save(tmp_path / "emb.keras")

    r = cli("export", tmp_path / "emb.keras", "-o", tmp_path / "emb.onnx", "--json")
    assert r.code == 0, r
    assert r.json["validation"]["passed"] is True


def test_embedding_bounds_come_from_the_smallest_table():
    import keras
    import numpy as np

    from onnxkit.foundation.spec import InputSpec
    from onnxkit.frameworks.tensorflow_fw import _embedding_bounds

    a = keras.Input(shape=(3,), dtype="int32", name="a")
    f = keras.Input(shape=(3,), name="f")
    e1 = keras.layers.Embedding(50, 2)(a)
    e2 = keras.layers.Embedding(7, 2)(a)
    out = keras.layers.Concatenate()([keras.layers.Flatten()(e1), keras.layers.Flatten()(e2), f])
    model = keras.Model([a, f], out)
    specs = [InputSpec("a", ("batch", 3), np.dtype("int32")), InputSpec("f", ("batch", 3), np.dtype("float32"))]
    assert _embedding_bounds(model, specs) == {"a": 7}

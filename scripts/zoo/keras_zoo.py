"""Keras applications with weights=None at small input sizes, and a plain MLP, saved as
.keras files (no Lambda layers: nothing here needs --trust)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scripts.zoo.common import SEED, Case

FAMILY = "keras"
# name -> (keras.applications constructor or None for the MLP, input shape without batch)
APPS = {
    "mlp": (None, (20,)),
    "mobilenet_v2": ("MobileNetV2", (64, 64, 3)),
    "efficientnet_b0": ("EfficientNetB0", (64, 64, 3)),
    "resnet50": ("ResNet50", (64, 64, 3)),
    "densenet121": ("DenseNet121", (64, 64, 3)),
}
FAST = ["mlp"]


def catalog() -> list[str]:
    return list(APPS)


def _model(name: str):
    import keras

    keras.utils.set_random_seed(SEED)
    app, shape = APPS[name]
    if app is None:
        return keras.Sequential([
            keras.Input(shape=shape), keras.layers.Dense(64, activation="relu"), keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.1), keras.layers.Dense(32, activation="tanh"), keras.layers.Dense(3, activation="softmax"),
        ])
    # The pooled features, not the 10-way softmax: with random weights the softmax is 0.1
    # everywhere to 1e-6, and any export would match it.
    model = getattr(keras.applications, app)(weights=None, input_shape=shape, include_top=False, pooling="avg")
    _calibrate_batchnorm(model, shape)
    return model


def _calibrate_batchnorm(model, shape) -> None:
    """With its initial statistics (mean 0, variance 1) BatchNorm passes activations through,
    and a randomly initialised deep CNN then shrinks them to 1e-11: every export would match
    that within any tolerance. One training-mode pass with momentum 0 sets each layer's
    statistics to those of a real batch, as training would, so the outputs are of order one."""
    import keras

    layers = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in layers:
        layer.momentum = 0.0
    x = np.random.default_rng(SEED).random((16, *shape)).astype(np.float32) * 255.0
    model(x, training=True)
    for layer in layers:
        layer.momentum = 0.99


def build(name: str, workdir: Path) -> Case:
    import tensorflow as tf

    model = _model(name)
    shape = APPS[name][1]
    src = workdir / f"{name}.keras"
    model.save(src)

    def raw_export(out: Path) -> None:
        import tf2onnx

        spec = (tf.TensorSpec((None, *shape), tf.float32, name="input"),)
        try:
            tf2onnx.convert.from_keras(model, input_signature=spec, output_path=str(out))
        except Exception as exc:
            # tf2onnx 1.17 predates Keras 3; what its users do instead is trace a tf.function.
            case.notes.append(f"raw: tf2onnx.convert.from_keras failed ({type(exc).__name__}: {str(exc)[:60]}); from_function used")
            fn = tf.function(lambda x: model(x, training=False), input_signature=spec)
            tf2onnx.convert.from_function(fn, input_signature=spec, output_path=str(out))

    def inputs(b: int) -> list[np.ndarray]:
        rng = np.random.default_rng(SEED + b)
        scale = 1.0 if APPS[name][0] is None else 127.5
        return [(rng.random((b, *shape)) * 2 * scale - (0 if scale == 1.0 else 0)).astype(np.float32)]

    def reference(xs: list[np.ndarray]) -> list[np.ndarray]:
        out = model(xs[0], training=False)
        return [np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])]

    case = Case(FAMILY, name, ".keras", [str(src)], raw_export, inputs, reference)
    return case

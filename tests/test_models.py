"""Every model of the zoo builds for MNIST-shaped and ImageNet-style inputs and runs forward
(training steps: here where no real-rank test takes them); the mixed-precision policies keep
float32 outputs. In-process TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from hpctrain.train.models import MODELS, build_model

# (model, input shape, classes, activation): every model on Fashion-MNIST's shape, built and
# run forward here; their training steps on that shape are taken on 2 real ranks
# (conftest.one_launch; ResNet-50's at 224x224x3 through the ImageNet config,
# test_imagefolder_jobs.py), where tracing each step costs the same. Here, in one process,
# the steps nothing else takes: other activations, and ResNet-20 at a non-square colour shape
# with many classes.
STEPPED_ELSEWHERE = [(m, (28, 28, 1), 10, "relu") for m in MODELS]
CASES = STEPPED_ELSEWHERE + [
    ("mlp5", (28, 28, 1), 10, "sigmoid"), ("mlp5", (28, 28, 1), 10, "tanh"),
    ("resnet20", (40, 48, 3), 100, "relu")]


@pytest.mark.parametrize("name, shape, classes, activation", CASES,
                         ids=[f"{c[0]}-{c[3]}-{'x'.join(map(str, c[1]))}" for c in CASES])
def test_builds_and_steps(name, shape, classes, activation):
    """Output shape and probabilities for every case; a training step that changes the
    weights where no real-rank test takes one."""
    tf.keras.utils.set_random_seed(0)
    model = build_model(name, shape, classes, activation)
    assert model.output_shape == (None, classes)
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=tf.keras.optimizers.legacy.SGD(0.01))
    x = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
    y = np.arange(4) % classes
    if (name, shape, classes, activation) not in STEPPED_ELSEWHERE:
        before = [w.copy() for w in model.get_weights()]
        loss = model.train_on_batch(x, y)
        assert np.isfinite(loss)
        assert any(not np.array_equal(a, b)
                   for a, b in zip(before, model.get_weights(), strict=False))
    probs = model(x, training=False).numpy()
    assert probs.shape == (4, classes) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_layer_structure_matches_the_workshops():
    dense = [layer.units for layer in build_model("mlp5", (28, 28, 1), 10).layers
             if isinstance(layer, tf.keras.layers.Dense)]
    assert dense == [200, 100, 60, 30, 10]
    drop = build_model("mlp5_dropout", (28, 28, 1), 10).layers
    assert [d.rate for d in drop if isinstance(d, tf.keras.layers.Dropout)] == [0.25] * 4
    lenet = build_model("lenet5", (28, 28, 1), 10)
    convs = [layer for layer in lenet.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [6, 16, 120]
    assert convs[0].input_shape[1:3] == (32, 32)  # 28x28 padded by 2
    assert build_model("softmax", (28, 28, 1), 10).count_params() == 784 * 10 + 10
    cnn = build_model("cnn", (28, 28, 1), 10).layers  # as taught: 32, 32, 0.25, 256, 0.25
    assert [c.filters for c in cnn if isinstance(c, tf.keras.layers.Conv2D)] == [32, 32]
    assert [d.rate for d in cnn if isinstance(d, tf.keras.layers.Dropout)] == [0.25, 0.25]
    assert [d.units for d in cnn if isinstance(d, tf.keras.layers.Dense)] == [256, 10]
    wide = build_model("cnn64", (28, 28, 1), 10).layers
    assert [c.filters for c in wide if isinstance(c, tf.keras.layers.Conv2D)] == [32, 64]
    assert [d.rate for d in wide if isinstance(d, tf.keras.layers.Dropout)] == [0.25, 0.5]
    bn = build_model("cnn_bn", (28, 28, 1), 10).layers
    assert [c.filters for c in bn if isinstance(c, tf.keras.layers.Conv2D)] == [75, 50, 25]
    assert sum(isinstance(b, tf.keras.layers.BatchNormalization) for b in bn) == 3
    assert isinstance(bn[3], tf.keras.layers.BatchNormalization)  # conv 75 -> BatchNorm
    lstm = build_model("lstm", (28, 28, 1), 10).layers
    cells = [c for c in lstm if isinstance(c, tf.keras.layers.LSTM)]
    assert [(c.units, c.return_sequences) for c in cells] == [(128, True), (64, False)]
    assert cells[0].input_shape == (None, 28, 28)  # 28 time steps of 28 pixels
    nb = build_model("cnn_notebook", (28, 28, 1), 10)
    assert [d.units for d in nb.layers if isinstance(d, tf.keras.layers.Dense)] == [
        1024, 1024, 10]


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_outputs(policy):
    tf.keras.mixed_precision.set_global_policy(policy)
    try:
        model = build_model("cnn", (28, 28, 1), 10)
        assert model.layers[1].compute_dtype != "float32"
        assert model.output.dtype == tf.float32
        assert all(w.dtype == tf.float32 for w in model.trainable_weights)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_model("vgg", (28, 28, 1), 10)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adadelta", "adam", "lars", "lamb"])
def test_every_optimizer_takes_a_step(name):
    from hpctrain.train.optim import make_optimizer

    tf.keras.utils.set_random_seed(0)
    model = build_model("softmax", (28, 28, 1), 10)
    model.compile(loss="sparse_categorical_crossentropy",
                  optimizer=make_optimizer(tf, name, 0.01, momentum=0.9))
    x = np.random.default_rng(0).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    first = model.train_on_batch(x, np.arange(8))
    for _ in range(5):
        last = model.train_on_batch(x, np.arange(8))
    assert last < first  # it learns the batch

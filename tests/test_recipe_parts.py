"""The ImageNet recipe's parts, each against what its paper says: weight decay on convolution
and dense kernels only, zero-initialised last BatchNorm gamma of each residual block,
label smoothing, top-5 accuracy, and random-resized-crop's areas, aspects and resumability."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from hpctrain.data.augment import resized_crop_boxes, resized_crop_flip  # noqa: E402
from hpctrain.experiment import ConfigError, TrainConfig  # noqa: E402
from hpctrain.train.callbacks import top_k_hits  # noqa: E402
from hpctrain.train.losses import training_loss  # noqa: E402
from hpctrain.train.models import add_weight_decay, build_model, decayed_kernels  # noqa: E402


def test_weight_decay_takes_conv_and_dense_kernels_only_and_adds_wd_times_w():
    model = build_model("resnet20", (32, 32, 3), 10)
    kernels = decayed_kernels(model)
    names = sorted(v.name for v in kernels)
    convs = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    assert len(kernels) == len(convs) + 1  # every conv and the dense head
    assert all("kernel" in n for n in names)
    assert not any("gamma" in n or "beta" in n or "bias" in n for n in names)
    trainable = {id(v) for v in model.trainable_variables}
    assert {id(k) for k in kernels} <= trainable
    wd = 1e-4
    add_weight_decay(model, wd)
    with tf.GradientTape() as tape:
        penalty = tf.add_n(model.losses)
    grads = tape.gradient(penalty, model.trainable_variables)
    decayed = {id(k) for k in kernels}
    for var, grad in zip(model.trainable_variables, grads, strict=True):
        if id(var) in decayed:  # d/dw of wd/2 |w|^2 is wd w
            np.testing.assert_allclose(grad.numpy(), wd * var.numpy(), rtol=1e-5, atol=1e-12)
        else:
            assert grad is None  # BatchNorm gamma/beta, biases: untouched
    expected = wd / 2 * sum(float(np.sum(k.numpy() ** 2)) for k in kernels)
    assert float(penalty) == pytest.approx(expected, rel=1e-5)


def test_zero_init_residual_starts_every_block_as_the_identity():
    plain = build_model("resnet20", (32, 32, 3), 10)
    zeroed = build_model("resnet20", (32, 32, 3), 10, zero_init_residual=True)

    def gammas(model):
        return [float(np.abs(layer.gamma.numpy()).sum()) for layer in model.layers
                if isinstance(layer, tf.keras.layers.BatchNormalization)]

    # resnet20: stem BN, then per block BN1, BN2 (+ the projection's BN where shapes change)
    assert gammas(plain).count(0.0) == 0
    assert gammas(zeroed).count(0.0) == 9  # one per block, 3 stages x 3 blocks
    big = build_model("resnet50", (32, 32, 3), 10, zero_init_residual=True)
    backbone = next(layer for layer in big.layers if isinstance(layer, tf.keras.Model))
    last = [layer for layer in backbone.layers if layer.name.endswith("_3_bn")]
    assert len(last) == 16 and all(not layer.gamma.numpy().any() for layer in last)
    others = [layer for layer in backbone.layers
              if isinstance(layer, tf.keras.layers.BatchNormalization) and layer not in last]
    assert others and all(layer.gamma.numpy().all() for layer in others)


def test_label_smoothing_on_a_known_case():
    probs = tf.constant([[0.7, 0.2, 0.1]])
    eps = 0.1
    target = np.array([1 - eps + eps / 3, eps / 3, eps / 3])
    expected = -float(np.sum(target * np.log([0.7, 0.2, 0.1])))
    loss = training_loss(tf, eps)
    assert float(tf.reduce_mean(loss(tf.constant([0]), probs))) == pytest.approx(expected,
                                                                                 rel=1e-5)
    assert training_loss(tf, 0.0) == "sparse_categorical_crossentropy"


def test_top_k_on_a_known_case():
    probs = np.array([[0.1, 0.5, 0.2, 0.15, 0.05, 0.0],
                      [0.3, 0.1, 0.1, 0.1, 0.1, 0.3],
                      [0.0, 0.0, 0.0, 0.0, 0.2, 0.8]])
    labels = np.array([4, 0, 3])
    assert top_k_hits(probs, labels, 1) == 1  # row 1: a tie, argmax takes class 0
    assert top_k_hits(probs, labels, 5) == 2  # row 0 ranks class 4 sixth
    assert top_k_hits(probs, np.array([5, 5, 5]), 5) == 2
    assert top_k_hits(probs, labels, 10) == 3  # k beyond the classes: every row


def test_random_resized_crop_boxes_follow_the_recipe():
    n, h, w = 20000, 256, 256
    key = tf.constant([7, 3], tf.int64)
    top, left, rows, cols = (t.numpy() for t in resized_crop_boxes(tf, n, h, w, key))
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + rows <= h).all() and (left + cols <= w).all()
    area = rows * cols / (h * w)
    aspect = cols / rows
    assert area.min() >= 0.078 and area.max() <= 1.0
    assert np.log(aspect).min() >= math.log(3 / 4) - 0.02
    assert np.log(aspect).max() <= math.log(4 / 3) + 0.02
    # area uniform in [0.08, 1], aspect log-uniform, a draw that does not fit drawn again:
    # the areas are those of fitting draws, here computed independently in numpy
    rng = np.random.default_rng(1)
    a = rng.uniform(0.08, 1.0, 400_000)
    r = np.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3), a.size))
    fits = (a * r <= 1) & (a / r <= 1)
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):
        assert np.quantile(area, q) == pytest.approx(np.quantile(a[fits], q), abs=0.015), q
    # aspect log-uniform: symmetric about 1
    assert abs(np.mean(np.log(aspect))) < 0.01
    assert np.mean((rows == h) & (cols == w)) < 0.02  # the whole-image fallback is rare
    tall = resized_crop_boxes(tf, 500, 400, 100, key, area=(0.99, 1.0))  # none fit: fallback
    t, lf, r, c = (x.numpy() for x in tall)
    assert (c == 100).all() and (r == 133).all() and (t == 133).all() and (lf == 0).all()


def test_random_resized_crop_is_a_function_of_seed_epoch_and_step():
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), np.uint8))
    labels = tf.range(8)
    augment = resized_crop_flip(tf, 32, seed=5)
    a, _ = augment(images, labels, 3, 17)
    b, _ = resized_crop_flip(tf, 32, seed=5)(images, labels, 3, 17)  # a resumed run's
    c, _ = augment(images, labels, 3, 18)
    assert a.shape == (8, 32, 32, 3) and a.dtype == tf.uint8
    assert np.array_equal(a.numpy(), b.numpy()) and not np.array_equal(a.numpy(), c.numpy())
    # one window, no flip: crop_and_resize reproduces a plain resize of that window
    flat = tf.constant(np.tile(np.arange(64, dtype=np.uint8)[None, None, :, None],
                               (1, 64, 1, 3)))
    out, _ = resized_crop_flip(tf, 64, seed=1, area=(1.0, 1.0), aspect=(1.0, 1.0),
                               flip=False)(flat, tf.range(1), 0, 0)
    assert np.array_equal(out.numpy(), flat.numpy())  # the whole image at its own size


def test_recipe_options_are_checked():
    base = {"experiment": "x", "data": "d.h5", "model": "resnet20"}
    assert TrainConfig(**base, weight_decay=1e-4, label_smoothing=0.1,
                       zero_init_residual=True).weight_decay == 1e-4
    for bad, message in [({"weight_decay": -1}, "weight_decay must be >= 0"),
                         ({"label_smoothing": 1.0}, "label_smoothing in [0, 1)"),
                         ({"model": "cnn", "zero_init_residual": True}, "no residual blocks"),
                         ({"random_resized_crop": True}, "needs augment: true and a crop"),
                         ({"crop_area": [0.5, 0.2]}, "crop_area"),
                         ({"crop_aspect": [1.2, 1.5]}, "crop_aspect")]:
        with pytest.raises((ConfigError, ValueError), match=re.escape(message)):
            TrainConfig(**{**base, **bad})


def test_lars_step_on_a_known_case():
    from hpctrain.train.layerwise import LARS

    w = tf.Variable([[3.0, 4.0]])  # |w| = 5
    b = tf.Variable([1.0])  # a bias: plain momentum SGD, no decay
    g, gb = tf.constant([[0.6, 0.8]]), tf.constant([0.5])  # |g| = 1
    opt = LARS(learning_rate=0.1, momentum=0.9, weight_decay=0.01, eta=0.001)
    opt.apply_gradients([(g, w), (gb, b)])
    trust = 0.001 * 5 / (1 + 0.01 * 5)
    step = 0.1 * trust * (g.numpy() + 0.01 * np.array([[3.0, 4.0]]))
    np.testing.assert_allclose(w.numpy(), [[3.0, 4.0]] - step, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), [1.0 - 0.1 * 0.5], rtol=1e-6)
    opt.apply_gradients([(g, w), (gb, b)])  # momentum carries the first step
    trust2 = 0.001 * np.linalg.norm(w.numpy() + 0) / (1 + 0.01 * np.linalg.norm(w.numpy()))
    assert b.numpy()[0] == pytest.approx(1.0 - 0.05 - (0.9 * 0.05 + 0.05), rel=1e-6)
    assert trust2 > 0


def test_lamb_step_on_a_known_case():
    from hpctrain.train.layerwise import LAMB

    w0 = np.array([[3.0, 4.0]])
    w, b = tf.Variable(w0), tf.Variable([1.0])
    g = np.array([[0.6, -0.8]])
    opt = LAMB(learning_rate=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6, weight_decay=0.1)
    opt.apply_gradients([(tf.constant(g), w), (tf.constant([2.0]), b)])
    m_hat, v_hat = g, g ** 2  # the first step: bias correction undoes (1 - beta)
    u = m_hat / (np.sqrt(v_hat) + 1e-6) + 0.1 * w0
    trust = np.linalg.norm(w0) / np.linalg.norm(u)
    np.testing.assert_allclose(w.numpy(), w0 - 0.01 * trust * u, rtol=1e-5)
    # the bias: Adam's step, no trust ratio, no decay
    assert b.numpy()[0] == pytest.approx(1.0 - 0.01 * 2.0 / (2.0 + 1e-6), rel=1e-5)
    # a zero layer (a fresh zero-initialised gamma would be excluded anyway): trust 1
    z = tf.Variable(np.zeros((2, 2)))
    LAMB(learning_rate=0.01).apply_gradients([(tf.constant(np.ones((2, 2))), z)])
    np.testing.assert_allclose(z.numpy(), -0.01 * np.ones((2, 2)) / (1 + 1e-6), rtol=1e-5)


@pytest.mark.mpi
@pytest.mark.parametrize("name", ["resnet20", "cnn_bn", "cnn64"])
def test_recipe_with_lars_and_lamb_on_two_ranks(one_launch, name):
    """The recipe's parts (with SGD and momentum, as published) and the layer-wise optimizers
    through Horovod on 2 ranks (the zoo's runs in the shared launch, conftest.RECIPE): they
    train, the ranks end identical."""
    r = one_launch.report(name)
    assert r["status"] == "completed" and r["ranks"] == 2
    assert r["ranks_in_sync"]["ok"] is True
    assert r["training"]["optimizer"] == {"resnet20": "sgd", "cnn_bn": "lars",
                                          "cnn64": "lamb"}[name]
    if name == "resnet20":
        assert r["recipe"] == {"weight_decay": 0.0001, "label_smoothing": 0.1,
                               "zero_init_residual": True, "random_resized_crop": True}
    assert r["test_top5_accuracy"] is None  # ten classes: top-1 only
    assert r["test_loss"] is not None and np.isfinite(r["test_loss"])

"""The model zoo, by name. Every model takes uint8 images of any (H, W, C) and a class count;
scaling to [0, 1] happens inside the model, so the input pipeline stays a plain HDF5 slice.

    softmax        flatten + dense softmax                       (workshop MNIST 91.7 %)
    mlp5           dense 200-100-60-30 + softmax, `activation`   (97.35 / 98.06 / 98.07 %)
    mlp5_dropout   the same with dropout 0.25 after each layer   (98.26 %)
    cnn            the workshop CNN: conv 32, conv 32 (3x3 relu), max-pool 2, dropout 0.25,
                   dense 256 relu, dropout 0.25                  (99.23 %, Adadelta 1.0)
    cnn64          Keras' mnist_cnn variant: second conv 64 filters, dropout 0.5 after the
                   dense layer (hpctrain's `cnn` until the workshop one replaced it; the
                   scaling studies in results/studies/ ran it)
    cnn_bn         the workshops' "sample CNN": conv 75 relu, BatchNorm, max-pool 2,
                   conv 50, dropout 0.2, BatchNorm, pool, conv 25, BatchNorm, pool,
                   dense 512 relu, dropout 0.3 (BatchNorm statistics averaged over ranks)
    lstm           LSTM(128, return_sequences) -> LSTM(64) -> softmax, an image read as a
                   sequence of its rows (28 steps of 28 pixels for MNIST)
    cnn_notebook   conv32 x2, pool, conv64 x2, pool, 2 x dense 1024 sigmoid + dropout 0.2
                                                                 (99.10 % after 2 epochs)
    lenet5         LeNet-5: tanh, average pooling, 32x32 input (28x28 is padded by 2)
    resnet20       CIFAR-style residual net (He et al. 2016, 3 stages of 3 basic blocks)
    resnet50       keras.applications.ResNet50(weights=None) with a fresh softmax head

Under mixed precision the last layer computes in float32 (Keras' documented rule), so the
loss and the ranks-in-sync checksum see float32 probabilities.
"""

from __future__ import annotations

import re

from hpctrain.experiment import ACTIVATIONS, MODELS

__all__ = ["ACTIVATIONS", "MODELS", "build_model"]


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int,
                activation: str = "relu", zero_init_residual: bool = False):
    """The model `name` for images of `input_shape`; with `zero_init_residual` the last
    BatchNorm of each residual block starts with gamma 0 (resnet20, resnet50)."""
    import tensorflow as tf

    keras = tf.keras
    layers = keras.layers
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    if name == "softmax":
        x = layers.Flatten()(x)
    elif name in ("mlp5", "mlp5_dropout"):
        x = layers.Flatten()(x)
        for width in (200, 100, 60, 30):
            x = layers.Dense(width, activation=activation)(x)
            if name == "mlp5_dropout":
                x = layers.Dropout(0.25)(x)
    elif name in ("cnn", "cnn64"):
        wide = name == "cnn64"
        x = layers.Conv2D(32, 3, activation="relu")(x)
        x = layers.Conv2D(64 if wide else 32, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dropout(0.5 if wide else 0.25)(x)
    elif name == "cnn_bn":
        # the deck shows conv 75 -> BatchNorm -> pool -> dropout 0.2 ...; the rest is the
        # NVIDIA DLI course model the deck teaches (same layers, 'same' padding)
        for filters, dropout in ((75, 0.0), (50, 0.2), (25, 0.0)):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            if dropout:
                x = layers.Dropout(dropout)(x)
            x = layers.BatchNormalization()(x)
            x = layers.MaxPooling2D(2, strides=2, padding="same")(x)
        x = layers.Flatten()(x)
        x = layers.Dense(512, activation="relu")(x)
        x = layers.Dropout(0.3)(x)
    elif name == "lstm":
        h, w, c = input_shape
        x = layers.Reshape((h, w * c))(x)  # one time step per image row
        x = layers.LSTM(128, return_sequences=True)(x)
        x = layers.LSTM(64)(x)
    elif name == "cnn_notebook":
        for filters in (32, 64):
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
            x = layers.MaxPooling2D(2)(x)
        x = layers.Flatten()(x)
        for _ in range(2):
            x = layers.Dense(1024, activation="sigmoid")(x)
            x = layers.Dropout(0.2)(x)
    elif name == "lenet5":
        x = _pad_to(layers, x, input_shape, 32)
        x = layers.Conv2D(6, 5, activation="tanh")(x)
        x = layers.AveragePooling2D(2)(x)
        x = layers.Conv2D(16, 5, activation="tanh")(x)
        x = layers.AveragePooling2D(2)(x)
        x = layers.Conv2D(120, 5, activation="tanh")(x)
        x = layers.Flatten()(x)
        x = layers.Dense(84, activation="tanh")(x)
    elif name == "resnet20":
        x = _resnet20(layers, x, zero_init_residual)
    elif name == "resnet50":
        x = _pad_to(layers, x, input_shape, 32)  # Keras' ResNet50 wants at least 32x32
        backbone = keras.applications.ResNet50(
            include_top=False, weights=None, pooling="avg", input_shape=tuple(x.shape[1:]))
        if zero_init_residual:  # Keras names each bottleneck's last BatchNorm convN_blockM_3_bn
            for layer in backbone.layers:
                if re.fullmatch(r"conv\d_block\d+_3_bn", layer.name):
                    layer.gamma.assign(tf.zeros_like(layer.gamma))
        x = backbone(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probs")(outputs)
    return keras.Model(inputs, outputs, name=name)


def _pad_to(layers, x, input_shape, size: int):
    """Zero-pad height and width up to `size` (LeNet-5's 28 -> 32), centred."""
    h, w = input_shape[0], input_shape[1]
    if h >= size and w >= size:
        return x
    ph, pw = max(0, size - h), max(0, size - w)
    return layers.ZeroPadding2D(((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))(x)


def _resnet20(layers, x, zero_init_residual: bool = False):
    """ResNet-20 for small images: 16/32/64 filters, 3 basic blocks per stage, identity
    shortcuts with a 1x1 projection where the shape changes."""
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    for stage, filters in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
            y = layers.BatchNormalization()(y)
            y = layers.Activation("relu")(y)
            y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
            y = layers.BatchNormalization(  # the block's last: gamma 0 starts it as identity
                gamma_initializer="zeros" if zero_init_residual else "ones")(y)
            if stride != 1 or shortcut.shape[-1] != filters:
                shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
                shortcut = layers.BatchNormalization()(shortcut)
            x = layers.Activation("relu")(layers.Add()([y, shortcut]))
    return layers.GlobalAveragePooling2D()(x)


def decayed_kernels(model) -> list:
    """The convolution and dense kernels of `model` (nested models included): what weight
    decay applies to; never BatchNorm's gamma and beta, never a bias."""
    import tensorflow as tf

    kinds = (tf.keras.layers.Conv1D, tf.keras.layers.Conv2D, tf.keras.layers.Conv3D,
             tf.keras.layers.Dense)
    seen: dict[int, object] = {}
    for layer in model.submodules:
        if isinstance(layer, kinds):
            seen.setdefault(id(layer.kernel), layer.kernel)
    return list(seen.values())


def add_weight_decay(model, weight_decay: float) -> list:
    """L2 weight decay as Goyal et al. define it: the loss gains weight_decay / 2 x the
    squared norm of every decayed kernel, so each step's gradient gains weight_decay x w
    (before Horovod averages it, on weights every rank holds alike). The kernels decayed."""
    import tensorflow as tf

    kernels = decayed_kernels(model)
    if weight_decay and kernels:
        model.add_loss(lambda: weight_decay * tf.add_n(
            [tf.nn.l2_loss(tf.cast(k, tf.float32)) for k in kernels]))
    return kernels

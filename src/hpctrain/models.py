"""Models by name. Inputs are uint8 images; scaling to [0, 1] happens inside the model so the
input pipeline stays a plain HDF5 slice."""

from __future__ import annotations


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int):
    import tensorflow as tf

    keras = tf.keras
    layers = keras.layers
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    if name == "cnn":
        # The workshop CNN (Keras mnist_cnn): 99.23 % on MNIST.
        x = layers.Conv2D(32, 3, activation="relu")(x)
        x = layers.Conv2D(64, 3, activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.Dropout(0.25)(x)
        x = layers.Flatten()(x)
        x = layers.Dense(256, activation="relu")(x)
        x = layers.Dropout(0.5)(x)
    else:
        raise ValueError(f"unknown model {name!r}")
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name=name)

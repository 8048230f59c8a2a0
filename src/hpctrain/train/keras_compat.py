"""Which Keras is behind `tf.keras`. Horovod 0.28.1 needs Keras 2: with Keras 3 (TF >= 2.16
without TF_USE_LEGACY_KERAS=1) `hvd.DistributedOptimizer` silently skips gradient averaging."""

from __future__ import annotations


def keras_version(tf) -> str:
    module = tf.keras.layers.Dense.__module__
    if module.startswith("tf_keras"):
        import tf_keras

        return tf_keras.__version__
    import keras  # Keras 3 (`keras.src...`) or the Keras 2 bundled with TF <= 2.15

    return keras.__version__


def require_keras2(tf) -> str:
    version = keras_version(tf)
    if not version.startswith("2."):
        raise SystemExit(f"tf.keras is Keras {version}: Horovod would silently skip gradient "
                         "averaging; set TF_USE_LEGACY_KERAS=1 before TensorFlow is imported "
                         "and install tf-keras")
    return version

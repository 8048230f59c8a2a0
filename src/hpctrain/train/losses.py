"""The training loss: sparse categorical cross-entropy on the model's probabilities, with
optional label smoothing (Szegedy et al. 2016: the target is (1 - e) x one-hot + e / classes).
The test loss in the report stays the plain cross-entropy (callbacks.ShardedEvaluation)."""

from __future__ import annotations


def training_loss(tf, smoothing: float = 0.0):
    """A Keras loss for integer labels."""
    if not smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_sparse_crossentropy(y_true, y_pred):
        classes = tf.shape(y_pred)[-1]
        labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
        onehot = tf.one_hot(labels, classes, dtype=y_pred.dtype)
        return tf.keras.losses.categorical_crossentropy(onehot, y_pred,
                                                        label_smoothing=smoothing)

    return smoothed_sparse_crossentropy

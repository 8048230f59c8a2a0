"""Layer-wise adaptive optimizers for large global batches, as Keras 2 legacy optimizers (the
kind Horovod's DistributedOptimizer wraps; it averages the gradients before they get here):

    LARS (You, Gitman, Ginsburg 2017):  trust = eta * |w| / (|g| + wd * |w|)
        v = momentum * v + lr * trust * (g + wd * w);   w = w - v
    LAMB (You et al. 2019):  Adam's bias-corrected moments m, v, then
        u = m / (sqrt(v) + eps) + wd * w;   trust = |w| / |u|;   w = w - lr * trust * u

A trust ratio is 1 where either norm is 0. Variables of rank 0 or 1 (BatchNorm's gamma and
beta, biases) are excluded, as both papers' reference code does: no trust ratio, no weight
decay (LARS: plain momentum SGD; LAMB: plain Adam). The learning rate is the schedule's
(train/step_schedule.py sets it every step), so warm-up and step / cosine decay apply as for
any optimizer.
"""

from __future__ import annotations

import tensorflow as tf


def excluded(var) -> bool:
    """BatchNorm parameters and biases: no trust ratio and no weight decay."""
    return len(var.shape) <= 1


def _trust(numerator, denominator):
    """numerator / denominator, 1 where either is 0 (a fresh or a zero layer)."""
    ok = tf.logical_and(numerator > 0, denominator > 0)
    return tf.where(ok, numerator / tf.where(ok, denominator, 1.0), 1.0)


class LARS(tf.keras.optimizers.legacy.Optimizer):
    def __init__(self, learning_rate=0.1, momentum=0.9, weight_decay=0.0, eta=0.001,
                 name="LARS", **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("momentum", momentum)
        self.weight_decay, self.eta = weight_decay, eta

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "momentum")

    def _resource_apply_dense(self, grad, var, apply_state=None):
        lr = self._get_hyper("learning_rate", var.dtype.base_dtype)
        momentum = self._get_hyper("momentum", var.dtype.base_dtype)
        if excluded(var):
            step = lr * grad
        else:
            w_norm, g_norm = tf.norm(var), tf.norm(grad)
            trust = _trust(self.eta * w_norm, g_norm + self.weight_decay * w_norm)
            step = lr * trust * (grad + self.weight_decay * var)
        v = self.get_slot(var, "momentum")
        v_new = v.assign(momentum * v + step, use_locking=self._use_locking)
        return var.assign_sub(v_new, use_locking=self._use_locking).op

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        raise NotImplementedError("LARS: sparse gradients (embeddings) are not supported")

    def get_config(self):
        return {**super().get_config(), "momentum": self._serialize_hyperparameter("momentum"),
                "learning_rate": self._serialize_hyperparameter("learning_rate"),
                "weight_decay": self.weight_decay, "eta": self.eta}


class LAMB(tf.keras.optimizers.legacy.Optimizer):
    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 weight_decay=0.0, name="LAMB", **kwargs):
        super().__init__(name, **kwargs)
        self._set_hyper("learning_rate", kwargs.get("lr", learning_rate))
        self._set_hyper("beta_1", beta_1)
        self._set_hyper("beta_2", beta_2)
        self.epsilon, self.weight_decay = epsilon, weight_decay

    def _create_slots(self, var_list):
        for var in var_list:
            self.add_slot(var, "m")
        for var in var_list:
            self.add_slot(var, "v")

    def _resource_apply_dense(self, grad, var, apply_state=None):
        dtype = var.dtype.base_dtype
        lr = self._get_hyper("learning_rate", dtype)
        beta_1, beta_2 = self._get_hyper("beta_1", dtype), self._get_hyper("beta_2", dtype)
        t = tf.cast(self.iterations + 1, dtype)
        m, v = self.get_slot(var, "m"), self.get_slot(var, "v")
        m_new = m.assign(beta_1 * m + (1 - beta_1) * grad, use_locking=self._use_locking)
        v_new = v.assign(beta_2 * v + (1 - beta_2) * tf.square(grad),
                         use_locking=self._use_locking)
        update = (m_new / (1 - tf.pow(beta_1, t))) / (
            tf.sqrt(v_new / (1 - tf.pow(beta_2, t))) + self.epsilon)
        if not excluded(var):
            update += self.weight_decay * var
            update *= _trust(tf.norm(var), tf.norm(update))
        return var.assign_sub(lr * update, use_locking=self._use_locking).op

    def _resource_apply_sparse(self, grad, var, indices, apply_state=None):
        raise NotImplementedError("LAMB: sparse gradients (embeddings) are not supported")

    def get_config(self):
        return {**super().get_config(),
                "learning_rate": self._serialize_hyperparameter("learning_rate"),
                "beta_1": self._serialize_hyperparameter("beta_1"),
                "beta_2": self._serialize_hyperparameter("beta_2"),
                "epsilon": self.epsilon, "weight_decay": self.weight_decay}

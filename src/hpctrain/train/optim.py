"""Optimizers and the learning-rate curve: scaling by ranks, gradual warm-up, schedule.

The curve is one pure function of the (fractional) epoch, so it is unit-tested, identical on
every rank, and a resumed run picks it up exactly where it stopped. With k = the scale
factor, `size` for linear scaling (Goyal et al. 2017) or sqrt(size) (the square-root rule
LAMB's authors use, You et al. 2019), size = ranks x accumulated batches:

    epoch < warmup:   lr * (1 + (k - 1) * epoch / warmup)         # Goyal et al. 2017, sec. 2.2
    afterwards:       lr * k * schedule(epoch)                    # constant, step or cosine

Why not Horovod's LearningRateWarmupCallback: it compares the integer epoch with the end of
the warm-up, so a fractional warm-up (0.5 epochs) overshoots the scaled rate (multiplier > 1),
and it has no cosine schedule. train/step_schedule.py sets the rate before every step, inside
the training step, and keeps Horovod's momentum correction (Goyal et al. eq. 10) for SGD,
whose Keras update puts the learning rate inside the velocity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def scale_factor(size: int, scaling: str = "linear") -> float:
    """The rate's factor at `size` times the one-rank batch, after warm-up."""
    if scaling == "linear":
        return float(size)
    if scaling == "sqrt":
        return math.sqrt(size)
    raise ValueError(f"unknown learning-rate scaling {scaling!r}")


def lr_multiplier(epoch: float, *, size: int, warmup_epochs: float, schedule: str,
                  epochs: int, decay_epochs: Sequence[float] = (), decay: float = 0.1,
                  scaling: str = "linear") -> float:
    """Factor on the one-rank learning rate at a fractional epoch (0 = first step)."""
    k = scale_factor(size, scaling)
    if warmup_epochs > 0 and epoch < warmup_epochs:
        return 1.0 + (k - 1) * epoch / warmup_epochs
    if schedule == "constant":
        factor = 1.0
    elif schedule == "step":
        factor = decay ** sum(1 for e in decay_epochs if epoch >= e)
    elif schedule == "cosine":
        span = max(epochs - warmup_epochs, 1e-9)
        progress = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {schedule!r}")
    return k * factor


LAYERWISE = ("lars", "lamb")  # they apply weight decay themselves (train/layerwise.py)


def make_optimizer(tf, name: str, lr: float, momentum: float = 0.9,
                   weight_decay: float = 0.0, lars_eta: float = 0.001):
    """Legacy (Keras 2) optimizers: Horovod 0.28.1 wraps them, and its momentum correction
    crashes with the new SGD (Keras 2.11+'s optimizers). Adadelta takes the workshop's
    Keras 2 default rate 1.0 from the config, not from here. `weight_decay` is LARS' and
    LAMB's own (the others get it as an L2 term in the loss: models.add_weight_decay)."""
    legacy = tf.keras.optimizers.legacy
    if name in LAYERWISE:
        from hpctrain.train.layerwise import LAMB, LARS

        return LARS(lr, momentum, weight_decay, lars_eta) if name == "lars" else \
            LAMB(lr, weight_decay=weight_decay)
    return {
        "sgd": lambda: legacy.SGD(learning_rate=lr, momentum=momentum),
        "rmsprop": lambda: legacy.RMSprop(learning_rate=lr, momentum=momentum),
        "adadelta": lambda: legacy.Adadelta(learning_rate=lr, rho=0.95),
        "adam": lambda: legacy.Adam(learning_rate=lr),
    }[name]()


def learning_rate(cfg, size: int):
    """The run's rate at a fractional epoch: the config's rate times `lr_multiplier`."""
    def rate(epoch: float) -> float:
        return cfg.learning_rate * lr_multiplier(
            epoch, size=size, warmup_epochs=cfg.warmup_epochs, schedule=cfg.lr_schedule,
            epochs=cfg.epochs, decay_epochs=cfg.lr_decay_epochs, decay=cfg.lr_decay,
            scaling=cfg.lr_scaling)
    return rate

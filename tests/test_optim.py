"""The learning-rate curve (pure): linear scaling, gradual warm-up, constant/step/cosine."""

from __future__ import annotations

import math

import pytest

from hpctrain.train.optim import lr_multiplier


def curve(epoch, **kw):
    args = {"size": 4, "warmup_epochs": 2.0, "schedule": "constant", "epochs": 10}
    return lr_multiplier(epoch, **{**args, **kw})


def test_warmup_ramps_from_one_rank_rate_to_scaled_rate():
    assert curve(0.0) == pytest.approx(1.0)  # the first step uses the one-rank rate
    assert curve(1.0) == pytest.approx(2.5)  # halfway: 1 + 3 * 0.5
    assert curve(1.999) == pytest.approx(4.0, abs=0.01)
    assert curve(2.0) == pytest.approx(4.0) and curve(9.5) == pytest.approx(4.0)
    ramp = [curve(e / 10) for e in range(0, 21)]
    assert ramp == sorted(ramp)


def test_fractional_warmup_never_overshoots():
    # Horovod's callback compares the integer epoch with the warm-up end and overshoots here.
    values = [curve(e / 100, warmup_epochs=0.5) for e in range(0, 200)]
    assert max(values) == pytest.approx(4.0)
    assert curve(0.25, warmup_epochs=0.5) == pytest.approx(2.5)


def test_one_rank_and_no_warmup():
    assert curve(0.0, size=1) == 1.0 and curve(5.0, size=1) == 1.0
    assert curve(0.0, warmup_epochs=0.0) == 4.0


def test_step_schedule():
    kw = {"schedule": "step", "decay_epochs": [4.0, 7.0], "decay": 0.1}
    assert curve(3.99, **kw) == pytest.approx(4.0)
    assert curve(4.0, **kw) == pytest.approx(0.4)
    assert curve(6.5, **kw) == pytest.approx(0.4)
    assert curve(7.0, **kw) == pytest.approx(0.04)


def test_cosine_schedule():
    kw = {"schedule": "cosine"}
    assert curve(2.0, **kw) == pytest.approx(4.0)  # starts at the scaled rate after warm-up
    assert curve(6.0, **kw) == pytest.approx(2.0)  # halfway through the remaining 8 epochs
    assert curve(10.0, **kw) == pytest.approx(0.0, abs=1e-12)
    tail = [curve(2 + e / 10, **kw) for e in range(0, 81)]
    assert tail == sorted(tail, reverse=True)


def test_unknown_schedule():
    with pytest.raises(ValueError, match="unknown schedule"):
        curve(3.0, schedule="linear")


def test_square_root_scaling_ramps_to_the_root_of_the_size():
    """sqrt: 16 x the one-rank batch gets 4 x its rate, reached by the same linear warm-up."""
    assert curve(0.0, size=16, scaling="sqrt") == pytest.approx(1.0)
    assert curve(1.0, size=16, scaling="sqrt") == pytest.approx(2.5)  # 1 + 3 * 0.5
    assert curve(5.0, size=16, scaling="sqrt") == pytest.approx(4.0)
    assert curve(6.0, size=16, scaling="sqrt", schedule="cosine") == pytest.approx(
        4.0 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(ValueError, match="scaling 'cube'"):
        curve(1.0, scaling="cube")

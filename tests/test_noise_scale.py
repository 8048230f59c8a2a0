"""The gradient noise scale: the estimator on gradients of known mean and variance, the
checkpoints a run keeps for it, and `hpctrain noise-scale` on a trained 2-rank run."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import hpctrain
from hpctrain.report import noise_scale
from hpctrain.train import checkpoint


def _batches(rng, mean: np.ndarray, sigma: float, b: int, n: int) -> list[np.ndarray]:
    """n gradients of b-sample batches: the mean plus per-example noise of variance sigma^2
    in every coordinate, averaged over b (so tr(Sigma) = dims x sigma^2)."""
    return [mean + rng.normal(0.0, sigma / np.sqrt(b), mean.size) for _ in range(n)]


def test_the_estimator_finds_a_known_noise_scale():
    rng = np.random.default_rng(0)
    dims, sigma, b = 2000, 0.3, 32
    mean = rng.normal(0.0, 1.0, dims)
    mean /= np.linalg.norm(mean)  # |G|^2 = 1, tr(Sigma) = 2000 x 0.09 = 180: B_simple 180
    terms = []
    for _ in range(8):
        grads = _batches(rng, mean, sigma, b, 8)
        big = np.mean(grads, axis=0)
        terms.append(noise_scale.group_terms([float(g @ g) for g in grads], float(big @ big),
                                             b))
    got = noise_scale.combine(terms)
    assert got["gradient_variance_trace"] == pytest.approx(180.0, rel=0.05)
    assert got["gradient_norm_squared"] == pytest.approx(1.0, rel=0.1)
    assert got["noise_scale"] == pytest.approx(180.0, rel=0.1)
    assert got["noise_scale_low"] < 180.0 < got["noise_scale_high"]
    # where the gradient drowns in the noise, no estimate rather than a negative one
    flat = [noise_scale.group_terms([1.0, 1.0], 0.4, 32), noise_scale.group_terms(
        [1.0, 1.2], 0.5, 32), noise_scale.group_terms([0.9, 1.0], 0.47, 32)]
    assert noise_scale.combine(flat)["noise_scale"] is None
    with pytest.raises(ValueError, match="two batches"):
        noise_scale.group_terms([1.0], 0.5, 32)


def test_checkpoint_keep_zero_keeps_every_epoch(tmp_path):
    """A config's checkpoint_keep: the newest N kept, 0 every one (for noise-scale --all)."""
    class Written:
        def __init__(self, **objects):
            pass

        def write(self, path: str) -> None:
            Path(path + ".index").write_bytes(b"i")

    tf = SimpleNamespace(train=SimpleNamespace(Checkpoint=Written))
    for keep, left in ((2, ["epoch-0003", "epoch-0004"]), (0, [f"epoch-000{e}" for e in
                                                              range(1, 5)])):
        where = tmp_path / f"keep{keep}"
        for epoch in range(1, 5):
            checkpoint.save(tf, where, epoch, None, None, {}, keep=keep)
        assert [c[2].name for c in checkpoint.complete(where)] == left


@pytest.mark.mpi
def test_noise_scale_of_a_trained_run(cnn_two_ranks, tmp_path):
    """`hpctrain noise-scale` on the shared 2-rank CNN run: one line per checkpoint, the JSON
    beside it; a bad request is one line before TensorFlow loads."""
    _, run = cnn_two_ranks
    res = hpctrain("noise-scale", "--run", str(run), "--batches", "12", "--groups", "3",
                   "--all")
    assert res.returncode == 0, res.stderr
    result = json.loads((run / "noise_scale.json").read_text())
    kept = [c[2].name for c in checkpoint.complete(run / "checkpoints")]
    assert [p["checkpoint"] for p in result["points"]] == kept
    assert result["big_batch"] == 4 * result["batch"]
    for p in result["points"]:
        assert p["gradient_variance_trace"] > 0 and p["epoch"] >= 1
        assert f"  {p['checkpoint']}: " in res.stdout
    bad = hpctrain("noise-scale", "--run", str(run), "--batches", "5", "--groups", "3")
    assert bad.returncode != 0 and "at least 3 groups" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    missing = hpctrain("noise-scale", "--run", str(tmp_path))
    assert missing.returncode != 0 and "not a run directory" in missing.stderr

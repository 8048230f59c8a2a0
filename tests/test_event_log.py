"""TensorBoard event files (train/event_log.py), read back with TensorBoard's own reader:
every epoch once with metrics.jsonl's values, a resumed segment's restart marker dropping
what an earlier segment wrote past its checkpoint, time to accuracy and pictures."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from conftest import check_tensorboard, tensorboard_scalars
from hpctrain.train.event_log import EventLog, epoch_scalars


def _row(epoch: int, acc: float) -> dict:
    return {"epoch": epoch, "loss": 2.0 - acc, "accuracy": acc, "val_loss": 2.1 - acc,
            "val_accuracy": acc - 0.01, "lr": 0.01 * epoch, "images_per_s": 1000.0 + epoch,
            "epoch_s": 3.0, "elapsed_s": 3.0 * epoch, "end_unix_s": 1.8e9 + epoch,
            "rank_steps": [{"rank": r, "input_s": 0.001, "compute_s": 0.004 + r / 1000,
                            "allreduce_s": 0.002, "other_s": 0.0005} for r in range(2)]}


def test_epoch_scalars_from_a_metrics_row():
    values = epoch_scalars(_row(2, 0.8))
    assert values["test/accuracy"] == pytest.approx(0.79)
    assert values["learning_rate"] == pytest.approx(0.02)
    assert values["step_time_ms/compute"] == pytest.approx(4.5)  # the ranks' mean
    assert set(values) == {"train/loss", "train/accuracy", "test/loss", "test/accuracy",
                           "learning_rate", "images_per_s", "epoch_s", "step_time_ms/input",
                           "step_time_ms/compute", "step_time_ms/allreduce",
                           "step_time_ms/other"}
    assert "test/accuracy" not in epoch_scalars({"epoch": 1, "loss": 1.0})  # no test set


def test_a_resumed_segment_shows_each_epoch_once(tmp_path):
    """Segment 1 wrote epochs 1-3 but its last checkpoint was epoch 2 (it died, or epoch 3's
    checkpoint was found damaged); segment 2 resumes from epoch 2 and writes 3-4 anew."""
    first = EventLog(tmp_path, first_epoch=1)
    first.epochs([_row(1, 0.5), _row(2, 0.6), _row(3, 0.65)])
    first.close()
    rows = [_row(1, 0.5), _row(2, 0.6), _row(3, 0.7), _row(4, 0.8)]
    second = EventLog(tmp_path, first_epoch=3)
    second.epochs(rows)
    second.epochs(rows)  # called again at the next epoch's end: nothing written twice
    png = io.BytesIO()
    Image.new("RGB", (40, 30), "white").save(png, format="PNG")
    (tmp_path / "curves.png").write_bytes(png.getvalue())
    second.finish(rows, {"0.60": 6.5, "0.90": None}, {"curves": tmp_path / "curves.png"})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    points = check_tensorboard(tmp_path)
    assert points["train/accuracy"][2] == (3, pytest.approx(0.7))  # segment 2's epoch 3
    assert tensorboard_scalars(tmp_path)["time_to_accuracy_s/0.60"] == [(3, 6.5)]
    assert "time_to_accuracy_s/0.90" not in points  # not reached

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    acc.Reload()
    (image,) = acc.Images("pictures/curves")
    assert (image.step, image.width, image.height) == (4, 40, 30)
    assert image.encoded_image_string == png.getvalue()

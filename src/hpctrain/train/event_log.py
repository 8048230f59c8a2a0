"""TensorBoard event files of a run: rank 0 writes `<run dir>/tensorboard/`, so
`tensorboard --logdir <run dir>` (or a study's directory, or results/) shows what every
Keras tutorial shows, with hpctrain's own figures beside it.

Per epoch (step = the epoch number, 1-based, the same numbering as metrics.jsonl):
train/loss, train/accuracy, test/loss, test/accuracy, learning_rate, images_per_s,
epoch_s, and the step-time breakdown step_time_ms/{input,compute,allreduce,other} (the
ranks' mean of their medians). At the end of the run: time_to_accuracy_s/<threshold>
(at the epoch that first reached it) and the report's pictures as images.

A resumed segment writes a new event file that opens with TensorBoard's restart marker
(SessionLog START at the first epoch it will write): TensorBoard drops whatever an earlier
segment wrote from that step on, so a requeued run shows each epoch once, never rewound.
Points are written after the epoch's checkpoint, and only for epochs this segment ran.

Written with the tensorboard package's own event-file writer and protos (no TensorFlow
summary ops): every value is the one metrics.jsonl holds, as float32.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

DIRNAME = "tensorboard"
# metrics.jsonl key -> tag
EPOCH_SCALARS = {"loss": "train/loss", "accuracy": "train/accuracy", "val_loss": "test/loss",
                 "val_accuracy": "test/accuracy", "val_top5_accuracy": "test/top5_accuracy",
                 "lr": "learning_rate",
                 "images_per_s": "images_per_s", "epoch_s": "epoch_s"}
STEP_PARTS = ("input", "compute", "allreduce", "other")


def epoch_scalars(row: dict) -> dict[str, float]:
    """The tags and values one metrics row becomes (pure: the tests use it too)."""
    values = {tag: float(row[key]) for key, tag in EPOCH_SCALARS.items()
              if isinstance(row.get(key), int | float)}
    ranks = [r.get("mean") or r for r in row.get("rank_steps") or []]
    for part in STEP_PARTS:
        seconds = [r[f"{part}_s"] for r in ranks if isinstance(r.get(f"{part}_s"), int | float)]
        if seconds and len(seconds) == len(ranks):
            values[f"step_time_ms/{part}"] = 1000 * sum(seconds) / len(seconds)
    return values


class EventLog:
    """Rank 0's writer for one segment of a run."""

    def __init__(self, run_dir: Path, first_epoch: int):
        self.directory = Path(run_dir) / DIRNAME
        self.directory.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(self.directory))
        self.written = first_epoch - 1  # the last epoch with points
        if first_epoch > 1:  # TensorBoard: drop an earlier segment's points from here on
            self.writer.add_event(event_pb2.Event(
                step=first_epoch, wall_time=time.time(), session_log=event_pb2.SessionLog(
                    status=event_pb2.SessionLog.START)))

    def epochs(self, rows: list[dict]) -> None:
        """Points for the rows of epochs not yet written (after the epoch's checkpoint)."""
        for row in rows:
            if row["epoch"] > self.written:
                self._scalars(row["epoch"], epoch_scalars(row), row.get("end_unix_s"))
                self.written = row["epoch"]
        self.writer.flush()

    def finish(self, rows: list[dict], time_to_accuracy: dict[str, float | None],
               pictures: dict[str, Path]) -> None:
        """Time to each accuracy threshold at the epoch that first reached it; the
        pictures at the last epoch."""
        self.epochs(rows)
        for threshold, seconds in time_to_accuracy.items():
            epoch = next((r["epoch"] for r in rows
                          if (r.get("val_accuracy") or 0.0) >= float(threshold)), None)
            if seconds is not None and epoch is not None:
                self._scalars(epoch, {f"time_to_accuracy_s/{threshold}": float(seconds)})
        for name, path in pictures.items():
            if Path(path).is_file():
                self._image(max(self.written, 1), f"pictures/{name}", Path(path).read_bytes())
        self.close()

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()

    def _scalars(self, step: int, values: dict[str, float], wall: float | None = None) -> None:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t, simple_value=v)
                                             for t, v in values.items()])
        self.writer.add_event(event_pb2.Event(step=step, summary=summary,
                                              wall_time=wall or time.time()))

    def _image(self, step: int, tag: str, png: bytes) -> None:
        from PIL import Image

        width, height = Image.open(io.BytesIO(png)).size
        image = summary_pb2.Summary.Image(height=height, width=width, colorspace=4,
                                          encoded_image_string=png)
        self.writer.add_event(event_pb2.Event(step=step, wall_time=time.time(),
                                              summary=summary_pb2.Summary(value=[
                                                  summary_pb2.Summary.Value(tag=tag,
                                                                            image=image)])))

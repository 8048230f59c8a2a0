"""Full training-state checkpoints: weights, optimizer slots and step counter, and the run's
bookkeeping (epoch, metrics rows, segments), written by rank 0 after every epoch.

    <run>/checkpoints/epoch-0003/ckpt.index, ckpt.data-*   tf.train.Checkpoint(model, optimizer)
    <run>/checkpoints/epoch-0003/state.json                 epoch, step, rows, segments
    <run>/checkpoints/epoch-0003.step-000120/               3 epochs + 120 steps of the 4th:
                                                            written when a stop is requested
                                                            (time limit, preemption)

A checkpoint directory is written under a temporary name and renamed, so `latest()` never
sees a half-written one; the newest `keep` are kept. What a resumed run needs besides these
files is a pure function of (seed, epoch): the data order (data.batches) and the dropout
masks (train/step_schedule.py), so it continues bit for bit.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

STATE = "state.json"
_NAME = re.compile(r"epoch-(\d{4,})(?:\.step-(\d{6,}))?")


def name(epoch: int, step: int = 0) -> str:
    return f"epoch-{epoch:04d}" + (f".step-{step:06d}" if step else "")


def complete(directory: str | Path) -> list[tuple[int, int, Path]]:
    """(epochs done, steps done in the next epoch, path) of every complete checkpoint,
    oldest first."""
    found = []
    for path in Path(directory).glob("epoch-*"):
        m = _NAME.fullmatch(path.name)
        if m and (path / STATE).is_file():
            found.append((int(m.group(1)), int(m.group(2) or 0), path))
    return sorted(found)


def latest(directory: str | Path) -> tuple[int, int, Path] | None:
    """(epochs done, steps done in the next epoch, path) of the newest checkpoint, or None."""
    found = complete(directory)
    return found[-1] if found else None


def read_state(path: str | Path) -> dict:
    return json.loads((Path(path) / STATE).read_text())


def save(tf, directory: str | Path, epoch: int, model, optimizer, state: dict,
         keep: int = 2, step: int = 0) -> Path:
    """Write checkpoint `epoch` (epochs completed) + `step` (steps of the next epoch)
    atomically; prune old ones."""
    directory = Path(directory)
    final = directory / name(epoch, step)
    tmp = directory / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp / "ckpt"))
        (tmp / STATE).write_text(json.dumps({**state, "epoch": epoch, "step": step}, indent=1))
        if final.exists():  # a previous segment died after this epoch: same contents
            shutil.rmtree(final)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, _, old in complete(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore(tf, path: str | Path, model, optimizer) -> None:
    """Load weights now; optimizer slots are restored when Keras creates them (first step)."""
    status = tf.train.Checkpoint(model=model, optimizer=optimizer).read(
        str(Path(path) / "ckpt"))
    status.assert_existing_objects_matched()


def checkpoint_callback(tf, directory: Path, state_fn, keep: int = 2):
    """Rank 0: save after every epoch, and where an epoch was interrupted by a stop request
    (`logs["interrupted_at_step"]`); `state_fn()` supplies the bookkeeping dict."""

    class EpochCheckpoint(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            step = int((logs or {}).get("interrupted_at_step", 0))
            done = epoch if step else epoch + 1
            save(tf, directory, done, self.model, self.model.optimizer, state_fn(),
                 keep=keep, step=step)

    return EpochCheckpoint()

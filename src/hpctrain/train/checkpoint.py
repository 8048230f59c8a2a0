"""Full training-state checkpoints: weights, optimizer slots and step counter, and the run's
bookkeeping (epoch, metrics rows, segments), written by rank 0 after every epoch.

    <run>/checkpoints/epoch-0003/ckpt.index, ckpt.data-*   tf.train.Checkpoint(model, optimizer)
    <run>/checkpoints/epoch-0003/state.json                 epoch, step, rows, segments
    <run>/checkpoints/epoch-0003/manifest.json              every file's size and sha256
    <run>/checkpoints/epoch-0003.step-000120/               3 epochs + 120 steps of the 4th:
                                                            written when a stop is requested
                                                            (time limit, preemption)
    <run>/checkpoints/skipped/epoch-0004/                   one that failed verification,
                                                            moved aside (never deleted), with
                                                            why.txt

A checkpoint directory is written under a temporary name, its files and the directory
fsynced, the manifest written last, and only then renamed, so `complete()` never lists a
half-written one and a file cut short later (a node dying during a parallel-filesystem
flush, a quota hit) is caught by `verify()` before anything loads it. The newest `keep` are
kept. What a resumed run needs besides these files is a pure function of (seed, epoch): the
data order (data.batches) and the dropout masks (train/step_schedule.py), so it continues
bit for bit. Nothing here imports TensorFlow except through the `tf` passed in.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from hpctrain.atomic import file_sha256, free_bytes, size_text, tree_bytes

STATE, MANIFEST, SKIPPED = "state.json", "manifest.json", "skipped"
_NAME = re.compile(r"epoch-(\d{4,})(?:\.step-(\d{6,}))?")


def name(epoch: int, step: int = 0) -> str:
    return f"epoch-{epoch:04d}" + (f".step-{step:06d}" if step else "")


def complete(directory: str | Path) -> list[tuple[int, int, Path]]:
    """(epochs done, steps done in the next epoch, path) of every checkpoint that was
    renamed into place, oldest first (`verify` says whether its files are still whole)."""
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


def newest_valid(directory: str | Path) -> tuple[tuple[int, int, Path] | None,
                                                  list[tuple[Path, str]]]:
    """The newest checkpoint that passes `verify`, and (path, what is wrong) of every newer
    one that does not, newest first. Reads only: nothing is moved."""
    bad: list[tuple[Path, str]] = []
    for found in reversed(complete(directory)):
        problem = verify(found[2])
        if problem is None:
            return found, bad
        bad.append((found[2], problem))
    return None, bad


def read_state(path: str | Path) -> dict:
    return json.loads((Path(path) / STATE).read_text())


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(directory: Path) -> dict:
    """Fsyncs every file in `directory`, then writes (and fsyncs) manifest.json with each
    one's size and sha256, and fsyncs the directory: the last step before the rename."""
    files = {}
    for path in sorted(p for p in directory.iterdir() if p.is_file() and p.name != MANIFEST):
        _fsync(path)
        files[path.name] = {"size": path.stat().st_size, "sha256": file_sha256(path)}
    manifest = {"format": 1, "files": files}
    with open(directory / MANIFEST, "w") as f:
        f.write(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync(directory)
    return manifest


def verify(path: str | Path) -> str | None:
    """None when every file the manifest lists is there with its size and sha256; otherwise
    what is wrong, in a few words. A checkpoint without a manifest (written before they
    existed) is accepted: its loading is then the only check."""
    path = Path(path)
    if not (path / MANIFEST).is_file():
        return None if (path / STATE).is_file() else f"{STATE} missing"
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        json.loads((path / STATE).read_text())
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest or state ({type(e).__name__}: {e})"
    for file, want in sorted(files.items()):
        f = path / file
        if not f.is_file():
            return f"{file} missing"
        size = f.stat().st_size
        if size != want["size"]:
            return f"{file} is {size:,} bytes, the manifest says {want['size']:,}"
        if file_sha256(f) != want["sha256"]:
            return f"{file} does not match its sha256 in the manifest"
    return None


def move_aside(path: str | Path, reason: str) -> Path:
    """Moves a checkpoint that cannot be used to <checkpoints>/skipped/ (never deleted: an
    operator may still recover something from it), with why.txt; returns where it went."""
    path = Path(path)
    aside = path.parent / SKIPPED
    aside.mkdir(exist_ok=True)
    dest, n = aside / path.name, 1
    while dest.exists():
        n += 1
        dest = aside / f"{path.name}.{n}"
    os.rename(path, dest)
    (dest / "why.txt").write_text(reason + "\n")
    return dest


def save(tf, directory: str | Path, epoch: int, model, optimizer, state: dict,
         keep: int = 2, step: int = 0) -> Path:
    """Write checkpoint `epoch` (epochs completed) + `step` (steps of the next epoch)
    atomically and verifiably (files, manifest, fsync, rename); prune old ones."""
    directory = Path(directory)
    final = directory / name(epoch, step)
    tmp = directory / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        tf.train.Checkpoint(model=model, optimizer=optimizer).write(str(tmp / "ckpt"))
        (tmp / STATE).write_text(json.dumps({**state, "epoch": epoch, "step": step}, indent=1))
        write_manifest(tmp)
        if final.exists():  # a previous segment died after this epoch: same contents
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync(directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for _, _, old in complete(directory)[:-keep] if keep else []:  # keep 0: every one
        shutil.rmtree(old, ignore_errors=True)
    return final


def readable(tf, path: str | Path) -> str | None:
    """None when TensorFlow reads every tensor of the checkpoint in `path`; otherwise why
    not, in one line (the check for a checkpoint without a manifest)."""
    try:
        reader = tf.train.load_checkpoint(str(Path(path) / "ckpt"))
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    except Exception as e:  # noqa: BLE001 - whatever TensorFlow raises, the file is bad
        return f"cannot be read: {type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


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


def full_disk(run_dir: Path, path: str) -> str:
    """The line for a write that found its file system full (`path`, from the error: "" when
    it named none): where, how much is free, what the newest checkpoint takes, what to do."""
    inside = not path or Path(path).resolve().is_relative_to(run_dir.resolve())
    where = str(run_dir) if inside else path
    done = complete(run_dir / "checkpoints")
    took = f"; the newest checkpoint takes {size_text(tree_bytes(done[-1][2]))}" if done else ""
    return (f"no space left on the file system of {where} ({size_text(free_bytes(where))} "
            f"free{took}): free space there, then rerun with --resume")

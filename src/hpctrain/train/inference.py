"""A finished run's model for inference: its config, the newest checkpoint's weights, and
images prepared the way its data was staged (decoded, converted to the staged colour mode,
resized with the staging policy, centre-cropped to the trained size as evaluation does).
Used by `hpctrain predict` and by `hpctrain report` when a run's pictures are missing.

    run = load_run(run_dir)
    probs = run.probabilities(np.stack([prepare_image(p, run) for p in paths]))
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpctrain.experiment import TrainConfig, from_dict
from hpctrain.train import checkpoint
from hpctrain.validation import InputError


def import_tensorflow():
    """TensorFlow with Keras 2 (Horovod's and our checkpoints' Keras). Its C++ start-up
    lines (absl, oneDNN) ignore TF_CPP_MIN_LOG_LEVEL in this build and would bury a
    command's one-line answer: stderr is closed while it loads (Python errors still show)."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.constant(0)  # the second batch of start-up lines comes with the first op
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)

    from hpctrain.train.keras_compat import require_keras2

    require_keras2(tf)
    return tf


@dataclass
class RunModel:
    run_dir: Path
    cfg: TrainConfig
    model: Any
    input_shape: tuple[int, ...]  # as trained (after any crop)
    staged_shape: tuple[int, ...]  # as staged: what an image is resized to first
    num_classes: int
    class_names: list[str]
    policy: str  # staging's resize policy: center-crop or stretch
    checkpoint: Path

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        from hpctrain.data.augment import center_crop

        images = np.asarray(images, dtype=np.uint8)
        if images.shape[1:3] != self.input_shape[:2]:
            images = np.asarray(center_crop(images, self.input_shape[0]))
        return np.asarray(self.model(images, training=False), dtype=np.float64)

    def name(self, label: int) -> str:
        return self.class_names[label] if label < len(self.class_names) else str(label)


def dataset_info(run_dir: Path, cfg: TrainConfig) -> dict:
    """What the run trained on, from its report (or its staged data if the report is old)."""
    info: dict = {}
    report = run_dir / "report.json"
    if report.is_file():
        info = dict(json.loads(report.read_text()).get("dataset") or {})
    old = not info.get("class_names") or not info.get("input_shape")
    if old and cfg.data and Path(cfg.data).exists():
        from hpctrain.data.layout import describe

        info = {**describe(cfg.data), **{k: v for k, v in info.items() if v}}
    if not info.get("input_shape") or not info.get("num_classes"):
        raise InputError(f"{run_dir}: the report does not say what the model was trained "
                         f"on and its data {cfg.data or '(synthetic)'} is not here")
    return info


def load_run(run_dir: str | Path, checkpoint_name: str = "") -> RunModel:
    """The run's newest checkpoint (or the one named) in its model (imports TensorFlow)."""
    run = describe_run(run_dir, checkpoint_name)
    tf = import_tensorflow()
    from hpctrain.train.models import build_model

    run.model = build_model(run.cfg.model, run.input_shape, run.num_classes,
                            run.cfg.activation)
    status = tf.train.Checkpoint(model=run.model).read(str(run.checkpoint / "ckpt"))
    status.expect_partial().assert_existing_objects_matched()
    return run


def describe_run(run_dir: str | Path, checkpoint_name: str = "") -> RunModel:
    """What the run trained on and where its newest checkpoint (or the one named, e.g.
    epoch-0004) is, without TensorFlow (so bad input is refused before it loads); `model` is
    None."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise InputError(f"{run_dir}: not a run directory (no config.json)")
    cfg = from_dict(json.loads((run_dir / "config.json").read_text()))
    if checkpoint_name:
        named = [c for c in checkpoint.complete(run_dir / "checkpoints")
                 if c[2].name == checkpoint_name]
        if not named:
            kept = ", ".join(c[2].name for c in checkpoint.complete(run_dir / "checkpoints"))
            raise InputError(f"{run_dir}: no checkpoint {checkpoint_name} (kept: "
                             f"{kept or 'none'})")
        problem = checkpoint.verify(named[0][2])
        if problem:
            raise InputError(f"{run_dir}: checkpoint {checkpoint_name} is damaged ({problem})")
    found, damaged = (named[0], []) if checkpoint_name else \
        checkpoint.newest_valid(run_dir / "checkpoints")
    if found is None and damaged:
        raise InputError(f"{run_dir}: no usable checkpoint ("
                         + "; ".join(f"{p.name}: {why}" for p, why in damaged) + ")")
    if found is None:
        raise InputError(f"{run_dir}: no checkpoint (the run saved none - `checkpoint: "
                         "false` - or did not finish an epoch)")
    for path, why in damaged:  # read-only here: `hpctrain train --resume` moves them aside
        print(f"hpctrain: checkpoint {path.name} skipped ({why}); using {found[2].name}",
              file=sys.stderr)
    info = dataset_info(run_dir, cfg)
    input_shape = tuple(int(v) for v in info["input_shape"])
    staged = tuple(int(v) for v in info.get("staged_shape") or input_shape)
    return RunModel(run_dir, cfg, None, input_shape, staged, int(info["num_classes"]),
                    list(info.get("class_names") or []), _policy(cfg), found[2])


def _policy(cfg: TrainConfig) -> str:
    if cfg.data and Path(cfg.data).is_dir():
        from hpctrain.data.shards import load_manifest

        return str(load_manifest(cfg.data).get("policy", "center-crop"))
    return "center-crop"


def prepare_image(path: str | Path, run: RunModel) -> np.ndarray:
    """One image file as the run's staged data holds images: uint8, the staged size, RGB or
    greyscale as staged. InputError (one line) if it is not a readable image."""
    from PIL import Image

    from hpctrain.data.imagefolder import load_image

    size, channels = run.staged_shape[0], run.staged_shape[-1]
    try:
        rgb = load_image(path, size, run.policy)
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(f"{path}: not a readable image ({type(e).__name__}: {e})") from None
    if channels == 1:  # as the greyscale datasets: PIL's ITU-R 601-2 luma
        return np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.uint8)[..., None]
    return rgb


def staged_image(path: str | Path, index: int, split: str = "test") -> tuple[np.ndarray, int]:
    """Image `index` of a staged HDF5 file's split, and its label."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            images = f[f"{split}/images"]
            if not 0 <= index < len(images):
                raise InputError(f"--index {index}: {path} has {len(images)} {split} images")
            return np.asarray(images[index]), int(f[f"{split}/labels"][index])
    except (OSError, KeyError) as e:
        raise InputError(f"{path}: not a staged HDF5 file ({e})") from None

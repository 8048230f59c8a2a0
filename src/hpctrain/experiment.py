"""Experiment configs: one YAML file per experiment, a `short` variant for smoke runs.

    hpctrain train --config jobs/configs/fmnist_cnn.yaml            # the full experiment
    hpctrain train --config jobs/configs/fmnist_cnn.yaml:short      # its smoke variant
    hpctrain train --config jobs/configs/fmnist_cnn.yaml epochs=1 batch_size=64

A file holds the experiment's keys at top level and optional `variants: {name: {...}}`
whose keys override them. Command-line overrides (`key=value`, values parsed as YAML) come
last. Unknown keys, wrong types and impossible values are errors, reported in one line.

The experiment config is the contract between the stages: training runs it (train/), job
scripts carry it to a cluster (slurm/), studies and benchmarks vary it (scaling/, bench/).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from pydantic import Field, model_validator

from hpctrain.validation import Checked, InputError, parse, read_mapping

# the model zoo's names (train/models.py builds them) and the activations mlp5 takes
MODELS = ("softmax", "mlp5", "mlp5_dropout", "cnn", "cnn64", "cnn_bn", "cnn_notebook",
          "lenet5", "lstm", "resnet20", "resnet50")
ACTIVATIONS = ("sigmoid", "tanh", "relu")
RESIDUAL_MODELS = ("resnet20", "resnet50")


def _pair(values: list[float]) -> tuple[float, float]:
    if len(values) != 2:
        raise ValueError(f"{values}: two numbers, [low, high]")
    return values[0], values[1]

OPTIMIZERS = ("sgd", "rmsprop", "adadelta", "adam", "lars", "lamb")
SCHEDULES = ("constant", "step", "cosine")
SCALINGS = ("linear", "sqrt")  # how the learning rate grows with the global batch
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
# per-step mechanisms a benchmark can switch off, one at a time, to measure what each costs
MECHANISMS = ("stop_check", "reseed", "lr_schedule", "step_timing")


class ConfigError(InputError):
    """A bad config; the message is one line naming the problem."""


class TrainConfig(Checked):
    experiment: str
    # staged HDF5 file or shard directory (hpctrain stage), relative to the cwd; "" if synthetic
    data: str = ""
    model: str = "cnn"
    activation: str = "relu"  # mlp5 / mlp5_dropout hidden layers: sigmoid, tanh or relu
    epochs: int = 3
    batch_size: int = 128  # per rank
    # gradient accumulation (Horovod's backward_passes_per_step): each update averages this
    # many local batches per rank, so the global batch is batch_size x ranks x accumulate_steps
    # and the learning rate scales with it (emulates a larger cluster's global batch)
    accumulate_steps: int = 1
    optimizer: str = "adam"  # sgd, rmsprop, adadelta, adam; lars, lamb for large batches
    learning_rate: float = 0.001  # for one rank; multiplied by the number of ranks
    momentum: float = 0.9  # sgd, rmsprop and lars
    lars_eta: float = 0.001  # LARS' trust coefficient (You et al. 2017)
    # the rate grows with ranks x accumulated batches: linearly (Goyal et al. 2017) or with
    # its square root (sqrt: LAMB's rule, You et al. 2019)
    lr_scaling: str = "linear"
    warmup_epochs: float = 1.0  # gradual warm-up to the scaled rate (Goyal et al. 2017)
    lr_schedule: str = "constant"  # after warm-up: constant, step or cosine
    lr_decay_epochs: list[float] = Field(default_factory=list)  # step: where to decay
    lr_decay: float = 0.1  # step: multiplier at each of lr_decay_epochs
    # L2 on convolution and dense kernels only (not BatchNorm parameters, not biases): the
    # loss gains weight_decay / 2 x their squared norm, so the step gains weight_decay x w
    # (Goyal et al. 2017: 1e-4 for ResNet-50 on ImageNet)
    weight_decay: float = 0.0
    label_smoothing: float = 0.0  # targets (1 - e) one-hot + e / classes (Szegedy et al.)
    # the last BatchNorm of every residual block starts with gamma 0, so each block begins
    # as the identity (Goyal et al. 2017, sec. 5.1); resnet20 and resnet50
    zero_init_residual: bool = False
    seed: int = 42
    deterministic: bool = True  # TensorFlow op determinism: same seed + ranks, same weights
    # train and evaluate on crop x crop windows of the staged images (0: the whole image);
    # with `augment`, training takes a random window and flips it at random, evaluation the
    # central one (ImageNet: stage 256 or 160, crop 224 or 128)
    crop: int = 0
    augment: bool = False
    # with `augment`: random-resized-crop instead of a fixed-size random window - a region of
    # crop_area (fraction of the image, uniform) and aspect ratio in crop_aspect (log-uniform),
    # resized to crop x crop (Szegedy et al. 2015; the ImageNet recipes' scale augmentation)
    random_resized_crop: bool = False
    crop_area: list[float] = Field(default_factory=lambda: [0.08, 1.0])
    crop_aspect: list[float] = Field(default_factory=lambda: [3 / 4, 4 / 3])
    shuffle_mb: int = 128  # the reader's shuffle window per rank, in MiB (about 4x in memory)
    # tf.data threads that augment (crop and flip) batches in parallel, order kept; give a GPU
    # node's spare cores (e.g. cpus-per-task minus 2): 2 run the 224 crops faster on both
    # sides (results/benchmarks/README.md, input pipeline). Training on CPUs: 1, the model
    # needs the cores.
    input_threads: int = 1
    train_limit: int = 0  # use only the first N training samples (0: all)
    test_limit: int = 0  # use only the first N test samples (0: all)
    accuracy_thresholds: list[float] = Field(default_factory=lambda: [0.80, 0.85, 0.88, 0.90])
    target_accuracy: float = 0.0  # stop once the test accuracy reaches it (0: never)
    expected_accuracy: float = 0.0  # what the config promises; the report says if it was met
    # TensorFlow intra-op threads per rank; 0: Slurm's cpus-per-task, else the CPUs this
    # process may use divided by the ranks on this node (JobEnvironment.default_threads)
    threads: int = 0
    checkpoint: bool = True  # save the full training state every epoch (rank 0, atomic)
    checkpoint_keep: int = 2  # the newest kept; 0: every epoch's (hpctrain noise-scale --all)
    precision: str = "float32"  # or mixed_float16 (with loss scaling) / mixed_bfloat16
    xla: bool = False  # XLA auto-clustering (GPU; Horovod's allreduce stays outside XLA)
    synthetic: bool = False  # random tensors on the device instead of `data`: no I/O
    input_shape: list[int] = Field(default_factory=lambda: [224, 224, 3])  # synthetic only
    num_classes: int = 1000  # synthetic only
    synthetic_steps: int = 50  # synthetic only: steps per epoch
    stop_check_steps: int = 10  # ranks agree on a stop request (time limit) every N steps
    # write Horovod's timeline (chrome://tracing) to timeline.json; its writer thread busy-polls
    # on rank 0 for the whole run: for a diagnostic run, not a timed one
    timeline: bool = False
    # after training: learning curves, confusion matrix and example grids in report.md
    pictures: bool = True
    # benchmarks only (make bench): per-step mechanisms to switch off to measure their cost.
    # Without stop_check a time limit loses the epoch; without reseed a resumed run's dropout
    # differs; without lr_schedule the rate is the config's, unscaled and without warm-up;
    # without step_timing the report has no step-time breakdown.
    without: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", self.experiment):
            raise ValueError(f"experiment {self.experiment!r}: use letters, digits, _ . -")
        for key, choices in (("model", MODELS), ("activation", ACTIVATIONS),
                             ("optimizer", OPTIMIZERS), ("lr_schedule", SCHEDULES),
                             ("lr_scaling", SCALINGS),
                             ("precision", PRECISIONS)):
            if getattr(self, key) not in choices:
                raise ValueError(f"{key} {getattr(self, key)!r} unknown; "
                                 f"choose from {', '.join(choices)}")
        if not self.synthetic and not self.data:
            raise ValueError("data is required (a staged HDF5 file or shard directory), unless "
                             "synthetic=true")
        for name in ("epochs", "batch_size", "accumulate_steps", "num_classes", "synthetic_steps",
                     "stop_check_steps", "shuffle_mb", "input_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("train_limit", "test_limit", "threads", "warmup_epochs", "momentum",
                     "lr_decay", "crop", "checkpoint_keep"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.weight_decay < 0 or not 0 <= self.label_smoothing < 1:
            raise ValueError("weight_decay must be >= 0 and label_smoothing in [0, 1)")
        if self.zero_init_residual and self.model not in RESIDUAL_MODELS:
            raise ValueError(f"zero_init_residual: model {self.model} has no residual blocks "
                             f"({', '.join(RESIDUAL_MODELS)} have)")
        (a_lo, a_hi), (r_lo, r_hi) = _pair(self.crop_area), _pair(self.crop_aspect)
        if not (0 < a_lo <= a_hi <= 1 and 0 < r_lo <= 1 <= r_hi):
            raise ValueError(f"crop_area {self.crop_area} must be [lo, hi] within (0, 1], "
                             f"crop_aspect {self.crop_aspect} [lo, hi] around 1")
        if self.random_resized_crop and not (self.augment and self.crop):
            raise ValueError("random_resized_crop needs augment: true and a crop size")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name in self.without:
            if name not in MECHANISMS:
                raise ValueError(f"without: {name!r} unknown; choose from {', '.join(MECHANISMS)}")
        if self.warmup_epochs >= self.epochs and self.lr_schedule != "constant":
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) leaves no epoch for "
                             f"the {self.lr_schedule} schedule ({self.epochs} epochs)")
        if self.lr_schedule == "step" and not self.lr_decay_epochs:
            raise ValueError("lr_schedule step needs lr_decay_epochs, e.g. [30, 60, 80]")
        if sorted(self.lr_decay_epochs) != self.lr_decay_epochs or any(
                e < self.warmup_epochs for e in self.lr_decay_epochs):
            raise ValueError(f"lr_decay_epochs {self.lr_decay_epochs} must be ascending "
                             f"and not before the end of the warm-up ({self.warmup_epochs})")
        for name in ("target_accuracy", "expected_accuracy"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if not all(0 < t <= 1 for t in self.accuracy_thresholds):
            raise ValueError(f"accuracy_thresholds must lie in (0, 1]: "
                             f"{self.accuracy_thresholds}")
        if len(self.input_shape) != 3 or any(d < 1 for d in self.input_shape):
            raise ValueError(f"input_shape must be [height, width, channels], got "
                             f"{self.input_shape}")
        return self

    def to_dict(self) -> dict:
        return self.model_dump()


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def split_spec(spec: str) -> tuple[Path, str | None]:
    """`path.yaml:variant` -> (path, variant); a bare path -> (path, None)."""
    path, sep, variant = spec.rpartition(":")
    if sep and variant and not variant.startswith(("/", "\\")) and path.endswith((".yaml",
                                                                                  ".yml")):
        return Path(path), variant
    return Path(spec), None


def load_config(spec: str, overrides: list[str] | dict | None = None) -> TrainConfig:
    path, variant = split_spec(spec)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    raw = read_mapping(path, ConfigError)
    variants = raw.pop("variants", {}) or {}
    values, origin = dict(raw), str(path)
    _known_keys(values, origin)
    if variant is not None:
        if variant not in variants:
            raise ConfigError(f"{path}: no variant {variant!r} "
                              f"(has: {', '.join(variants) or 'none'})")
        origin = f"{path}:{variant}"
        values.update(_known_keys(dict(variants[variant] or {}), origin))
    if overrides:
        extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        values.update(_known_keys(dict(extra), "override"))
        origin += " + overrides"
    if "experiment" not in values:
        raise ConfigError(f"{path}: missing required key(s) experiment")
    return parse(TrainConfig, values, origin, ConfigError)


def _known_keys(values: dict, origin: str) -> dict:
    """Unknown keys are named where they were written (file, variant or override)."""
    unknown = sorted(set(values) - set(TrainConfig.model_fields))
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(TrainConfig.model_fields)}")
    return values


NODE = "{node}"  # in `data`: the Slurm node name of the rank (node-local copies, one per node)


def data_on(cfg: TrainConfig, node_name: str) -> str:
    """The data path as seen on node `node_name` (`{node}` replaced)."""
    return cfg.data.replace(NODE, node_name)


def from_dict(values: dict) -> TrainConfig:
    """Rebuild a resolved config (e.g. a run directory's config.json)."""
    return parse(TrainConfig, dict(values), "config.json", ConfigError)

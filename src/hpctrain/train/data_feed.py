"""What one rank trains and evaluates on: its shard of a staged HDF5 file (data/reader.py),
or synthetic tensors made on the device; the batches of any epoch from any step.

    feed = DataFeed.open(tf, cfg, rank, size)
    model.fit(feed.batches(epoch, first_step), steps_per_epoch=feed.steps, ...)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpctrain.data.layout import describe
from hpctrain.data.reader import Shard, batches, read_shard, synthetic_batches
from hpctrain.train.config import TrainConfig


@dataclass
class DataFeed:
    tf: Any
    cfg: TrainConfig
    rank: int
    info: dict  # dataset, class_names, num_classes, input_shape, counts, source_sha256
    steps: int  # per epoch, the same on every rank
    train: Shard | None  # None: synthetic
    test: Shard | None

    @classmethod
    def open(cls, tf, cfg: TrainConfig, rank: int, size: int) -> DataFeed:
        if cfg.synthetic:
            info = {"dataset": "synthetic", "class_names": [], "num_classes": cfg.num_classes,
                    "input_shape": tuple(cfg.input_shape), "source_sha256": {},
                    "train_count": cfg.synthetic_steps * cfg.batch_size * size,
                    "test_count": 0}
            return cls(tf, cfg, rank, info, cfg.synthetic_steps, None, None)
        info = describe(cfg.data)
        train = read_shard(cfg.data, "train", rank, size, cfg.train_limit)
        test = read_shard(cfg.data, "test", rank, size, cfg.test_limit)
        steps = len(train.labels) // cfg.batch_size
        if steps == 0:
            raise SystemExit(f"batch_size {cfg.batch_size} exceeds the {len(train.labels)} "
                             "training samples per rank")
        return cls(tf, cfg, rank, info, steps, train, test)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.info["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    def batches(self, first_epoch: int, first_step: int = 0):
        """Endless batches from `first_epoch`, step `first_step`: the order is a function of
        (seed, rank, epoch), so a resumed run sees what an uninterrupted one would."""
        seed = self.cfg.seed + self.rank
        if self.train is None:
            return synthetic_batches(self.tf, self.input_shape, self.num_classes,
                                     self.cfg.batch_size, seed=seed)
        return batches(self.tf, self.train.images, self.train.labels, self.cfg.batch_size,
                       seed=seed, first_epoch=first_epoch, first_step=first_step)

    def describe(self) -> str:
        if self.train is None:
            return "synthetic train / 0 test samples on this rank"
        return (f"{len(self.train.labels)} train / "
                f"{len(self.test.labels) if self.test is not None else 0} test samples on "
                "this rank")

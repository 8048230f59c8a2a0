"""What one rank trains and evaluates on: its share of a staged file or shard directory
(data/reader.py), or synthetic tensors made on the device; the batches of any epoch from any
step, and the test batches in order.

    feed = DataFeed.open(tf, cfg, rank, size)
    model.fit(feed.batches(epoch, first_step), steps_per_epoch=feed.steps, ...)
    for images, labels in feed.test_batches(512): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from hpctrain.data.augment import center_crop, crop_flip, resized_crop_flip
from hpctrain.data.batches import synthetic_batches
from hpctrain.data.layout import describe
from hpctrain.data.reader import RankReader
from hpctrain.experiment import TrainConfig, data_on


@dataclass
class DataFeed:
    tf: Any
    cfg: TrainConfig
    rank: int
    info: dict  # dataset, class_names, num_classes, input_shape (as trained), counts, sha256
    steps: int  # per epoch, the same on every rank
    train: RankReader | None  # None: synthetic
    test: RankReader | None

    @classmethod
    def open(cls, tf, cfg: TrainConfig, rank: int, size: int, node_name: str = "") -> DataFeed:
        if cfg.synthetic:
            info = {"dataset": "synthetic", "class_names": [], "num_classes": cfg.num_classes,
                    "input_shape": tuple(cfg.input_shape), "source_sha256": {},
                    "train_count": cfg.synthetic_steps * cfg.batch_size * size,
                    "test_count": 0}
            return cls(tf, cfg, rank, info, cfg.synthetic_steps, None, None)
        data = data_on(cfg, node_name)  # a node-local copy: this node's
        info = describe(data)
        staged: tuple[int, ...] = tuple(info["input_shape"])  # type: ignore[arg-type]
        if cfg.crop:
            info["staged_shape"] = staged
            info["input_shape"] = (cfg.crop, cfg.crop, staged[2])
        seed = cfg.seed + rank
        train = RankReader.open(data, "train", rank, size, cfg.batch_size, seed,
                                cfg.train_limit, cfg.shuffle_mb)
        test = RankReader.open(data, "test", rank, size, 512, seed, cfg.test_limit,
                               cfg.shuffle_mb)
        if train.steps == 0:
            raise SystemExit(f"batch_size {cfg.batch_size} exceeds the {train.rows} "
                             "training samples per rank")
        return cls(tf, cfg, rank, info, train.steps, train, test)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.info["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.info["num_classes"])

    def batches(self, first_epoch: int, first_step: int = 0):
        """Endless batches from `first_epoch`, step `first_step`: the order (and any random
        crop) is a function of (seed, rank, epoch, step), so a resumed run sees what an
        uninterrupted one would."""
        tf, cfg = self.tf, self.cfg
        if self.train is None:
            return synthetic_batches(tf, self.input_shape, self.num_classes, cfg.batch_size,
                                     seed=cfg.seed + self.rank)
        crop = self.input_shape[0]
        augment: Callable[..., Any] | None = None
        if cfg.augment and cfg.random_resized_crop:
            augment = resized_crop_flip(tf, crop, seed=cfg.seed + self.rank,
                                        area=tuple(cfg.crop_area), aspect=tuple(cfg.crop_aspect))
        elif cfg.augment:
            augment = crop_flip(tf, crop, seed=cfg.seed + self.rank)
        elif crop != self.train.shape[0]:
            def centre(images, labels, epoch, step):  # evaluation's crop, in the graph
                return center_crop(images, crop), labels

            augment = centre
        return self.train.dataset(tf, first_epoch, first_step, augment=augment,
                                  threads=cfg.input_threads)

    def test_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """This rank's test rows in order (centre-cropped to the training size)."""
        assert self.test is not None
        crop = self.input_shape[0]
        for images, labels in self.test.in_order():
            yield center_crop(images, crop), labels

    def describe(self) -> str:
        if self.train is None:
            return "synthetic train / 0 test samples on this rank"
        crop = self.input_shape
        return (f"{self.train.rows} train / {self.test.rows if self.test else 0} test "
                f"samples on this rank, {'x'.join(map(str, self.train.shape))} staged, "
                f"trained at {'x'.join(map(str, crop))}"
                + ((" with random-resized crops and flips" if self.cfg.random_resized_crop
                    else " with random crops and flips") if self.cfg.augment else ""))


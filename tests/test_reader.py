"""The streaming reader (data/reader.py) on real staged files: ranks get disjoint equal ranges,
every row once per epoch, exact resume from any step, bounded windows, augmentation that is
a pure function of (seed, epoch, step); the same reader for a single MNIST file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tensorflow as tf

from hpctrain.data.augment import center_crop, crop_flip, resized_crop_flip
from hpctrain.data.batches import memory_batches
from hpctrain.data.layout import Piece, split_pieces
from hpctrain.data.reader import RankReader, blocks_of, rank_pieces


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory):
    """A staged-like directory: 3 shards of unequal size, each row's label = its global row."""
    from hpctrain.data.shards import ShardWriter, write_manifest

    out = tmp_path_factory.mktemp("shards")
    shards, row = [], 0
    for i, n in enumerate((700, 650, 610)):
        w = ShardWriter(out / f"train-{i:05d}-of-00003.h5", n, (12, 12, 3), None,
                        {"plan": "x", "split": "train", "shard": i})
        for _ in range(n):
            w.add(np.full((12, 12, 3), row % 251, np.uint8), row, f"r{row}")
            row += 1
        w.finish()
        shards.append({"file": w.path.name, "count": n, "bytes": w.path.stat().st_size,
                       "sha256": ""})
    w = ShardWriter(out / "test-00000-of-00001.h5", 100, (12, 12, 3), None, {})
    for i in range(100):
        w.add(np.full((12, 12, 3), i, np.uint8), i, f"t{i}")
    w.finish()
    test = [{"file": w.path.name, "count": 100, "bytes": w.path.stat().st_size, "sha256": ""}]
    write_manifest(out, {
        "format": "hpctrain-imagefolder/1", "source": "/x", "class_names": ["a"],
        "num_classes": 1, "image_shape": [12, 12, 3], "chunk_rows": 64,
        "splits": {"train": {"count": 1960, "shards": shards},
                   "test": {"count": 100, "shards": test}}})
    return out


@pytest.fixture(params=["gathered", "scattered"])
def read_mode(request, monkeypatch):
    """Both ways a window becomes batches: read in file order and gathered by tf.data, or
    (large rows) read straight into batch order; these rows are small, so the threshold is
    lowered for the second."""
    from hpctrain.data import reader as reader_module

    if request.param == "scattered":
        monkeypatch.setattr(reader_module, "SCATTER_BYTES", 1)
    return request.param


def rows_of(reader: RankReader, epoch: int, first_step: int = 0) -> np.ndarray:
    return np.concatenate([y for _, y in reader.epoch_arrays(epoch, first_step)])


def stamped(images, labels, epoch, step):
    """An augmentation that shows what every augmentation is given: each label with its
    batch's (epoch, step) (these images are one value each, which no crop or flip changes)."""
    stamp = tf.cast(epoch * 1000 + step, tf.int32)
    return images, tf.stack([labels, tf.fill(tf.shape(labels), stamp)], axis=1)


def test_ranks_get_disjoint_equal_ranges(shard_dir):
    pieces = split_pieces(str(shard_dir), "train")
    assert [p.count for p in pieces] == [700, 650, 610]
    got = []
    for rank in range(3):
        mine, total = rank_pieces(pieces, rank, 3)
        assert total == 1960 and sum(p.count for p in mine) == 653
        got += [(p.path, r) for p in mine for r in range(p.start, p.stop)]
    assert len(got) == len(set(got)) == 1959  # the last 1960 % 3 rows are left out
    mine, total = rank_pieces(pieces, 1, 2, limit=1000)  # the first 1000 rows
    assert total == 1000 and [(p.start, p.stop) for p in mine] == [(500, 700), (0, 300)]


def test_blocks_are_chunk_aligned():
    blocks = blocks_of([Piece("f", "", 30, 1000, 64)], 200)
    assert blocks[0].start == 30 and blocks[-1].stop == 1000
    assert all(b.start % 64 == 0 for b in blocks[1:]) and all(b.count <= 192 for b in blocks)
    assert sum(b.count for b in blocks) == 970


def test_every_row_once_per_epoch_and_exact_resume(shard_dir, read_mode):
    reader = RankReader.open(str(shard_dir), "train", 1, 2, batch_size=32, seed=5)
    reader.blocks = blocks_of(reader.pieces, 100)
    reader.window_blocks = 2  # several windows, so batches straddle them
    assert reader.ordered == (read_mode == "scattered")
    assert reader.steps == 980 // 32
    full = rows_of(reader, 3)
    assert len(full) == reader.steps * 32 and len(set(full.tolist())) == len(full)
    assert set(full.tolist()) <= set(range(980, 1960))  # rank 1's half (labels = global rows)
    assert not np.array_equal(full, rows_of(reader, 4))  # a new order each epoch
    np.testing.assert_array_equal(full, rows_of(reader, 3))  # a function of (seed, epoch)
    for step in (1, 7, 19, reader.steps - 1):
        np.testing.assert_array_equal(rows_of(reader, 3, step), full[step * 32:])
    # images travel with their labels
    for x, y in reader.epoch_arrays(3):
        assert (x[:, 0, 0, 0] == (y % 251)).all()


@pytest.mark.parametrize("make_augment", [crop_flip, resized_crop_flip],
                         ids=["crop_flip", "random_resized_crop"])
def test_dataset_batches_resume_and_augment(shard_dir, read_mode, make_augment):
    """Resumed at a step, bit for bit the batches of the uninterrupted run, either crop."""
    reader = RankReader.open(str(shard_dir), "train", 0, 1, batch_size=16, seed=1)
    reader.window_blocks = 1
    assert reader.ordered == (read_mode == "scattered")
    augment = make_augment(tf, 8, seed=3)
    ds = reader.dataset(tf, first_epoch=2, epochs=2, augment=augment)
    batches = [(x.numpy(), y.numpy()) for x, y in ds]
    assert len(batches) == 2 * reader.steps
    assert all(x.shape == (16, 8, 8, 3) for x, _ in batches)
    resumed = [(x.numpy(), y.numpy()) for x, y in
               reader.dataset(tf, first_epoch=2, first_step=10, epochs=2, augment=augment)]
    assert len(resumed) == len(batches) - 10
    for (x1, y1), (x2, y2) in zip(batches[10:], resumed, strict=True):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)
    # and every batch is augmented as the batch of its (epoch, step)
    whole, resumed = (np.concatenate([y.numpy() for _, y in reader.dataset(
        tf, first_epoch=2, first_step=step, epochs=2, augment=stamped)]) for step in (0, 10))
    steps = np.arange(len(whole)) // 16
    np.testing.assert_array_equal(whole[:, 1], np.where(steps < reader.steps, 2000 + steps,
                                                        3000 + steps - reader.steps))
    np.testing.assert_array_equal(resumed, whole[10 * 16:])
    # augmenting on 3 threads at once (input_threads): the same batches in the same order
    threaded = [(x.numpy(), y.numpy()) for x, y in
                reader.dataset(tf, first_epoch=2, epochs=2, augment=augment, threads=3)]
    assert len(threaded) == len(batches)
    for (x1, y1), (x2, y2) in zip(batches, threaded, strict=True):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)


def test_crop_flip_takes_windows_and_mirrors():
    base = np.arange(10 * 10, dtype=np.uint8).reshape(1, 10, 10, 1).repeat(64, axis=0)
    out = crop_flip(tf, 6, seed=0)(tf.constant(base), tf.zeros(64, tf.int32), 0, 0)[0].numpy()
    flipped = 0
    for img in out:
        row0, col0 = divmod(int(img[..., 0].min()), 10)
        window = base[0, row0:row0 + 6, col0:col0 + 6]
        if np.array_equal(img, window):
            continue
        np.testing.assert_array_equal(img, window[:, ::-1])
        flipped += 1
    assert 10 < flipped < 54  # about half
    np.testing.assert_array_equal(center_crop(base, 6)[0], base[0, 2:8, 2:8])
    # the same crop inside a tf.data graph (training at a crop without augmentation)
    ds = tf.data.Dataset.from_tensors(base).map(lambda x: center_crop(x, 6))
    np.testing.assert_array_equal(next(iter(ds)).numpy(), base[:, 2:8, 2:8])


def test_in_order_covers_the_rank_and_mnist_file_uses_the_same_reader(shard_dir, fmnist_h5):
    test = RankReader.open(str(shard_dir), "test", 1, 2, batch_size=30)
    got = np.concatenate([y for _, y in test.in_order()])
    np.testing.assert_array_equal(got, np.arange(50, 100))
    reader = RankReader.open(str(fmnist_h5), "train", 0, 2, batch_size=128, seed=0)
    assert reader.shape == (28, 28, 1) and reader.rows == 30000
    with h5py.File(fmnist_h5, "r") as f:
        labels = f["train/labels"][:30000]
    rows = np.concatenate([y for _, y in reader.epoch_arrays(0)])
    got, have = np.bincount(rows, minlength=10), np.bincount(labels, minlength=10)
    assert got.sum() == reader.steps * 128 and (got <= have).all()  # a remainder is dropped
    assert (have - got).sum() == 30000 - reader.steps * 128


def test_memory_baseline_matches_shapes(shard_dir):
    reader = RankReader.open(str(shard_dir), "train", 0, 1, batch_size=16, seed=1)
    images, labels = next(iter(reader.epoch_arrays(0)))
    ds = memory_batches(tf, images, labels, 16, seed=0, epochs=1)
    assert sum(1 for _ in ds) == len(labels) // 16


def test_window_buffers_are_shared_with_tf_data_and_reused_only_when_free(shard_dir,
                                                                          monkeypatch,
                                                                          read_mode):
    """from_generator shares the memory of a 64-byte aligned numpy array instead of copying
    it, and tf.data prefetches windows while the next one is read: a buffer handed out again
    too early trains on overwritten data (a CI run once did). The pool's buffers are aligned
    (so nothing is copied), dozens of windows go through a handful of buffers, and every
    batch is what the windows read without tf.data say."""
    reader = RankReader.open(str(shard_dir), "train", 0, 1, batch_size=16, seed=1)
    reader.blocks = blocks_of(reader.pieces, 64)
    reader.window_blocks = 1  # 31 windows an epoch
    pools = []

    def recording():
        pools.append(RankReader.window_pool(reader))
        return pools[-1]

    monkeypatch.setattr(reader, "window_pool", recording)
    got = [(x.numpy(), y.numpy()) for x, y in reader.dataset(tf, first_epoch=0, epochs=2)]
    want = [*reader.epoch_arrays(0), *reader.epoch_arrays(1)]  # fresh memory, no tf.data
    assert len(got) == 2 * reader.steps
    for i in (0, 1):  # labels, then images, in the same order
        np.testing.assert_array_equal(np.concatenate([g[i] for g in got]),
                                      np.concatenate([w[i] for w in want]))
    (pool,) = pools
    assert all(b.ctypes.data % 64 == 0 for b in pool.buffers)
    assert 2 <= len(pool.buffers) <= 6, len(pool.buffers)  # bounded, and reuse waited


@pytest.mark.parametrize("gather_bytes", [1, 3 * 16 * 432])  # one batch a gather; three
def test_gathering_batches_in_groups_changes_nothing(shard_dir, monkeypatch, gather_bytes):
    """Small images are gathered many batches at a time (reader.gather_group); the batches,
    their order and the last short group are the same as one gather per batch."""
    from hpctrain.data import batches as batches_module

    reader = RankReader.open(str(shard_dir), "train", 0, 1, batch_size=16, seed=1)
    reader.window_blocks = 1  # windows of 700, 650 and 610 rows: groups end short
    want = [(x.numpy(), y.numpy()) for x, y in reader.dataset(tf, first_epoch=1, epochs=1)]
    images, labels = next(iter(reader.epoch_arrays(0)))
    memory = [y.numpy() for _, y in memory_batches(tf, images, labels, 16, seed=0, epochs=1)]
    assert batches_module.gather_group(reader.shape, 16) > 40  # the default: one group
    by_batch = [y.numpy() for _, y in reader.dataset(tf, first_epoch=1, epochs=1, group=1)]
    np.testing.assert_array_equal(np.concatenate(by_batch), np.concatenate([y for _, y in want]))
    monkeypatch.setattr(batches_module, "GATHER_BYTES", gather_bytes)
    assert batches_module.gather_group(reader.shape, 16) == max(1, gather_bytes // (16 * 432))
    got = [(x.numpy(), y.numpy()) for x, y in reader.dataset(tf, first_epoch=1, epochs=1)]
    assert len(got) == len(want) == reader.steps
    for (x1, y1), (x2, y2) in zip(got, want, strict=True):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)
    again = [y.numpy() for _, y in memory_batches(tf, images, labels, 16, seed=0, epochs=1)]
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(memory))


def test_a_share_that_fits_one_window_is_read_once_and_kept(shard_dir, monkeypatch):
    """When the rank's blocks all fit in one shuffle window, every epoch is that window in a
    new order: it is read once, and the batches are the ones the window's own order says
    (rows of its blocks, in the epoch's block order, permuted), resumable at any step."""
    from hpctrain.data import window_io

    reader = RankReader.open(str(shard_dir), "train", 0, 1, batch_size=16, seed=2)
    reader.blocks = blocks_of(reader.pieces, 100)
    reader.window_blocks = len(reader.blocks)
    reads = []
    real_read = window_io.WindowFiles.read
    monkeypatch.setattr(window_io.WindowFiles, "read",
                        lambda self, blocks, *a: reads.append(len(blocks)) or
                        real_read(self, blocks, *a))
    for epoch in (0, 1):
        ((blocks, perm),) = reader.windows(epoch)
        labels = []
        for b in blocks:
            with h5py.File(b.path, "r") as f:
                labels.append(f["labels"][b.start:b.stop])
        want = np.concatenate(labels)[perm]
        got = rows_of(reader, epoch)
        np.testing.assert_array_equal(got, want[:len(got)])
        np.testing.assert_array_equal(rows_of(reader, epoch, 9), got[9 * 16:])
    assert not np.array_equal(rows_of(reader, 0), rows_of(reader, 1))
    batches = [(x.numpy(), y.numpy()) for x, y in reader.dataset(tf, first_epoch=0, epochs=2)]
    assert np.array_equal(np.concatenate([y for _, y in batches]),
                          np.concatenate([rows_of(reader, 0), rows_of(reader, 1)]))
    assert all((x[:, 0, 0, 0] == (y % 251)).all() for x, y in batches)
    # resumed mid-epoch, the dataset goes on where the uninterrupted run was, and augmentation
    # is given the same (epoch, step) for every batch
    whole = np.concatenate([y.numpy() for _, y in
                            reader.dataset(tf, first_epoch=1, epochs=2, augment=stamped)])
    resumed = np.concatenate([y.numpy() for _, y in reader.dataset(
        tf, first_epoch=1, first_step=9, epochs=2, augment=stamped)])
    np.testing.assert_array_equal(whole[:, 0], np.concatenate([rows_of(reader, 1),
                                                               rows_of(reader, 2)]))
    steps = np.arange(len(whole)) // 16
    np.testing.assert_array_equal(whole[:, 1], np.where(steps < reader.steps, 1000 + steps,
                                                        2000 + steps - reader.steps))
    np.testing.assert_array_equal(resumed, whole[9 * 16:])
    assert reads == [len(reader.blocks)]  # one read, of every block, for all of the above


def test_reading_into_batch_order_gives_the_gathered_batches(shard_dir, tmp_path, monkeypatch):
    """Large rows are read straight into batch order (each chunk's rows scattered to their
    places, a batch begun in one window finished at the head of the next): the batches, from
    any step, are exactly the ones reading in file order and gathering gives, for plain and
    for lzf-compressed shards (read whole, then placed)."""
    import json
    import shutil

    from hpctrain.data import reader as reader_module
    from hpctrain.data.shards import ShardWriter

    mixed = tmp_path / "mixed"
    shutil.copytree(shard_dir, mixed)
    first = sorted(mixed.glob("train-*.h5"))[0]
    with h5py.File(first, "r") as f:  # the first shard again, compressed, same name
        images, labels = f["images"][:], f["labels"][:]
    w = ShardWriter(first, len(labels), images.shape[1:], "lzf", {})
    for x, y in zip(images, labels, strict=True):
        w.add(x, int(y), "")
    w.finish()
    manifest = json.loads((mixed / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["bytes"] = first.stat().st_size
    (mixed / "manifest.json").write_text(json.dumps(manifest))
    for data in (shard_dir, mixed):
        reader = RankReader.open(str(data), "train", 0, 1, batch_size=48, seed=7)
        reader.blocks = blocks_of(reader.pieces, 150)
        reader.window_blocks = 3
        want = {step: rows_of(reader, 2, step) for step in (0, 5, reader.steps - 1)}
        monkeypatch.setattr(reader_module, "SCATTER_BYTES", 1)
        assert reader.ordered
        for step, rows in want.items():
            got = list(reader.epoch_arrays(2, step))
            assert all(len(y) == 48 for _, y in got)
            np.testing.assert_array_equal(np.concatenate([y for _, y in got]), rows)
            assert all((x[:, 0, 0, 0] == (y % 251)).all() for x, y in got)
        monkeypatch.undo()

"""Stage an ImageNet-layout tree into sharded HDF5 (shards.py), in parallel and resumably.

    hpctrain stage imagefolder --source /data/imagenet --out /scratch/imagenet-256 --size 256
    srun --mpi=pmix -n 8 hpctrain stage imagefolder ...   # 8 MPI ranks, each its own shards
    hpctrain stage imagefolder ... --workers 4             # alone: 4 local worker processes

Rank 0 walks the tree once and broadcasts the plan: the images of each split in a seeded
random order (so every shard holds every class), cut into K shards. Shard k belongs to rank
k % R; a rank with several workers hands its shards to them. A shard that is already complete
for the same plan (same tree, size, policy, shard count, seed) is skipped, so a killed
staging is finished by running the same command again. Unreadable images are skipped, named
and counted; over `max_unreadable` (a fraction of all images) the staging fails without a
manifest, and `unreadable.txt` lists them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import multiprocessing as mp
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hpctrain import __version__
from hpctrain.atomic import file_sha256, write_text
from hpctrain.data.imagefolder import POLICIES, load_image, scan
from hpctrain.data.shards import (
    FORMAT,
    MANIFEST,
    ShardWriter,
    chunk_rows,
    complete_shard,
    remove_stale_temporaries,
    shard_name,
    write_manifest,
)
from hpctrain.environment import JobEnvironment, mpi_world
from hpctrain.progress import Progress
from hpctrain.validation import StagingError

SHARD_TARGET_BYTES = 1 << 30  # auto shard count: about 1 GiB of raw pixels per shard


@dataclass(frozen=True)
class Options:
    source: Path
    out: Path
    size: int
    shards: int = 0  # training shards; 0: about 1 GiB each, at least 8
    policy: str = "center-crop"
    compression: str | None = None  # None, "lzf" or "gzip"
    workers: int = 1  # local processes per rank
    max_unreadable: float = 0.001  # fraction of all images
    seed: int = 0

    def check(self) -> None:
        if not 8 <= self.size <= 4096:
            raise StagingError(f"--size {self.size}: expected 8-4096 pixels")
        if self.policy not in POLICIES:
            raise StagingError(f"--resize {self.policy!r}: choose from {', '.join(POLICIES)}")
        if self.shards < 0 or self.workers < 1:
            raise StagingError("--shards must be >= 0 and --workers >= 1")
        if not 0 <= self.max_unreadable <= 1:
            raise StagingError(f"--max-unreadable {self.max_unreadable}: a fraction in [0, 1]")


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    total: int
    files: list[tuple[str, int]] = field(repr=False)

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index, self.total)


@dataclass(frozen=True)
class Plan:
    plan_id: str
    root: Path
    classes: list[str]
    source_dirs: dict[str, str]
    fingerprint: str
    tasks: list[ShardTask]

    @classmethod
    def make(cls, opts: Options) -> Plan:
        tree = scan(opts.source)
        n_train = len(tree.files["train"])
        k_train = opts.shards or max(8, math.ceil(n_train * opts.size ** 2 * 3
                                                  / SHARD_TARGET_BYTES))
        counts = {"train": min(k_train, n_train)}
        counts["test"] = min(len(tree.files["test"]),
                             max(1, round(k_train * len(tree.files["test"]) / n_train)))
        rng = np.random.default_rng(opts.seed)
        tasks = []
        for split, k in counts.items():
            files = tree.files[split]
            order = rng.permutation(len(files))
            for i, part in enumerate(np.array_split(order, k)):
                tasks.append(ShardTask(split, i, k, [files[j] for j in part]))
        key = {"format": FORMAT, "tree": tree.fingerprint, "size": opts.size,
               "policy": opts.policy, "compression": opts.compression, "seed": opts.seed,
               "shards": counts}
        plan_id = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return cls(plan_id, tree.root, tree.classes, tree.source_dirs, tree.fingerprint, tasks)


def stage_shard(task: ShardTask, plan: Plan, opts: Options, progress=None) -> dict:
    """Write one shard (or find it complete); returns its manifest entry."""
    return seal_shard(write_shard(task, plan, opts, progress))


@dataclass
class Written:
    """A shard whose images are in its closed temporary file (`writer`), or that was found
    complete (`writer` None); `seal_shard` makes it durable and describes it."""
    task: ShardTask
    path: Path
    writer: ShardWriter | None
    bad: list[dict]


def write_shard(task: ShardTask, plan: Plan, opts: Options, progress=None) -> Written:
    """Decode, resize and write one shard's images into its temporary file, closed; or find
    the shard complete."""
    path = Path(opts.out) / task.name
    done = complete_shard(path, plan.plan_id)
    if done is not None:
        if progress:
            progress(len(task.files), 0)
        return Written(task, path, None, json.loads(done.get("unreadable", "[]")))
    remove_stale_temporaries(path)
    attrs = {"plan": plan.plan_id, "split": task.split, "shard": task.index,
             "of": task.total, "size": opts.size, "policy": opts.policy}
    writer = ShardWriter(path, len(task.files), (opts.size, opts.size, 3), opts.compression,
                         attrs)
    bad, pending, root = [], 0, f"{plan.root}{os.sep}"  # a str join: pathlib's cost 2 %
    try:
        for rel, label in task.files:
            try:
                image = load_image(root + rel, opts.size, opts.policy)
            except Exception as e:  # Pillow raises OSError, ValueError, SyntaxError, ...
                bad.append({"path": rel, "error": f"{type(e).__name__}: {e}"})
                if progress:
                    progress(0, 1)
            else:
                writer.add(image, label, rel)
            pending += 1
            if pending == 64 and progress:
                progress(pending, 0)
                pending = 0
        writer.attrs["unreadable"] = json.dumps(bad)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    if progress and pending:
        progress(pending, 0)
    return Written(task, path, writer, bad)


def seal_shard(w: Written) -> dict:
    """fsync and rename a written shard into place; its manifest entry (with the sha256 of
    the file as it is on disk)."""
    if w.writer is not None:
        w.writer.seal()
    return {"file": w.task.name, "split": w.task.split, "count": len(w.task.files) - len(w.bad),
            "bytes": w.path.stat().st_size, "sha256": file_sha256(w.path), "unreadable": w.bad,
            "skipped": w.writer is None}


def write_and_seal(tasks: list[ShardTask], plan: Plan, opts: Options, progress) -> list[dict]:
    """The shards one after another in this process, each one's seal (fsync, rename, sha256:
    waiting on the disk, and hashing, which releases the GIL) in a thread while the next one
    is decoded. An error in a seal ends the staging before the shard after next (the shards
    already written are still sealed: no temporary file is left behind)."""
    with ThreadPoolExecutor(1, thread_name_prefix="seal") as sealer:
        sealed: list[Future] = []
        for task in tasks:
            for f in sealed:
                if f.done():
                    f.result()  # raises a seal's error now
            sealed.append(sealer.submit(seal_shard, write_shard(task, plan, opts, progress)))
        return [f.result() for f in sealed]


# ---- local worker processes ------------------------------------------------------------------
_counters = None


def _init_worker(images, unreadable) -> None:
    global _counters
    _counters = (images, unreadable)


def _count(images: int, unreadable: int) -> None:
    assert _counters is not None
    with _counters[0].get_lock():
        _counters[0].value += images
    if unreadable:
        with _counters[1].get_lock():
            _counters[1].value += unreadable


def _worker(args) -> dict:
    task, plan, opts = args
    return stage_shard(task, plan, opts, progress=_count)


def run_tasks(tasks: list[ShardTask], plan: Plan, opts: Options, bar: Progress) -> list[dict]:
    if opts.workers == 1 or len(tasks) <= 1:
        bad = [0]

        def progress(images: int, unreadable: int) -> None:
            bad[0] += unreadable
            bar.update(images, f"{bad[0]} unreadable" if bad[0] else "")

        return write_and_seal(tasks, plan, opts, progress)
    # spawn: no fork of a process that may hold MPI or HDF5 state; files open in the worker
    ctx = mp.get_context("spawn")
    images, unreadable = ctx.Value("q", 0), ctx.Value("q", 0)
    results: list[dict] = []
    with ctx.Pool(min(opts.workers, len(tasks)), _init_worker, (images, unreadable)) as pool:
        pending = pool.imap_unordered(_worker, [(t, plan, opts) for t in tasks])
        seen = 0
        while len(results) < len(tasks):
            with contextlib.suppress(mp.TimeoutError):
                results.append(pending.next(timeout=0.5))
            now, bad = images.value, unreadable.value
            bar.update(now - seen, f"{bad} unreadable" if bad else "")
            seen = now
    return results


# ---- the whole staging -----------------------------------------------------------------------
def stage_imagefolder(opts: Options, env: JobEnvironment | None = None, log=print) -> dict:
    """Stage `opts.source` into `opts.out` on this rank's share of the shards; rank 0 writes
    the manifest. Returns the summary (the manifest plus timing) on every rank."""
    opts.check()
    env = env or JobEnvironment.detect()
    comm = mpi_world(env)
    start = time.time()
    plan, error = None, None
    if env.rank == 0:
        try:
            plan = Plan.make(opts)
            Path(opts.out).mkdir(parents=True, exist_ok=True)
        except (StagingError, OSError) as e:
            error = str(e)
    if comm is not None:  # Rank 0 walked the tree once; every rank gets the same plan
        plan, error = comm.bcast((plan, error), root=0)
    if error or plan is None:
        raise StagingError(error or "no plan")
    mine = plan.tasks[env.rank::env.size]
    prefix = f"[rank {env.rank}] " if env.size > 1 else ""
    images = sum(len(t.files) for t in mine)
    log(f"{prefix}staging {len(mine)} of {len(plan.tasks)} shards ({images:,} images) from "
        f"{plan.root} at {opts.size}x{opts.size} ({opts.policy}), {opts.workers} worker(s)")
    with Progress(images, "images", prefix=prefix, bar=None if env.rank == 0 else False) as bar:
        results = run_tasks(mine, plan, opts, bar)
    if comm is not None:  # every rank's shards to rank 0
        gathered = comm.gather(results, root=0)
        results = [r for part in gathered or [] for r in part]
    status: tuple[dict | None, str | None] = (None, None)
    if env.rank == 0:
        status = _finish(plan, opts, results, time.time() - start, env.size, log)
    if comm is not None:
        status = comm.bcast(status, root=0)
    summary, failure = status
    if failure:
        raise StagingError(failure)
    assert summary is not None
    return summary


def _finish(plan: Plan, opts: Options, results: list[dict], seconds: float, ranks: int,
            log) -> tuple[dict | None, str | None]:
    results.sort(key=lambda r: r["file"])
    bad = [b for r in results for b in r["unreadable"]]
    total = sum(len(t.files) for t in plan.tasks)
    out = Path(opts.out)
    for b in bad[:20]:
        log(f"unreadable: {plan.root / b['path']}: {b['error']}")
    if len(bad) > 20:
        log(f"... and {len(bad) - 20} more unreadable images")
    if len(bad) > opts.max_unreadable * total:
        write_text(out / "unreadable.txt", "".join(f"{plan.root / b['path']}\t{b['error']}\n"
                                                   for b in bad))
        return None, (f"{len(bad)} of {total} images unreadable ({100 * len(bad) / total:.2f} "
                      f"%), more than --max-unreadable {100 * opts.max_unreadable:g} %: listed "
                      f"in {out / 'unreadable.txt'}; shards written so far are kept, and a "
                      "rerun with a higher --max-unreadable finishes without redoing them")
    (out / "unreadable.txt").unlink(missing_ok=True)
    splits = {}
    for split in ("train", "test"):
        shards = [{k: r[k] for k in ("file", "count", "bytes", "sha256")}
                  for r in results if r["split"] == split]
        splits[split] = {"count": sum(s["count"] for s in shards),
                         "source_dir": plan.source_dirs[split],
                         "unreadable": sum(len(r["unreadable"]) for r in results
                                           if r["split"] == split),
                         "shards": shards}
    staged = sum(1 for r in results if not r["skipped"])
    manifest = {
        "format": FORMAT, "dataset": "imagefolder", "source": str(plan.root),
        "source_fingerprint": plan.fingerprint, "plan": plan.plan_id,
        "image_shape": [opts.size, opts.size, 3], "policy": opts.policy,
        "chunk_rows": chunk_rows(opts.size * opts.size * 3, 1 << 62),
        "compression": opts.compression or "none", "seed": opts.seed,
        "class_names": plan.classes, "num_classes": len(plan.classes), "splits": splits,
        "unreadable": bad, "staged_by": f"hpctrain {__version__}",
        "staged_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_manifest(out, manifest)
    rate = total / seconds if seconds > 0 else 0.0
    summary = {**manifest, "seconds": seconds, "images_per_s": rate, "ranks": ranks,
               "workers": opts.workers, "shards_staged": staged,
               "shards_skipped": len(results) - staged,
               "bytes": sum(s["bytes"] for sp in splits.values() for s in sp["shards"])}
    log(f"staged {splits['train']['count']:,} train + {splits['test']['count']:,} test images "
        f"({len(bad)} unreadable) into {out}/ in {seconds:.1f} s ({rate:,.0f} images/s, "
        f"{ranks} rank(s) x {opts.workers} worker(s)); {staged} shard(s) written, "
        f"{len(results) - staged} already complete; {summary['bytes'] / 1e9:.2f} GB; "
        f"manifest: {out / MANIFEST}")
    return summary, None


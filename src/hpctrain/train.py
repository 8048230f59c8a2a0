"""Horovod-distributed Keras training of one experiment config.

    hpctrain train --config jobs/configs/fmnist_cnn.yaml                     # one rank
    horovodrun -np 2 -H localhost:2 hpctrain train --config jobs/configs/fmnist_cnn.yaml
    srun --mpi=pmix hpctrain train --config ... --run-dir results/<exp>/<id>  # what sbatch runs
    python -m hpctrain.train --config ...                                   # the same

The recipe is Horovod's tensorflow2_keras_mnist.py: every distributed line says `# Horovod:`.
Only rank 0 writes files. Every run ends by checking that all ranks hold identical weights;
a mismatch is recorded in the report and fails the run.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import os
import sys
import time
from pathlib import Path

from hpctrain import reporting
from hpctrain.config import ConfigError, load_config
from hpctrain.environment import JobEnvironment
from hpctrain.fsutil import write_json
from hpctrain.paths import RESULTS_DIR
from hpctrain.staging import StagingError, check_h5

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_SYNC = 3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hpctrain train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="experiment YAML, optionally FILE:variant")
    p.add_argument("--run-dir", help="run directory (default results/<experiment>/<run-id>)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p.parse_args(argv)


def new_run_id(env: JobEnvironment) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if env.job_id:
        task = f"_{env.array_task_id}" if env.array_task_id else ""
        return f"{stamp}-job{env.job_id}{task}"
    return f"{stamp}-{os.getpid()}"


def main(argv=None) -> int:
    args = parse_args(argv)
    env = JobEnvironment.detect()
    try:  # everything a rank can check alone happens before TensorFlow and Horovod start
        cfg = load_config(args.config, args.overrides)
        cfg.data = str(Path(cfg.data).expanduser().resolve())
        check_h5(cfg.data)
    except (ConfigError, StagingError) as e:
        print(f"hpctrain train: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported (Keras 3 trap)
    return run(cfg, env, args.run_dir)


def _log(env: JobEnvironment, msg: str) -> None:
    elapsed = time.time() - _process_start()
    print(f"[rank {env.rank}/{env.size} {env.node_name} {elapsed:6.1f}s] {msg}", flush=True)


def run(cfg, env: JobEnvironment, run_dir: str | None) -> int:
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from hpctrain.callbacks import EpochRecorder, ShardedEvaluation, WeightCheckpoint
    from hpctrain.data import batches, describe, read_shard
    from hpctrain.models import build_model
    from hpctrain.tfcompat import require_keras2

    hvd.init()  # Horovod: initialize Horovod
    env = env.with_horovod(hvd)
    require_keras2(tf)

    # Horovod: pin one GPU per process by local rank (no-op on CPU-only nodes)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
    threads = cfg.threads or env.cpus_per_task or 1
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    tf.keras.utils.set_random_seed(cfg.seed)

    # Horovod: all ranks agree on one run directory, chosen by rank 0
    run_dir = Path(hvd_tf.broadcast_object(
        run_dir or str(RESULTS_DIR / cfg.experiment / new_run_id(env)), root_rank=0))
    node_names = hvd_tf.allgather_object(env.node_name)  # Horovod: where each rank runs
    if env.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", cfg.to_dict())
    _log(env, f"run dir {run_dir}; ranks on {node_names}; {threads} thread(s)")

    # Horovod: each rank reads only its own shard of the training and test sets
    info = describe(cfg.data)
    train = read_shard(cfg.data, "train", hvd.rank(), hvd.size(), cfg.train_limit)
    test = read_shard(cfg.data, "test", hvd.rank(), hvd.size(), cfg.test_limit)
    steps = len(train.labels) // cfg.batch_size
    if steps == 0:
        raise SystemExit(f"batch_size {cfg.batch_size} exceeds the {len(train.labels)} "
                         "training samples per rank")
    dataset = batches(tf, train.images, train.labels, cfg.batch_size, seed=cfg.seed + hvd.rank())

    model = build_model(cfg.model, info["input_shape"], info["num_classes"])
    scaled_lr = cfg.learning_rate * hvd.size()  # Horovod: scale the learning rate by ranks
    opt = make_optimizer(tf, cfg.optimizer, scaled_lr)
    opt = hvd.DistributedOptimizer(opt)  # Horovod: average gradients across ranks
    model.compile(loss="sparse_categorical_crossentropy", optimizer=opt, metrics=["accuracy"])

    recorder = EpochRecorder(steps=steps, global_batch=cfg.batch_size * hvd.size(),
                             thresholds=cfg.accuracy_thresholds)
    callbacks = [
        recorder.timer,  # first: epoch time excludes the evaluation below
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),  # Horovod: rank 0's initial state
        hvd.callbacks.MetricAverageCallback(),  # Horovod: average train metrics over ranks
        ShardedEvaluation(test.images, test.labels, batch_size=512),  # Horovod: allreduced
    ]
    if cfg.warmup_epochs > 0:
        # Horovod: ramp from the 1-rank rate to the scaled rate (Goyal et al. 2017).
        callbacks.insert(2, hvd.callbacks.LearningRateWarmupCallback(
            initial_lr=scaled_lr, warmup_epochs=cfg.warmup_epochs, steps_per_epoch=steps,
            momentum_correction=False))
    if env.is_main:  # Horovod: only rank 0 writes checkpoints and metrics
        if cfg.checkpoint:
            callbacks.append(WeightCheckpoint(run_dir / "checkpoints"))
        callbacks.append(recorder.writer(run_dir / "metrics.jsonl", print_fn=lambda m:
                                         _log(env, m)))
    else:
        callbacks.append(recorder.writer(None))

    startup_s = time.time() - _process_start()
    _log(env, f"{len(train.labels)} train / {len(test.labels)} test samples on this rank, "
              f"{steps} steps/epoch, global batch {cfg.batch_size * hvd.size()}, "
              f"lr {scaled_lr:g}; startup {startup_s:.1f} s")
    status, error = "completed", None
    try:
        model.fit(dataset, steps_per_epoch=steps, epochs=cfg.epochs, callbacks=callbacks,
                  verbose=0)
    except Exception as e:  # recorded in the report, then re-raised for a non-zero exit
        status, error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        if status == "failed" and env.is_main:
            _write_report(run_dir, cfg, env, info, recorder, startup_s, node_names,
                          None, status, error)

    _log(env, "training done; checking that ranks hold identical weights")
    # Horovod: every rank hashes its weights; all hashes must be equal
    digest = weights_digest(model.get_weights())
    digests = hvd_tf.allgather_object(digest)
    in_sync = len(set(digests)) == 1
    if env.is_main:
        path = _write_report(run_dir, cfg, env, info, recorder, startup_s, node_names,
                             digests, "completed" if in_sync else "ranks-out-of-sync", None)
        _log(env, f"report: {path} ({time.time() - _process_start():.1f} s since start)")
    if not in_sync:
        _log(env, f"ERROR: ranks hold different weights: {digests}")
        return EXIT_OUT_OF_SYNC
    return 0


def _write_report(run_dir, cfg, env, info, recorder, startup_s, node_names, digests, status,
                  error) -> Path:
    report = reporting.build_report(
        config=cfg.to_dict(), epochs=recorder.rows, env=env.as_dict(), node_names=node_names,
        dataset=info, startup_s=startup_s, train_s=recorder.train_seconds,
        total_s=time.time() - _process_start(),
        weight_digests=digests, status=status, error=error,
        versions=reporting.collect_versions(), run_dir=str(run_dir))
    return reporting.write_report(run_dir, report)


def make_optimizer(tf, name: str, lr: float):
    # Legacy (Keras 2) optimizers: Horovod 0.28.1's warm-up callback sets `optimizer.lr`,
    # and its momentum correction crashes with the new SGD (see shared/notes/stack.md).
    legacy = tf.keras.optimizers.legacy
    return {
        "sgd": lambda: legacy.SGD(learning_rate=lr, momentum=0.9),
        "rmsprop": lambda: legacy.RMSprop(learning_rate=lr),
        "adadelta": lambda: legacy.Adadelta(learning_rate=lr),
        "adam": lambda: legacy.Adam(learning_rate=lr),
    }[name]()


def weights_digest(weights) -> str:
    h = hashlib.sha256()
    for w in weights:
        h.update(memoryview(w.tobytes()))
    return h.hexdigest()


@functools.cache
def _process_start() -> float:
    import psutil

    return psutil.Process().create_time()


if __name__ == "__main__":
    sys.exit(main())

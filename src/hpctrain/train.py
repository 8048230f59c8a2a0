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
import json
import os
import sys
import time
from pathlib import Path

from hpctrain import checkpoint, reporting
from hpctrain.config import ConfigError, check_data, from_dict, load_config, parse_overrides
from hpctrain.environment import JobEnvironment
from hpctrain.fsutil import write_json
from hpctrain.paths import RESULTS_DIR
from hpctrain.preemption import EXIT_REQUEUE, REQUEUE_FILE, StopRequest
from hpctrain.staging import StagingError

EXIT_BAD_INPUT = 2
EXIT_OUT_OF_SYNC = 3


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hpctrain train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", help="experiment YAML, optionally FILE:variant (with --resume, "
                   "default: the run directory's config.json)")
    p.add_argument("--run-dir", help="run directory (default results/<experiment>/<run-id>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run directory's newest checkpoint (start afresh "
                   "if it has none)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p.parse_args(argv)


# What a resumed run may change; anything else would make it a different experiment.
RESUME_MAY_CHANGE = {"epochs", "target_accuracy", "expected_accuracy", "threads",
                     "accuracy_thresholds", "stop_check_steps"}


def resolve_config(args) -> tuple:
    """The config to run and the run directory (or None), checked before any rank starts."""
    run_dir = Path(args.run_dir).resolve() if args.run_dir else None
    if args.resume and run_dir is None:
        raise ConfigError("--resume needs --run-dir (the run to continue)")
    saved = run_dir / "config.json" if run_dir else None
    if args.config:
        cfg = load_config(args.config, args.overrides)
    elif args.resume and saved.is_file():
        cfg = from_dict({**json.loads(saved.read_text()), **parse_overrides(args.overrides)})
    else:
        raise ConfigError("--config is required" + (f" ({saved} does not exist)"
                                                    if args.resume else ""))
    check_data(cfg)
    has_checkpoint = run_dir is not None and checkpoint.latest(run_dir / "checkpoints")
    if has_checkpoint and not args.resume:
        raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume to continue "
                          "it, or choose another --run-dir")
    if args.resume and saved.is_file():
        before = json.loads(saved.read_text())
        changed = sorted(k for k, v in cfg.to_dict().items()
                         if k not in RESUME_MAY_CHANGE and before.get(k) != v)
        if changed:
            raise ConfigError(f"cannot resume {run_dir} with a different "
                              f"{', '.join(changed)} (only {', '.join(sorted(RESUME_MAY_CHANGE))}"
                              " may change)")
    return cfg, run_dir


def new_run_id(env: JobEnvironment) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if env.job_id:
        task = f"_{env.array_task_id}" if env.array_task_id else ""
        return f"{stamp}-job{env.job_id}{task}"
    return f"{stamp}-{os.getpid()}"


def main(argv=None) -> int:
    stop = StopRequest().install()  # first: a time-limit signal must never kill a rank
    args = parse_args(argv)
    env = JobEnvironment.detect()
    try:  # everything a rank can check alone happens before TensorFlow and Horovod start
        cfg, run_dir = resolve_config(args)
    except (ConfigError, StagingError) as e:
        print(f"hpctrain train: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported (Keras 3 trap)
    return run(cfg, env, run_dir, resume=args.resume, stop=stop)


def _log(env: JobEnvironment, msg: str) -> None:
    elapsed = time.time() - _process_start()
    print(f"[rank {env.rank}/{env.size} {env.node_name} {elapsed:6.1f}s] {msg}", flush=True)


def setup_tensorflow(tf, hvd, cfg, env: JobEnvironment) -> int:
    """Devices, threads, precision, XLA and seeds; returns the intra-op thread count."""
    # Horovod: pin one GPU per process by local rank (no-op on CPU-only nodes)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[hvd.local_rank() % len(gpus)], "GPU")
    threads = cfg.threads or env.cpus_per_task or 1
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    if cfg.precision != "float32":
        # float16/bfloat16 compute, float32 weights; the last layer stays float32 (models.py)
        tf.keras.mixed_precision.set_global_policy(cfg.precision)
    if cfg.xla:
        # Auto-clustering, not jit_compile: Horovod's allreduce ops must stay outside XLA.
        # On CPU it changes nothing unless TF_XLA_FLAGS=--tf_xla_cpu_global_jit is set.
        tf.config.optimizer.set_jit("autoclustering")
    tf.keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.keras.backend.experimental.enable_tf_random_generator()  # seedable, resettable dropout
    return threads


def load_data(tf, hvd, cfg):
    """(info, train shard or None, steps per epoch, test shard or None) for this rank."""
    from hpctrain.data import describe, read_shard

    if cfg.synthetic:
        info = {"dataset": "synthetic", "class_names": [], "num_classes": cfg.num_classes,
                "input_shape": tuple(cfg.input_shape), "source_sha256": {},
                "train_count": cfg.synthetic_steps * cfg.batch_size * hvd.size(),
                "test_count": 0}
        return info, None, cfg.synthetic_steps, None
    # Horovod: each rank reads only its own shard of the training and test sets
    info = describe(cfg.data)
    train = read_shard(cfg.data, "train", hvd.rank(), hvd.size(), cfg.train_limit)
    test = read_shard(cfg.data, "test", hvd.rank(), hvd.size(), cfg.test_limit)
    steps = len(train.labels) // cfg.batch_size
    if steps == 0:
        raise SystemExit(f"batch_size {cfg.batch_size} exceeds the {len(train.labels)} "
                         "training samples per rank")
    return info, train, steps, test


def run(cfg, env: JobEnvironment, run_dir: Path | None, resume: bool = False,
        stop: StopRequest | None = None) -> int:
    import horovod.tensorflow as hvd_tf
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf

    from hpctrain import callbacks as cb
    from hpctrain.data import batches, synthetic_batches
    from hpctrain.models import build_model
    from hpctrain.optim import lr_schedule_callback, make_optimizer
    from hpctrain.tfcompat import require_keras2

    hvd.init()  # Horovod: initialize Horovod
    env = env.with_horovod(hvd)
    require_keras2(tf)
    threads = setup_tensorflow(tf, hvd, cfg, env)

    # Horovod: all ranks agree on one run directory, chosen by rank 0
    run_dir = Path(hvd_tf.broadcast_object(
        str(run_dir or RESULTS_DIR / cfg.experiment / new_run_id(env)), root_rank=0))
    node_names = hvd_tf.allgather_object(env.node_name)  # Horovod: where each rank runs
    stop = stop or StopRequest()
    if env.is_main:
        stop.watch(run_dir)  # the batch script's STOP file (time limit near)
    found = checkpoint.latest(run_dir / "checkpoints") if resume and env.is_main else None
    # Horovod: rank 0 picks the checkpoint and broadcasts where it stands; all ranks restore it
    start_epoch, start_step, ckpt_path, state = hvd_tf.broadcast_object(
        (found[0], found[1], str(found[2]), checkpoint.read_state(found[2])) if found else
        (0, 0, None, {}), root_rank=0)
    if env.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", cfg.to_dict())
    where = f"epoch {start_epoch}" + (f" + {start_step} steps" if start_step else "")
    _log(env, f"run dir {run_dir}; ranks on {node_names}; {threads} thread(s)"
              + (f"; resuming after {where} from {ckpt_path}" if ckpt_path else
                 "; --resume: no checkpoint yet, starting afresh" if resume else ""))

    info, train, steps, test = load_data(tf, hvd, cfg)

    def dataset(first_epoch: int, first_step: int = 0):
        if cfg.synthetic:
            return synthetic_batches(tf, info["input_shape"], info["num_classes"],
                                     cfg.batch_size, seed=cfg.seed + hvd.rank())
        return batches(tf, train.images, train.labels, cfg.batch_size,
                       seed=cfg.seed + hvd.rank(), first_epoch=first_epoch,
                       first_step=first_step)

    model = build_model(cfg.model, info["input_shape"], info["num_classes"], cfg.activation)
    opt = make_optimizer(tf, cfg.optimizer, cfg.learning_rate, cfg.momentum)
    opt = hvd.DistributedOptimizer(opt)  # Horovod: average gradients across ranks
    if cfg.precision == "mixed_float16":
        # Dynamic loss scaling around Horovod's optimizer (Horovod cannot re-create a
        # LossScaleOptimizer from its config): the scaled gradients are averaged, then
        # unscaled, so every rank sees the same inf/nan and skips the same steps.
        opt = tf.keras.mixed_precision.LossScaleOptimizer(opt)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=opt, metrics=["accuracy"])
    if ckpt_path:
        checkpoint.restore(tf, ckpt_path, model, opt)

    recorder = cb.EpochRecorder(steps=steps, global_batch=cfg.batch_size * hvd.size(),
                                rows=state.get("rows", []), partial=state.get("partial"))
    stopper = cb.StopOnRequest(stop, every=cfg.stop_check_steps, steps=steps)
    segments = state.get("segments", []) + [{
        "first_epoch": start_epoch + 1, "first_step": start_step, "last_epoch": start_epoch,
        "last_step": 0, "job_id": env.job_id, "restart_count": env.restart_count,
        "nodes": sorted(set(node_names)), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "train_s": 0.0, "ended": "running"}]

    def bookkeeping() -> dict:
        segments[-1].update(last_epoch=len(recorder.rows), train_s=recorder.train_seconds,
                            last_step=recorder.partial["step"] if recorder.partial else 0)
        if stopper.reason:
            segments[-1]["ended"] = f"stopped ({stopper.reason})"
        return {"rows": recorder.rows, "segments": segments, "partial": recorder.partial}

    lr_callback = lr_schedule_callback(tf, cfg, hvd.size(), steps)
    reseed = cb.ReseedRandomLayers(cfg.seed)
    callbacks = [
        recorder.timer,  # first: epoch time excludes the evaluation below
        stopper,  # second: marks an epoch cut short for the callbacks after it
        reseed,
        hvd.callbacks.BroadcastGlobalVariablesCallback(0),  # Horovod: rank 0's initial state
        lr_callback,  # Horovod: scaled lr with warm-up
        hvd.callbacks.MetricAverageCallback(),  # Horovod: average train metrics over ranks
        cb.AverageNonTrainable(),  # Horovod: average BatchNorm statistics over ranks
    ]
    if test is not None:
        callbacks.append(cb.ShardedEvaluation(test.images, test.labels, batch_size=512))
    if cfg.target_accuracy:
        callbacks.append(cb.TargetAccuracyStop(cfg.target_accuracy))
    if env.is_main:  # Horovod: only rank 0 writes checkpoints and metrics
        callbacks.append(recorder.writer(run_dir / "metrics.jsonl",
                                         print_fn=lambda m: _log(env, m)))
        if cfg.checkpoint:
            callbacks.append(checkpoint.checkpoint_callback(tf, run_dir / "checkpoints",
                                                            bookkeeping))
    else:
        callbacks.append(recorder.writer(None))

    startup_s = time.time() - _process_start()
    _log(env, f"{len(train.labels) if train else 'synthetic'} train / "
              f"{len(test.labels) if test else 0} test samples on this rank, {steps} "
              f"steps/epoch, global batch {cfg.batch_size * hvd.size()}, lr "
              f"{cfg.learning_rate:g} x {hvd.size()} ranks; startup {startup_s:.1f} s")
    report = functools.partial(_write_report, run_dir, cfg, env, info, recorder, startup_s,
                               node_names, bookkeeping)
    def target_reached() -> bool:
        return bool(cfg.target_accuracy and recorder.rows and
                    (recorder.rows[-1]["val_accuracy"] or 0.0) >= cfg.target_accuracy)

    reached = target_reached()  # a resumed run that had already reached it trains nothing
    try:
        if start_step and not reached:  # finish the epoch a stop request cut short
            lr_callback.batch_offset = stopper.batch_offset = reseed.batch_offset = start_step
            model.fit(dataset(start_epoch, start_step), steps_per_epoch=steps - start_step,
                      epochs=start_epoch + 1, initial_epoch=start_epoch, callbacks=callbacks,
                      verbose=0)
            start_epoch += 1
        if not reached and not stopper.reason and start_epoch < cfg.epochs:
            model.fit(dataset(start_epoch), steps_per_epoch=steps, epochs=cfg.epochs,
                      initial_epoch=start_epoch, callbacks=callbacks, verbose=0)
    except Exception as e:  # recorded in the report, then re-raised for a non-zero exit
        if env.is_main:
            segments[-1]["ended"] = "failed"
            report(None, "failed", f"{type(e).__name__}: {e}")
        raise

    if stopper.reason and len(recorder.rows) < cfg.epochs and not target_reached():
        epoch, step = stopper.at
        where = f"epoch {epoch + 1} step {step}/{steps}"
        # Horovod: ranks hold the same weights at the checkpoint, too
        digests = hvd_tf.allgather_object(weights_digest(model.get_weights()))
        if env.is_main and cfg.checkpoint and len(set(digests)) == 1:
            (run_dir / REQUEUE_FILE).write_text(f"{where}\n")  # checkpoint safe: run again
        if env.is_main:
            report(digests, "stopped", f"{stopper.reason}: checkpointed at {where}; "
                   "continue with --resume (the batch script requeues itself)")
        hvd_tf.broadcast_object(None, root_rank=0)  # Horovod: exit together, after the report
        _log(env, f"stop requested ({stopper.reason}): checkpointed at {where}, exiting "
                  f"with {EXIT_REQUEUE} (requeue me)")
        return EXIT_REQUEUE if len(set(digests)) == 1 else EXIT_OUT_OF_SYNC
    segments[-1]["ended"] = "completed"

    _log(env, "training done; checking that ranks hold identical weights")
    # Horovod: every rank hashes its weights; all hashes must be equal
    digests = hvd_tf.allgather_object(weights_digest(model.get_weights()))
    in_sync = len(set(digests)) == 1
    if env.is_main:
        path = report(digests, "completed" if in_sync else "ranks-out-of-sync", None)
        _log(env, f"report: {path} ({time.time() - _process_start():.1f} s since start)")
    if not in_sync:
        _log(env, f"ERROR: ranks hold different weights: {digests}")
        return EXIT_OUT_OF_SYNC
    return 0


def _write_report(run_dir, cfg, env, info, recorder, startup_s, node_names, bookkeeping,
                  digests, status, error) -> Path:
    report = reporting.build_report(
        config=cfg.to_dict(), epochs=recorder.rows, env=env.as_dict(), node_names=node_names,
        dataset=info, startup_s=startup_s, train_s=recorder.train_seconds,
        total_s=time.time() - _process_start(), segments=bookkeeping()["segments"],
        weight_digests=digests, status=status, error=error,
        versions=reporting.collect_versions(), run_dir=str(run_dir))
    return reporting.write_report(run_dir, report)


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

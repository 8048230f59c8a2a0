"""Horovod-distributed Keras training of one experiment config, in four steps a reader can
follow: `set_up` (Horovod, TensorFlow, run directory), `restore` (where the run stands, the
data, the model), `fit` (one or two `model.fit` calls), `finish` (ranks-in-sync check,
report, exit code; or checkpoint-and-requeue after a stop request).

The recipe is Horovod's tensorflow2_keras_mnist.py: every distributed line says `# Horovod:`.
Only rank 0 writes files. Every run ends by checking that all ranks hold identical weights;
a mismatch is recorded in the report and fails the run (exit 3). A resumed run whose
checkpoints all fail verification stops with one line and exit 4, and one whose checkpoint
or report write finds the disk full with one line and exit 5 (the half-written checkpoint
removed, the older ones kept): the job script treats both as final. Imported only inside a
rank, after TF_USE_LEGACY_KERAS=1 is set (train/command.py).
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from pathlib import Path
from typing import Protocol

import horovod.tensorflow as hvd_tf
import horovod.tensorflow.keras as hvd
import tensorflow as tf

from hpctrain import environment, machine
from hpctrain.atomic import no_space, write_json
from hpctrain.data.layout import record_fingerprint
from hpctrain.environment import JobEnvironment
from hpctrain.experiment import TrainConfig, data_on
from hpctrain.resources import results_dir
from hpctrain.train import callbacks as cb
from hpctrain.train import checkpoint, predictions
from hpctrain.train.data_feed import DataFeed
from hpctrain.train.event_log import EventLog
from hpctrain.train.keras_compat import require_keras2
from hpctrain.train.losses import training_loss
from hpctrain.train.models import add_weight_decay, build_model
from hpctrain.train.optim import LAYERWISE, learning_rate, make_optimizer
from hpctrain.train.preemption import EXIT_REQUEUE, REQUEUE_FILE, StopRequest
from hpctrain.train.run_state import NoUsableCheckpoint, RunState
from hpctrain.train.step_schedule import StepSchedule
from hpctrain.train.step_timing import StepClock
from hpctrain.train.turns import Turns

EXIT_OUT_OF_SYNC = 3
EXIT_NO_CHECKPOINT = 4  # --resume, and no checkpoint left that verifies: rerunning won't help
EXIT_DISK_FULL = 5  # a write found the run directory's file system full: so would a rerun


class Reporting(Protocol):
    """Where rank 0's report goes (report/run_report.py's RunReporter, given by the command
    that starts the run): `mark` corrects an earlier segment's status, `write` writes the
    report from its fields and returns it, `draw` the pictures ({name: file})."""

    def mark(self, run_dir: Path, status: str, error: str | None = None) -> None: ...

    def write(self, run_dir: Path, **fields) -> dict: ...

    def draw(self, run_dir: Path, rows: list[dict], merged: dict | None,
             class_names: list[str], title: str) -> dict: ...


class Trainer:
    def __init__(self, cfg: TrainConfig, env: JobEnvironment, run_dir: Path | None,
                 reporter: Reporting, resume: bool = False, stop: StopRequest | None = None,
                 data_seen: dict[str, str] | None = None, allocator: str = ""):
        self.cfg, self.env, self.resume, self.reporter = cfg, env, resume, reporter
        self.allocator = allocator  # what train/malloc.py did, for the log
        self.data_seen = data_seen  # the data's fingerprint, if train/command.py took it
        self.run_dir: Path = run_dir or Path()  # chosen by rank 0 in set_up()
        self._requested_dir = run_dir
        self.stop = stop or StopRequest()
        self.events: EventLog | None = None  # rank 0's TensorBoard event files

    def run(self) -> int:
        self.set_up()
        try:
            self.restore()
            self.fit()
            return self.finish()
        except NoUsableCheckpoint as e:
            self.log(f"error: {e}")
            self._mark("failed", str(e))
            return EXIT_NO_CHECKPOINT
        except BaseException as e:  # recorded in the report, then re-raised: exit non-zero
            full = no_space(e)  # a full disk: one line instead of a traceback
            error = f"{type(e).__name__}: {e}" if full is None else \
                checkpoint.full_disk(self.run_dir, full)
            try:
                if self.env.is_main and hasattr(self, "recorder"):  # the model was built
                    self.state.end_segment("failed")
                    self.report(None, "failed", error)
                else:  # the report must not say what an earlier segment did
                    self._mark("failed", error)
                if self.events:
                    self.events.close()
            except Exception as again:
                if full is None or no_space(again) is None:
                    raise
                error += "; report.json could not be updated either"
            if full is None:
                raise
            self.log(f"error: {error}")
            return EXIT_DISK_FULL

    def record_data(self) -> None:
        """Rank 0: the data's fingerprint, which a resume checks before it starts
        (train/command.py); new data a resume was told to accept replaces it."""
        if not self.cfg.synthetic:
            change = record_fingerprint(self.run_dir, data_on(self.cfg, self.env.node_name),
                                        self.data_seen)
            if change:
                self.log(f"the data changed since the run started ({change}): resuming on "
                         "it (--accept-new-data)")

    def _mark(self, status: str, error: str | None = None) -> None:
        if self.env.is_main:
            self.reporter.mark(self.run_dir, status, error)

    # ---- 1. Horovod, TensorFlow, run directory -------------------------------------------
    def set_up(self) -> None:
        cfg = self.cfg
        # where startup goes (report: startup_phases_s): each mark ends a phase
        self.marks = {"process start": process_start(), "python, imports, config": time.time()}
        if cfg.timeline:  # Horovod: timeline started below, once the run directory is known
            os.environ["HOROVOD_TIMELINE"] = "DYNAMIC"
        self.env.tune_before_init()  # before MPI_Init: waiting ranks yield their cores
        hvd.init()  # Horovod: initialize Horovod
        self.marks["horovod init"] = time.time()
        self.env = env = self.env.with_horovod(hvd)
        require_keras2(tf)
        self.threads = configure_tensorflow(cfg, env)
        # what rank 0's report records (only rank 0 writes reports)
        self.hardware = {"node": machine.node(env.node_name),
                         "horovod": horovod_backend()} if env.is_main else None
        # Horovod: all ranks agree on one run directory, chosen by rank 0
        self.run_dir = Path(hvd_tf.broadcast_object(str(
            self._requested_dir or results_dir() / cfg.experiment / new_run_id(env)),
            root_rank=0))
        self.node_names = hvd_tf.allgather_object(env.node_name)  # Horovod: where ranks run
        if env.is_main:
            self.stop.watch(self.run_dir)  # the batch script's STOP file (time limit near)
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            write_json(self.run_dir / "config.json", cfg.to_dict())
            self.record_data()
        if cfg.timeline:  # Horovod: rank 0 records every rank's negotiation and allreduces
            hvd_tf.start_timeline(str(self.run_dir / "timeline.json"))
        self.marks["tensorflow setup, run directory"] = time.time()

    # ---- 2. where the run stands, data, model ----------------------------------------------
    def restore(self) -> None:
        cfg, env = self.cfg, self.env
        # Horovod: rank 0 picks the checkpoint and broadcasts where it stands
        self.state = state = RunState.pick(hvd_tf, self.run_dir, self.resume, env.is_main,
                                           functools.partial(checkpoint.readable, tf))
        self._mark("running")  # a resumed segment: the earlier report's status is history
        self.log(f"run dir {self.run_dir}; ranks on {self.node_names}; {self.threads} "
                 "thread(s)" + (f"; {self.allocator}" if self.allocator else "") +
                 (f"; {state.describe()}" if state.checkpoint else
                  "; --resume: no checkpoint yet, starting afresh" if self.resume else ""))
        # Horovod: each rank reads only its own shard of the training and test sets
        self.feed = DataFeed.open(tf, cfg, hvd.rank(), hvd.size(), env.node_name)
        self.marks["data open"] = time.time()
        self.model = build_model(cfg.model, self.feed.input_shape, self.feed.num_classes,
                                 cfg.activation, cfg.zero_init_residual)
        layerwise = cfg.optimizer in LAYERWISE  # LARS and LAMB decay weights themselves
        if not layerwise:
            add_weight_decay(self.model, cfg.weight_decay)  # in the loss: every rank alike
        opt = make_optimizer(tf, cfg.optimizer, cfg.learning_rate, cfg.momentum,
                             cfg.weight_decay if layerwise else 0.0, cfg.lars_eta)
        # One rank averages with nobody, yet Horovod's allreduce still waits for its
        # background thread's next cycle: 1 ms a step, 4 % of the CNN's step rate here
        if hvd.size() > 1 or cfg.accumulate_steps > 1:
            opt = hvd.DistributedOptimizer(  # Horovod: average gradients across ranks
                opt, backward_passes_per_step=cfg.accumulate_steps,  # (of N local batches)
                average_aggregated_gradients=True)
        self.clock = StepClock(hvd.rank(), env.node_name)
        if "step_timing" not in cfg.without:
            self.clock.instrument(self.model, opt)  # per-rank input / compute / allreduce
        if cfg.precision == "mixed_float16":
            # Dynamic loss scaling around Horovod's optimizer (Horovod cannot re-create a
            # LossScaleOptimizer from its config): the scaled gradients are averaged, then
            # unscaled, so every rank sees the same inf/nan and skips the same steps.
            opt = tf.keras.mixed_precision.LossScaleOptimizer(opt)
        self.model.compile(loss=training_loss(tf, cfg.label_smoothing), optimizer=opt,
                           metrics=["accuracy"])
        if state.checkpoint:
            checkpoint.restore(tf, state.checkpoint, self.model, opt)
        state.begin_segment(env, self.node_names)
        self._make_callbacks()
        if not {"lr_schedule", "reseed"} <= set(cfg.without):
            self.schedule.install(self.model)  # the rate and dropout seeds, in the graph
        self.marks["model build, checkpoint"] = time.time()
        self.startup_s = time.time() - process_start()
        self.log(f"{self.feed.describe()}, {self.feed.steps} steps/epoch, global batch "
                 f"{cfg.batch_size * hvd.size()}, lr {cfg.learning_rate:g} x {hvd.size()} "
                 f"ranks; startup {self.startup_s:.1f} s")

    def _make_callbacks(self) -> None:
        cfg, env, state, steps = self.cfg, self.env, self.state, self.feed.steps
        self.recorder = cb.EpochRecorder(steps=steps, global_batch=cfg.batch_size * hvd.size(),
                                         rows=state.rows, partial=state.partial)
        self.stopper = cb.StopOnRequest(self.stop, every=cfg.stop_check_steps, steps=steps,
                                        ranks=hvd.size())
        # Horovod: the rate scales with the global batch (ranks x accumulated batches)
        rate = learning_rate(cfg, hvd.size() * cfg.accumulate_steps)
        self.schedule = StepSchedule(
            cfg.seed, steps, None if "lr_schedule" in cfg.without else rate,
            reseed="reseed" not in cfg.without,
            sgd_momentum=cfg.momentum if cfg.optimizer == "sgd" else 0.0)
        mechanisms = {"stop_check": self.stopper, "step_timing": self.clock}
        skip = {id(mechanisms[name]) for name in cfg.without  # benchmarks only (experiment.py)
                if name in mechanisms}
        self.callbacks = [c for c in (
            self.recorder.timer,  # first: epoch time excludes the evaluation below
            self.stopper,  # second: marks an epoch cut short for the callbacks after it
            self.schedule,  # Horovod: scaled lr with warm-up; dropout seeds per step
            hvd.callbacks.BroadcastGlobalVariablesCallback(0),  # Horovod: rank 0's state
            hvd.callbacks.MetricAverageCallback(),  # Horovod: average metrics over ranks
            cb.AverageNonTrainable(),  # Horovod: average BatchNorm statistics over ranks
            self.clock,  # last with per-step hooks; gathers every rank's step times
        ) if id(c) not in skip]
        self.callbacks.append(tf.keras.callbacks.LambdaCallback(  # ends startup's last phase
            on_train_batch_end=lambda batch, logs: self.marks.setdefault(
                "first step (graph tracing)", time.time())))
        for c in self.callbacks:
            # None of the per-step hooks reads the step's loss or accuracy, so Keras need not
            # copy them out of the graph after every step (it does unless every callback
            # with per-step hooks says so; 5 % of the main thread's time in py-spy)
            c._supports_tf_logs = True
        if self.feed.test is not None:
            self.callbacks.append(cb.ShardedEvaluation(self.feed.test_batches))
        if cfg.target_accuracy:
            self.callbacks.append(cb.TargetAccuracyStop(cfg.target_accuracy))
        if env.is_main:  # Horovod: only rank 0 writes checkpoints and metrics
            self.callbacks.append(self.recorder.writer(self.run_dir / "metrics.jsonl",
                                                       print_fn=self.log))
            if cfg.checkpoint:
                self.callbacks.append(checkpoint.checkpoint_callback(
                    tf, self.run_dir / "checkpoints", self.snapshot, cfg.checkpoint_keep))
            self.events = events = EventLog(self.run_dir, state.epoch + 1)
            self.callbacks.append(tf.keras.callbacks.LambdaCallback(  # after the checkpoint
                on_epoch_end=lambda epoch, logs: events.epochs(self.recorder.rows)))
        else:
            self.callbacks.append(self.recorder.writer(None))
        turns = Turns.from_env()  # benchmarks only: two processes' epochs side by side
        if turns:
            first, last = turns.callbacks(tf, cfg.epochs)
            self.callbacks = [first, *self.callbacks, last]

    # ---- 3. training ---------------------------------------------------------------------
    def fit(self) -> None:
        cfg, state, steps = self.cfg, self.state, self.feed.steps
        epoch = state.epoch
        if self.target_reached():  # a resumed run that had already reached it trains nothing
            return
        if state.step:  # finish the epoch a stop request cut short
            for callback in (self.schedule, self.stopper):
                callback.batch_offset = state.step
            self.model.fit(self.feed.batches(epoch, state.step),
                           steps_per_epoch=steps - state.step, epochs=epoch + 1,
                           initial_epoch=epoch, callbacks=self.callbacks, verbose=0)
            epoch += 1
        if not self.stopper.reason and epoch < cfg.epochs:
            self.model.fit(self.feed.batches(epoch), steps_per_epoch=steps,
                           epochs=cfg.epochs, initial_epoch=epoch,
                           callbacks=self.callbacks, verbose=0)

    def target_reached(self) -> bool:
        rows = self.recorder.rows
        return bool(self.cfg.target_accuracy and rows and
                    (rows[-1]["val_accuracy"] or 0.0) >= self.cfg.target_accuracy)

    # ---- 4. stop-and-requeue, or the ranks-in-sync check and the report -----------------
    def finish(self) -> int:
        # Horovod: every rank hashes its weights; all hashes must be equal
        digests = hvd_tf.allgather_object(weights_digest(self.model.get_weights()))
        in_sync = len(set(digests)) == 1
        stopped = self.stopper.reason and len(self.recorder.rows) < self.cfg.epochs \
            and not self.target_reached()
        if stopped:
            return self._checkpointed_stop(digests, in_sync)
        self.state.end_segment("completed")
        if self.cfg.timeline:
            hvd_tf.stop_timeline()  # Horovod: flush timeline.json
        self.log("training done; ranks hold identical weights" if in_sync else
                 f"ERROR: ranks hold different weights: {digests}")
        drawn = self.draw() if self.cfg.pictures else None
        if self.env.is_main:
            report = self.report(digests, "completed" if in_sync else "ranks-out-of-sync",
                                 None, drawn)
            self.log(f"report: {self.run_dir / 'report.json'} "
                     f"({time.time() - process_start():.1f} s since start)")
            files = (report.get("pictures") or {}).get("files") or {}
            if self.events:
                self.events.finish(self.recorder.rows, report["time_to_accuracy_s"],
                                   {name: self.run_dir / f for name, f in files.items()})
        return 0 if in_sync else EXIT_OUT_OF_SYNC

    def _checkpointed_stop(self, digests: list[str], in_sync: bool) -> int:
        epoch, step = self.stopper.at or (0, 0)
        where = f"epoch {epoch + 1} step {step}/{self.feed.steps}"
        if self.env.is_main:
            if self.cfg.checkpoint and in_sync:  # the checkpoint is safe: run again
                (self.run_dir / REQUEUE_FILE).write_text(f"{where}\n")
            self.report(digests, "stopped", f"{self.stopper.reason}: checkpointed at {where}; "
                        "continue with --resume (the batch script requeues itself)")
            if self.events:
                self.events.close()
        hvd_tf.broadcast_object(None, root_rank=0)  # Horovod: exit together, after the report
        self.log(f"stop requested ({self.stopper.reason}): checkpointed at {where}, exiting "
                 f"with {EXIT_REQUEUE} (requeue me)")
        return EXIT_REQUEUE if in_sync else EXIT_OUT_OF_SYNC

    def draw(self) -> dict:
        """The report's pictures, after training (their time is not training time): every
        rank predicts its share of the test set, all agree on the examples to show, rank 0
        draws. A drawing error is reported, never fails the run."""
        t0 = time.time()
        part, merged = None, None
        if self.feed.test is not None:
            model = self.model
            part = predictions.predict_share(lambda x: model(x, training=False).numpy(),
                                             self.feed.test_batches(), self.feed.num_classes)
        # Horovod: confusion counts and candidates' labels from every rank, images not yet
        metas = hvd_tf.allgather_object(None if part is None else predictions.metadata(part))
        if part is not None and all(m is not None for m in metas):
            choice = predictions.select(metas)  # the same on every rank
            # Horovod: only the chosen images travel
            images = hvd_tf.allgather_object(predictions.chosen_images(part, choice,
                                                                       hvd.rank()))
            merged = predictions.assemble(metas, choice, images)
        files, error = {}, None
        if self.env.is_main:
            try:
                files = self.reporter.draw(
                    self.run_dir, self.recorder.rows, merged,
                    list(self.feed.info.get("class_names") or []),
                    f"{self.cfg.experiment}: {self.cfg.model}")
            except Exception as e:  # noqa: BLE001 - the trained model matters more
                error = f"{type(e).__name__}: {e}"
                self.log(f"WARNING: pictures not drawn: {error}")
        return {"files": files, "seconds": round(time.time() - t0, 2), "error": error,
                "confusion": None if merged is None else merged["counts"].tolist()}

    # ---- helpers -------------------------------------------------------------------------
    def snapshot(self) -> dict:
        return self.state.snapshot(self.recorder.rows, self.recorder.partial,
                                   self.recorder.train_seconds, self.stopper.reason)

    def report(self, digests: list[str] | None, status: str, error: str | None,
               pictures: dict | None = None) -> dict:
        """Writes report.json and report.md; returns the report."""
        return self.reporter.write(
            self.run_dir, config=self.cfg.to_dict(), epochs=self.recorder.rows,
            env=self.env.as_dict(), node_names=self.node_names, dataset=self.feed.info,
            startup_s=self.startup_s, startup_marks=self.marks,
            train_s=self.recorder.train_seconds, total_s=time.time() - process_start(),
            segments=self.snapshot()["segments"], checkpoints_skipped=self.state.skipped,
            weight_digests=digests, status=status, error=error, threads=self.threads,
            started_unix=process_start(), pictures=pictures, hardware=self.hardware,
            model_size={
                "parameters": int(self.model.count_params()),
                "trainable_parameters": int(sum(w.shape.num_elements() or 0
                                                for w in self.model.trainable_weights)),
                "gradient_bytes": int(sum((w.shape.num_elements() or 0) * w.dtype.size
                                          for w in self.model.trainable_weights))})

    def log(self, msg: str) -> None:
        elapsed = time.time() - process_start()
        print(f"[rank {self.env.rank}/{self.env.size} {self.env.node_name} {elapsed:6.1f}s] "
              f"{msg}", flush=True)


def horovod_backend() -> dict:
    """How this run's ranks talk: Horovod's controller and tensor operations, its fusion and
    cycle settings, the CUDA / cuDNN / NCCL it was built with (None without)."""
    build = tf.sysconfig.get_build_info()
    gpu = bool(tf.config.list_physical_devices("GPU"))
    controller = "MPI" if hvd_tf.mpi_enabled() else "Gloo" if hvd_tf.gloo_enabled() else None
    return {"controller": controller,
            "tensor_ops": "NCCL" if gpu and hvd_tf.nccl_built() else controller,
            "nccl_built": bool(hvd_tf.nccl_built()),
            "fusion_threshold_bytes": int(os.environ.get("HOROVOD_FUSION_THRESHOLD",
                                                         JobEnvironment.HOROVOD_FUSION_BYTES)),
            "cycle_time_ms": float(os.environ.get("HOROVOD_CYCLE_TIME",
                                                  JobEnvironment.HOROVOD_CYCLE_MS)),
            "hierarchical_allreduce": os.environ.get("HOROVOD_HIERARCHICAL_ALLREDUCE") == "1",
            "cuda": build.get("cuda_version"), "cudnn": build.get("cudnn_version")}


def configure_tensorflow(cfg: TrainConfig, env: JobEnvironment) -> int:
    """Devices, threads, precision, XLA and seeds; returns the intra-op thread count."""
    # Horovod: pin one GPU per process by local rank (no-op on CPU-only nodes)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if gpus:
        tf.config.set_visible_devices(gpus[env.local_rank % len(gpus)], "GPU")
    threads = cfg.threads or env.default_threads()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
    # Both set on every run, so a second run in the same process (a notebook, a test)
    # never inherits the first one's.
    # float16/bfloat16 compute, float32 weights; the last layer stays float32 (models.py)
    tf.keras.mixed_precision.set_global_policy(cfg.precision)
    # Auto-clustering, not jit_compile: Horovod's allreduce ops must stay outside XLA.
    # On CPU it changes nothing unless TF_XLA_FLAGS=--tf_xla_cpu_global_jit is set.
    tf.config.optimizer.set_jit("autoclustering" if cfg.xla else False)
    tf.keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    tf.keras.backend.experimental.enable_tf_random_generator()  # seedable, resettable dropout
    return threads


def new_run_id(env: JobEnvironment) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if env.job_id:
        task = f"_{env.array_task_id}" if env.array_task_id else ""
        return f"{stamp}-job{env.job_id}{task}"
    return f"{stamp}-{os.getpid()}"


def weights_digest(weights) -> str:
    h = hashlib.sha256()
    for w in weights:
        h.update(memoryview(w.tobytes()))
    return h.hexdigest()


@functools.cache
def process_start() -> float:
    return environment.process_start()

"""Benchmark 1's third part: what hpctrain costs in proportion to the model's compute, which
the null-model profile cannot see, measured on the workshop CNN within ONE process. Between
two processes the rate of this host drifts by about 6 %; within one, epochs of a few hundred
milliseconds alternate closely enough to resolve 1 %.

Variants, one epoch of `--steps` steps per sample:
- plain: plain Keras `model.fit`, as the baseline of benchmark 1.
- a second copy of the plain model: the control. Two copies of one model can run at
  different speeds (where their buffers land); it shows what a difference between copies
  is worth.
- op determinism: a third copy, traced with `enable_op_determinism()` (hpctrain's default;
  TensorFlow then builds e.g. its sparse cross-entropy from a dozen small ops, not one).
- Horovod initialised with one rank beside the plain model's graph, its background thread
  waking every HOROVOD_CYCLE_TIME: 1 ms (Horovod's default, HOROVOD_DEFAULT_CYCLE_MS) and
  JobEnvironment.ONE_RANK_CYCLE_MS (hpctrain's with one rank).
  `hvd.init()` before the sample, `hvd.shutdown()` after: with the Gloo controller, since
  MPI cannot be initialised twice in a process. hpctrain's one-rank runs use MPI; the
  thread's cycle is the same loop.

Every epoch is timed by a callback from its first step's start to its last step's end
(fit()'s set-up and teardown are not in it), on in-memory batches (data/reader.
memory_batches, tf.data's autotuning off: its teardown made fit() wait for the autotuner's
next wake-up, up to 1.3 s here). Variants alternate, in reverse order every other round.

    horovodrun --gloo -np 1 -H localhost:1 python -m hpctrain.bench.compute_costs \\
        --data data/fashion-mnist.h5 --rounds 100

Prints one line, RESULT {json}: per variant its ms per step, round by round.
"""

from __future__ import annotations

import argparse
import json
import os
import time

PLAIN = "plain Keras"
CONTROL = "plain Keras, a second copy (control)"
DETERMINISM = "op determinism"
HOROVOD_DEFAULT_CYCLE_MS = "1"
LAUNCHER = ["horovodrun", "--gloo", "-np", "1", "-H", "localhost:1"]  # runs.compute_costs_run
MODULE = "hpctrain.bench.compute_costs"  # not __name__: that is __main__ under python -m
COMMAND = " ".join([*LAUNCHER, "python", "-m", MODULE])


def horovod_variant(cycle_ms: str) -> str:
    return f"Horovod initialised, {cycle_ms} ms cycle"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="staged HDF5 file (hpctrain stage)")
    p.add_argument("--rounds", type=int, default=100)
    p.add_argument("--steps", type=int, default=30, help="steps per sample (one epoch)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--train-limit", type=int, default=12800, help="images held in memory")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from hpctrain.environment import JobEnvironment

    if JobEnvironment.detect().launcher != "horovodrun":  # MPI would abort at the 2nd init
        raise SystemExit("compute_costs initialises Horovod before every sample and shuts it "
                         f"down after: run it as `{COMMAND} ...` (Gloo; MPI cannot be "
                         "initialised twice in a process)")
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # Horovod needs Keras 2: Keras 3 breaks its averaging
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import h5py
    import horovod.tensorflow.keras as hvd
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config  # op determinism off: internal

    from hpctrain.bench.harness import alternate
    from hpctrain.data.batches import memory_batches
    from hpctrain.train.models import build_model

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, args.threads))
    tf.keras.utils.set_random_seed(42)  # op determinism refuses unseeded dropout
    with h5py.File(args.data, "r") as f:
        x, y = f["train/images"][:args.train_limit], f["train/labels"][:args.train_limit]
        classes = len(json.loads(f.attrs["class_names"]))
    batches = memory_batches(tf, x, y, args.batch, seed=42)

    def determinism(on: bool) -> None:
        (tf_config.enable_op_determinism if on else tf_config.disable_op_determinism)()

    def model(deterministic: bool):
        determinism(deterministic)
        m = build_model("cnn", x.shape[1:], classes)
        m.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  optimizer=tf.keras.optimizers.Adam(0.001))
        m.fit(batches, steps_per_epoch=3, epochs=1, verbose=0)  # traced with its setting
        determinism(False)
        return m

    class EpochClock(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.ms_per_step = (time.perf_counter() - self.start) * 1e3 / args.steps

    def sample(m, deterministic: bool = False, cycle_ms: str | None = None):
        def one() -> float:
            if cycle_ms:
                os.environ["HOROVOD_CYCLE_TIME"] = cycle_ms
                hvd.init()  # Horovod: its background thread starts
            determinism(deterministic)
            clock = EpochClock()
            try:
                m.fit(batches, steps_per_epoch=args.steps, epochs=1, verbose=0,
                      callbacks=[clock])
            finally:
                determinism(False)
                if cycle_ms:
                    hvd.shutdown()  # Horovod: the thread stops
            return clock.ms_per_step
        return one

    plain, det = model(False), model(True)
    cycles = [HOROVOD_DEFAULT_CYCLE_MS, JobEnvironment.ONE_RANK_CYCLE_MS]
    variants = {PLAIN: sample(plain), CONTROL: sample(model(False)),
                DETERMINISM: sample(det, deterministic=True),
                # the plain model's own graph, Horovod's thread beside it
                **{horovod_variant(c): sample(plain, cycle_ms=c) for c in cycles}}
    samples = alternate(variants, args.rounds, log=lambda msg: None)
    print("RESULT " + json.dumps({"ms_per_step": samples, "steps": args.steps,
                                  "batch": args.batch, "threads": args.threads}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The baselines hpctrain is measured against: plain Keras `model.fit` on the same model and
the same staged data held in memory (the best in-memory tf.data pipeline we have: one gather
per batch, data/reader.memory_batches), and with `--horovod` Horovod's own Keras recipe
(tensorflow2_keras_mnist.py: scaled rate, DistributedOptimizer, broadcast, metric
averaging) around the same fit. Prints one JSON line: images/s over epochs 2..N (all ranks),
the first epoch, startup, and with --target the time from the process' start to the end of
the evaluation that first reaches that test accuracy (evaluation after every epoch, counted,
as a user's validation_data would be). On N ranks each evaluates its own 1/N of the test
set and the hits are summed over ranks, as hpctrain does (and as Horovod's ImageNet example
shards its validation), so every rank sees the same accuracy and stops at the same epoch.

    python -m hpctrain.bench.plain_keras --data data/fashion-mnist.h5 --model cnn \\
        --epochs 3 --batch 128 --threads 2 --optimizer adam --lr 0.001
    horovodrun -np 2 -H localhost:2 python -m hpctrain.bench.plain_keras --horovod ...
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # Horovod needs Keras 2: Keras 3 breaks its averaging
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="staged HDF5 file (hpctrain stage)")
    p.add_argument("--model", default="cnn")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch", type=int, default=128, help="per rank")
    p.add_argument("--threads", type=int, default=2, help="intra-op threads per rank")
    p.add_argument("--optimizer", default="adam")
    p.add_argument("--lr", type=float, default=0.001, help="for one rank (x ranks)")
    p.add_argument("--train-limit", type=int, default=0)
    p.add_argument("--test-limit", type=int, default=0,
                   help="with --target: evaluate on the first N test images (0: all)")
    p.add_argument("--target", type=float, default=0.0,
                   help="stop at this test accuracy, evaluating after every epoch")
    p.add_argument("--deterministic", action="store_true", help="TensorFlow op determinism")
    p.add_argument("--precision", default="float32",
                   help="Keras mixed-precision policy: float32 or mixed_bfloat16")
    p.add_argument("--horovod", action="store_true", help="Horovod's Keras recipe")
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from hpctrain.environment import process_start

    start = process_start()  # startup counted from the process' start
    args = parse(argv)
    import h5py
    import numpy as np
    import tensorflow as tf

    from hpctrain.data.batches import memory_batches
    from hpctrain.train.models import build_model
    from hpctrain.train.optim import make_optimizer
    from hpctrain.train.turns import Turns

    rank, size = 0, 1
    if args.horovod:
        import horovod.tensorflow.keras as hvd

        hvd.init()  # Horovod: initialize
        rank, size = hvd.rank(), hvd.size()
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(2, args.threads))
    tf.keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    with h5py.File(args.data, "r") as f:
        n = args.train_limit or len(f["train/labels"])
        # Horovod: each rank its contiguous share of the training set
        lo, hi = rank * n // size, (rank + 1) * n // size
        x, y = f["train/images"][lo:hi], f["train/labels"][lo:hi]
        # the test set only when evaluating (--target), each rank its own share (Horovod);
        # never in the timed epochs
        m = args.test_limit or len(f["test/labels"])
        lo_t, hi_t = rank * m // size, (rank + 1) * m // size
        xt, yt = ((f["test/images"][lo_t:hi_t], f["test/labels"][lo_t:hi_t]) if args.target
                  else (None, None))
        classes = len(json.loads(f.attrs["class_names"]))
    steps = len(y) // args.batch
    train = memory_batches(tf, x, y, args.batch, seed=args.seed + rank)
    tf.keras.mixed_precision.set_global_policy(args.precision)  # float32 outputs: build_model
    model = build_model(args.model, x.shape[1:], classes)
    opt = make_optimizer(tf, args.optimizer, args.lr * size, 0.9)  # Horovod: lr x ranks
    if args.horovod:
        opt = hvd.DistributedOptimizer(opt)  # Horovod: average gradients
    model.compile(loss="sparse_categorical_crossentropy", optimizer=opt, metrics=["accuracy"])

    def accuracy() -> float:
        """Test accuracy over all ranks' shards: this rank's hits, summed by Horovod."""
        assert xt is not None and yt is not None  # loaded with --target
        hit = model.evaluate(xt, yt, batch_size=512, verbose=0)[1] * len(yt)
        if not args.horovod:
            return hit / len(yt)
        total = hvd.allreduce(np.array([hit, len(yt)], np.float64), op=hvd.Sum,
                              name="plain_eval")  # Horovod: sum over ranks
        return float(total[0] / total[1])

    times: list[tuple[float, float]] = []  # (epoch seconds, wall time at the epoch's end)
    hits: dict = {"at": None}

    class Clock(tf.keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds = time.perf_counter() - self.t0
            if args.target:  # the evaluation a user's validation_data would cost, counted
                acc = accuracy()
                if acc >= args.target and hits["at"] is None:
                    hits["at"], hits["acc"], hits["epoch"] = time.time() - start, acc, \
                        epoch + 1
                    self.model.stop_training = True
            times.append((seconds, time.time() - fit_start))

    callbacks: list = [Clock()]
    if args.horovod:
        callbacks[:0] = [hvd.callbacks.BroadcastGlobalVariablesCallback(0),  # Horovod
                         hvd.callbacks.MetricAverageCallback()]  # Horovod: average metrics
    turns = Turns.from_env()  # epochs side by side with another process (train/turns.py)
    if turns:
        first, last = turns.callbacks(tf, args.epochs)
        callbacks = [first, *callbacks, last]
    fit_start = time.time()
    model.fit(train, steps_per_epoch=steps, epochs=args.epochs, callbacks=callbacks,
              verbose=0)
    later = [s for s, _ in times[1:]] or [times[0][0]]
    result = {"images_per_s": steps * args.batch * size * len(later) / sum(later),
              "first_epoch_s": times[0][0], "startup_s": fit_start - start,
              "epochs": len(times), "ranks": size, "epoch_s": [s for s, _ in times],
              "images_per_epoch": steps * args.batch * size,
              "time_to_target_s": hits["at"], "target_accuracy": hits.get("acc"),
              "target_epoch": hits.get("epoch"), "seed": args.seed}
    if rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

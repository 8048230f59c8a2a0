"""Training, step 3 of the pipeline: one experiment config (hpctrain/experiment.py) on every
Horovod rank.

    command.py      `hpctrain train`: check config and run directory, then start the trainer
    trainer.py      set up -> restore -> fit -> finish, the Horovod recipe
    run_state.py    where a run stands (epoch, step, metrics, segments), resumed from here
    data_feed.py    what one rank trains on: its shard of the staged data, or synthetic
    models.py       the model zoo
    optim.py        optimizers, warm-up and learning-rate schedules
    layerwise.py    LARS and LAMB, for large global batches
    losses.py       the training loss (label smoothing)
    callbacks.py    timing, exact sharded evaluation, BatchNorm averaging, dropout reseeding,
                    stop on request or at a target accuracy
    checkpoint.py   full-state checkpoints, written atomically and verifiably by rank 0
    run_lock.py     one writer per run directory (a lock rank 0 holds while it lives)
    preemption.py   stop requests: time limit near, preemption (signals, STOP file)
    keras_compat.py which Keras is behind tf.keras (Horovod needs Keras 2)
    step_timing.py  per-rank step times: input, compute, allreduce, other
    predictions.py  the test-set predictions behind the report's pictures, from every rank
    inference.py    a finished run's model and image preparation (`hpctrain predict`)

Nothing here imports TensorFlow at import time except trainer.py, callbacks.py,
step_timing.py and layerwise.py, which run only inside a rank.
"""

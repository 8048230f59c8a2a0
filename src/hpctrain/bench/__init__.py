"""Benchmarks (`make bench`, `python -m hpctrain.bench`): hpctrain measured against the best
alternative we can write, side by side on one machine, ratios first.

    harness.py           alternation (A B A B), medians and min-max, paired ratios
    runs.py              one run as a sample: `hpctrain train` or the plain baseline
    plain_keras.py       the baseline: plain Keras fit on in-memory data; Horovod's recipe
    trainer_overhead.py  1. hpctrain vs plain Keras, and each per-step mechanism's cost
    compute_costs.py     1. what grows with the model's compute, the CNN in one process
    input_pipeline.py    2. the streaming HDF5 reader vs the best in-memory tf.data pipeline
    horovod_overhead.py  3. 2 ranks x 1 thread vs 1 rank x 2 threads, and tunings
    time_to_accuracy.py  4. to 90 % test accuracy: hpctrain's recipe vs the workshop script
    startup.py           6. process start to the first step, phase by phase
    determinism.py       7. what TensorFlow op determinism (the default) costs
    staging.py           8. `hpctrain stage imagefolder` vs a bare decode + resize loop
    __main__.py          runs them, writes results/benchmarks/<name>.json and README.md
"""

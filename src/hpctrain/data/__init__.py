"""Data, step 1 of the pipeline: stage a data set into HDF5 once, then read it on every rank.

    stage_mnist.py   MNIST-format sources (IDX files or a Keras .npz) -> one HDF5 file
    layout.py        the staged file's layout, and the checks run before any job or rank
    reader.py        one rank's shard of a staged file, as shuffled tf.data batches
"""

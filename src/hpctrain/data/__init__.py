"""Data, step 1 of the pipeline: stage a data set into HDF5 once, then read it on every rank.

    stage_mnist.py        MNIST-format sources (IDX files or a Keras .npz) -> one HDF5 file
    imagefolder.py        an ImageNet-layout image tree: scan it, decode one image to RGB
    stage_imagefolder.py  tree -> HDF5 shards + manifest (MPI ranks, worker processes, resume)
    shards.py             the shard files and manifest.json
    layout.py             both layouts, and the checks run before any job or rank
    reader.py             one rank's share, streamed as shuffled tf.data batches
    window_io.py          a shuffle window's rows, read into reused aligned buffers
    batches.py            the tf.data side: batches sliced or gathered, augmented; in memory
    augment.py            batched random crop + flip, centre crop for evaluation
    local_copy.py         a node's share copied to node-local disk inside a job
"""

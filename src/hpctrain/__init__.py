"""hpctrain: HDF5 staging, templated sbatch and Horovod-distributed Keras training on Slurm."""

__version__ = "0.1.0"

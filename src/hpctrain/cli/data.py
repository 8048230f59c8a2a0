"""`hpctrain stage`: MNIST-format files or an ImageNet-layout tree into HDF5, and the
node-local copies of a job."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hpctrain.cli.options import config_options


def _stage(args) -> int:
    from hpctrain.data.stage_mnist import stage

    summary = stage(args.dataset, Path(args.source), Path(args.out),
                    compression=None if args.compression == "none" else args.compression)
    print(f"staged {summary['counts']['train']} train + {summary['counts']['test']} test "
          f"images from {summary['format']} into {summary['out']} "
          f"({summary['bytes'] / 1e6:.1f} MB)")
    return 0


def _stage_imagefolder(args) -> int:
    from hpctrain.data.stage_imagefolder import Options, stage_imagefolder
    from hpctrain.environment import JobEnvironment

    env = JobEnvironment.detect()
    opts = Options(source=Path(args.source), out=Path(args.out), size=args.size,
                   shards=args.shards, policy=args.resize,
                   compression=None if args.compression == "none" else args.compression,
                   workers=args.workers or env.default_threads(),
                   max_unreadable=args.max_unreadable, seed=args.seed)
    log = print if env.rank == 0 else (lambda line: print(line, file=sys.stderr))
    stage_imagefolder(opts, env, log=log)
    return 0


def _stage_local_copy(args) -> int:
    from hpctrain.data.layout import check_data
    from hpctrain.data.local_copy import copy_for_node, remove_stale
    from hpctrain.environment import JobEnvironment
    from hpctrain.experiment import load_config

    cfg = load_config(args.config, args.overrides)
    check_data(cfg)
    env = JobEnvironment.detect()
    dest = Path(args.dest).resolve()
    remove_stale(dest.parent, env.node_name, keep=dest)
    copy_for_node(cfg.data, args.dest, env.node_name, env.node_index, env.num_nodes or 1,
                  args.ranks_per_node, {"train": cfg.train_limit, "test": cfg.test_limit})
    return 0


def add(sub) -> None:
    s = sub.add_parser("stage", help="stage data into HDF5: MNIST-format files or an "
                       "ImageNet-layout image tree",
                       description="Stage a data set into HDF5 once; every rank then reads "
                       "its share fast. `hpctrain stage KIND --help` for each kind.")
    kinds = s.add_subparsers(dest="dataset", required=True, metavar="KIND")
    for name in ("fashion-mnist", "mnist"):
        m = kinds.add_parser(name, help=f"{name} IDX files or a Keras .npz -> one HDF5 file",
                             epilog="example: hpctrain stage fashion-mnist --source "
                             "/usr/share/datasets/fashion-mnist --out data/fashion-mnist.h5")
        m.add_argument("--source", required=True, help="directory of IDX files or a .npz")
        m.add_argument("--out", required=True, help="HDF5 file to write")
        m.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none",
                       help="HDF5 filter (default none: read without Python's GIL, see "
                       "results/benchmarks/README.md, input pipeline; lzf: smaller, slower "
                       "to read)")
        m.set_defaults(func=_stage)
    f = kinds.add_parser(
        "imagefolder", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="an ImageNet-layout tree (train/<class>/*.JPEG, val/<class>/...) -> HDF5 shards",
        description="Decode and resize every image of an ImageNet-layout tree to SIZE x SIZE "
        "RGB and write\nHDF5 shards per split plus manifest.json into OUT. Each shard is "
        "written under a temporary\nname and renamed; rerunning the same command after a "
        "kill skips the complete shards.\nUnder srun/mpirun, every rank stages its own "
        "shards (rank 0 walks the tree once).",
        epilog="examples:\n"
        "  hpctrain stage imagefolder --source data/fmnist-tree --out data/fmnist-32 --size 32\n"
        "  srun --mpi=pmix -n 8 -c 4 hpctrain stage imagefolder --source /data/imagenet \\\n"
        "      --out /scratch/$USER/imagenet-256 --size 256 --shards 1024\n"
        "      (8 ranks, each writes its own shards with 4 worker processes)")
    f.add_argument("--source", required=True, help="the tree: train/<class>/* and val/<class>/*"
                   " (or test/<class>/*)")
    f.add_argument("--out", required=True, help="directory for the shards and manifest.json")
    f.add_argument("--size", type=int, required=True, help="staged images are SIZE x SIZE x 3")
    f.add_argument("--shards", type=int, default=0, help="training shards (the evaluation "
                   "split gets a proportional number); default: ~1 GiB each, at least 8")
    f.add_argument("--resize", choices=["center-crop", "stretch"], default="center-crop",
                   help="center-crop: shorter side to SIZE, then the central square "
                   "(default); stretch: the whole image to SIZE x SIZE")
    f.add_argument("--compression", choices=["none", "lzf", "gzip"], default="none",
                   help="HDF5 filter (default none: fastest to read; see "
                   "results/benchmarks/README.md, input pipeline)")
    f.add_argument("--workers", type=int, default=0, help="local worker processes per rank "
                   "(default: Slurm's --cpus-per-task, else the CPUs available)")
    f.add_argument("--max-unreadable", type=float, default=0.001, metavar="FRACTION",
                   help="fail if more than this fraction of images cannot be decoded "
                   "(default 0.001); they are skipped and listed either way")
    f.add_argument("--seed", type=int, default=0, help="seed of the order images are "
                   "spread over shards")
    f.set_defaults(func=_stage_imagefolder)
    lc = kinds.add_parser(
        "local-copy", help="(job scripts) copy what this node's ranks read to node-local disk",
        description="Run once per node inside a job (srun --ntasks-per-node=1): copies the "
        "shards this node's ranks read (or the whole HDF5 file) into DEST/<node>/, verifying "
        "each shard's sha256; train with data=DEST/{node}/<name>.",
        epilog="example: srun --ntasks-per-node=1 hpctrain stage local-copy --config C "
        "--dest \"$TMPDIR/hpctrain-$SLURM_JOB_ID\" --ranks-per-node 4")
    config_options(lc)
    lc.add_argument("--dest", required=True, help="node-local directory (the profile's scratch)")
    lc.add_argument("--ranks-per-node", type=int, required=True,
                    help="training ranks per node (the job's --ntasks-per-node)")
    lc.set_defaults(func=_stage_local_copy)

"""Train one experiment config: as one rank, or as every rank under srun, mpirun or horovodrun.

    hpctrain train --config jobs/configs/fmnist_cnn.yaml                     # one rank
    horovodrun -np 2 -H localhost:2 hpctrain train --config jobs/configs/fmnist_cnn.yaml
    srun --mpi=pmix hpctrain train --config ... --run-dir results/<exp>/<id>  # what sbatch runs
    python -m hpctrain.cli train --config ...                               # the same

Everything a rank can check alone (config keys and values, the data file, a run directory
that must not be overwritten, or that another run is writing: train/run_lock.py; on resume,
data that changed since the run started) is checked here, before TensorFlow and Horovod
start: bad input exits with 2 and one line. The training itself is trainer.Trainer; where
its report goes (report.json, report.md, the pictures) the caller says (`reporter`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from hpctrain.data.layout import FINGERPRINT_FILE, check_data, fingerprint, fingerprint_change
from hpctrain.environment import JobEnvironment
from hpctrain.experiment import (
    ConfigError,
    TrainConfig,
    data_on,
    from_dict,
    load_config,
    parse_overrides,
)
from hpctrain.train import checkpoint, malloc, run_lock
from hpctrain.train.preemption import StopRequest
from hpctrain.validation import InputError

if TYPE_CHECKING:  # the Trainer imports TensorFlow: only inside a rank, when it trains
    from hpctrain.train.trainer import Reporting

EXIT_BAD_INPUT = 2

# What a resumed run may change; anything else would make it a different experiment.
RESUME_MAY_CHANGE = {"epochs", "target_accuracy", "expected_accuracy", "threads",
                     "accuracy_thresholds", "stop_check_steps"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hpctrain train",
                                description=(__doc__ or "").split("\n\n")[0],
                                epilog="example: hpctrain train --config "
                                "jobs/configs/fmnist_cnn.yaml:short epochs=2")
    p.add_argument("--config", help="experiment YAML, optionally FILE:variant (with --resume, "
                   "default: the run directory's config.json)")
    p.add_argument("--run-dir", help="run directory (default results/<experiment>/<run-id>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the run directory's newest checkpoint (start afresh "
                   "if it has none)")
    p.add_argument("--accept-new-data", action="store_true",
                   help="--resume even though the data changed since the run started")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p.parse_args(argv)


def resolve_config(config: str | None, overrides: list[str], run_dir: Path | None,
                   resume: bool, node_name: str = "") -> TrainConfig:
    """The config to run, checked with its data file and against the run directory."""
    if resume and run_dir is None:
        raise ConfigError("--resume needs --run-dir (the run to continue)")
    saved = run_dir / "config.json" if run_dir else None
    if config:
        cfg = load_config(config, overrides)
    elif resume and saved is not None and saved.is_file():
        cfg = from_dict({**json.loads(saved.read_text()), **parse_overrides(overrides)})
    else:
        raise ConfigError("--config is required" + (f" ({saved} does not exist)"
                                                    if resume else ""))
    check_data(cfg, node_name)
    if run_dir is not None and checkpoint.latest(run_dir / "checkpoints") and not resume:
        raise ConfigError(f"{run_dir} already holds checkpoints: pass --resume to continue "
                          "it, or choose another --run-dir")
    if resume and saved is not None and saved.is_file():
        before = json.loads(saved.read_text())
        changed = sorted(k for k, v in cfg.to_dict().items()
                         if k not in RESUME_MAY_CHANGE and before.get(k) != v)
        if changed:
            raise ConfigError(f"cannot resume {run_dir} with a different "
                              f"{', '.join(changed)} (only {', '.join(sorted(RESUME_MAY_CHANGE))}"
                              " may change)")
    return cfg


def check_data_unchanged(cfg: TrainConfig, run_dir: Path, node_name: str,
                         accept: bool) -> dict[str, str] | None:
    """A resumed run must train on the data it started with (the fingerprint rank 0
    recorded, data/layout.py), unless the user accepts the new data. Returns the
    fingerprint it took (None: nothing to compare), which rank 0 records."""
    record = run_dir / FINGERPRINT_FILE
    if cfg.synthetic or not record.is_file():
        return None
    now = fingerprint(data_on(cfg, node_name))
    change = fingerprint_change(json.loads(record.read_text()), now)
    if change and not accept:
        raise ConfigError(f"the data changed since {run_dir} started: {change}; "
                          "--accept-new-data resumes on it anyway")
    return now


def main(argv: list[str] | None, reporter: Reporting) -> int:
    stop = StopRequest().install()  # first: a time-limit signal must never kill a rank
    args = parse_args(argv)
    env = JobEnvironment.detect()
    run_dir = Path(args.run_dir).resolve() if args.run_dir else None
    try:  # everything a rank can check alone happens before TensorFlow and Horovod start
        cfg = resolve_config(args.config, args.overrides, run_dir, args.resume, env.node_name)
        if run_dir is not None and env.rank == 0:
            run_lock.hold(run_dir, env)  # one writer per run directory, until this process ends
        seen = None  # one rank a node reads its node's copy of the data
        if args.resume and run_dir is not None and env.local_rank == 0:
            seen = check_data_unchanged(cfg, run_dir, env.node_name, args.accept_new_data)
    except InputError as e:
        print(f"hpctrain train: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow is imported (Keras 3 trap)
    allocator = malloc.tune()  # before TensorFlow allocates: see train/malloc.py
    if cfg.precision == "mixed_float16":
        # oneDNN's float16 CPU kernels: a CNN step took 7-14 s instead of 0.25 s here (a CPU
        # with AVX512_FP16, TF 2.21); without oneDNN the CPU ops of a float16 run (all of
        # them on a CPU node, few on a GPU node) use TensorFlow's own kernels.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    from hpctrain.train.trainer import Trainer

    return Trainer(cfg, env, run_dir, reporter, resume=args.resume, stop=stop,
                   data_seen=seen, allocator=allocator).run()

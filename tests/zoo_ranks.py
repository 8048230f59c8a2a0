"""Every model of the zoo through hpctrain's Trainer, one after another, in the processes of
one launch: TensorFlow and Horovod start once instead of once per model.

    horovodrun -np 2 -H localhost:2 python tests/zoo_ranks.py CONFIG OUT_DIR \\
        [--skip MODEL,...] [model:key=value ...] [key=value ...]

Each model but those skipped gets the whole recipe (set up, restore, fit, finish: the
ranks-in-sync check and report.json in OUT_DIR/<model>); `model:key=value` overrides apply
to that model only.
Horovod is initialised once (a second `hvd.init()` in the same process does nothing) and
never shut down in between, which MPI would not survive. Exits with the worst model's code.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow loads, as `hpctrain train` does

from hpctrain.environment import JobEnvironment  # noqa: E402
from hpctrain.train.config import load_config  # noqa: E402
from hpctrain.train.models import MODELS  # noqa: E402


def main(argv: list[str]) -> int:
    config, out, *overrides = argv
    skip: set[str] = set()
    if overrides[:1] == ["--skip"]:
        skip, overrides = set(overrides[1].split(",")), overrides[2:]
    common = [o for o in overrides if ":" not in o.split("=", 1)[0]]
    import tensorflow as tf

    from hpctrain.train.trainer import Trainer

    codes = {}
    for model in (m for m in MODELS if m not in skip):
        own = [o.split(":", 1)[1] for o in overrides if o.startswith(f"{model}:")]
        cfg = load_config(config, [f"model={model}", *common, *own])
        tf.keras.backend.clear_session()  # each model starts from a clean graph
        codes[model] = Trainer(cfg, JobEnvironment.detect(), Path(out) / model).run()
        print(f"zoo: {model} exit {codes[model]}", flush=True)
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

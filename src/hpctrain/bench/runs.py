"""One measured training run as a benchmark sample: `hpctrain train` (1 rank, or N ranks
under horovodrun on this host) or the plain Keras / Horovod-recipe baseline
(bench/plain_keras.py), each in its own processes, returning what the run measured itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

BIN = Path(sys.executable).parent
# what every benchmark's `hpctrain train` shares: the workshop CNN's config, constant rate
# without warm-up, no checkpoints or pictures (its header says so)
BENCH_CONFIG = "jobs/configs/fmnist_cnn.yaml:bench"


def mpi_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a run: quiet TensorFlow; Open MPI allowed to run as root when we
    are root (this machine's CI); `extra` (a variant's tuning) on top."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if os.geteuid() == 0:
        env |= {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return env | (extra or {})


def launcher(ranks: int) -> list[str]:
    return [] if ranks == 1 else [str(BIN / "horovodrun"), "-np", str(ranks), "-H",
                                  f"localhost:{ranks}"]


def _run(argv: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])}... exited {res.returncode}:\n"
                           f"{res.stdout[-2000:]}\n{res.stderr[-3000:]}")
    return res


def hpctrain_run(config: str, overrides: list[str], ranks: int = 1,
                 env: dict[str, str] | None = None, timeout: float = 1800,
                 epochs: bool = False) -> dict:
    """`hpctrain train` in a temporary run directory; its report.json (with `epochs`, its
    metrics.jsonl rows as "epochs" too)."""
    with tempfile.TemporaryDirectory(prefix="hpctrain-bench-") as tmp:
        run = Path(tmp) / "run"
        _run([*launcher(ranks), str(BIN / "hpctrain"), "train", "--config", config,
              "--run-dir", str(run), *overrides], mpi_env(env), timeout)
        report = json.loads((run / "report.json").read_text())
        if epochs:
            report["epochs"] = [json.loads(line) for line in
                                (run / "metrics.jsonl").read_text().splitlines()]
        return report


def plain_run(args: list[str], ranks: int = 1, env: dict[str, str] | None = None,
              timeout: float = 1800) -> dict:
    """The plain Keras baseline (with --horovod under horovodrun for ranks > 1)."""
    res = _run([*launcher(ranks), sys.executable, "-m", "hpctrain.bench.plain_keras", *args,
                *(["--horovod"] if ranks > 1 else [])], mpi_env(env), timeout)
    return _result(res.stdout)


def in_turns(config: str, overrides: list[str], plain: list[str], rotation: int,
             plains: dict[str, dict[str, str]] | None = None, timeout: float = 1800
             ) -> dict[str, list[float]]:
    """`hpctrain train` and the plain Keras baseline (1 rank each; one baseline process per
    entry of `plains`, name -> its extra environment, default {"plain Keras": {}}) started
    together, their epochs taken in turns (train/turns.py; the roles rotate with `rotation`,
    so across rounds every side starts each place): images/s of every epoch after the first,
    per side, epoch by epoch."""
    from hpctrain.train.turns import ENV

    plains = {"plain Keras": {}} if plains is None else plains
    with tempfile.TemporaryDirectory(prefix="hpctrain-bench-") as tmp:
        run, turns = Path(tmp) / "run", Path(tmp) / "turns"
        argv = {"hpctrain": [str(BIN / "hpctrain"), "train", "--config", config,
                             "--run-dir", str(run), *overrides],
                **{name: [sys.executable, "-m", "hpctrain.bench.plain_keras", *plain]
                   for name in plains}}
        count = len(argv)
        logs = {side: Path(tmp) / f"side{j}.log" for j, side in enumerate(argv)}  # no pipes
        procs = {}
        for j, side in enumerate(argv):
            env = {**plains.get(side, {}), ENV: f"{turns}:{(j + rotation) % count}/{count}"}
            with logs[side].open("w") as log:
                procs[side] = subprocess.Popen(argv[side], env=mpi_env(env), stdout=log,
                                               stderr=subprocess.STDOUT, text=True)
        try:
            for side, p in procs.items():
                if p.wait(timeout=timeout) != 0:
                    raise RuntimeError(f"{' '.join(argv[side][:6])}... exited {p.returncode}:"
                                       f"\n{logs[side].read_text()[-4000:]}")
        finally:
            for p in procs.values():
                p.kill()
                p.wait()
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        results = {name: _result(logs[name].read_text()) for name in plains}
    return {"hpctrain": [r["images_per_s"] for r in rows[1:]],
            **{name: [r["images_per_epoch"] / s for s in r["epoch_s"][1:]]
               for name, r in results.items()}}


def compute_costs_run(args: list[str], timeout: float = 3600) -> dict:
    """bench/compute_costs.py: one process under `horovodrun --gloo` (Horovod initialised
    and shut down around samples, which MPI does not allow)."""
    from hpctrain.bench import compute_costs

    horovodrun, *options = compute_costs.LAUNCHER
    res = _run([str(BIN / horovodrun), *options, sys.executable, "-m", compute_costs.MODULE,
                *args], mpi_env(), timeout)
    return _result(res.stdout)


def _result(stdout: str) -> dict:
    line = next(ln for ln in stdout.splitlines() if "RESULT " in ln)
    # the JSON object alone: under horovodrun another rank's output may follow on the line
    result, _ = json.JSONDecoder().raw_decode(line.split("RESULT ", 1)[1])
    return result


def throughput_args(data: str, *, epochs: int, train_limit: int, batch: int,
                    threads: int, model: str = "cnn") -> tuple[list[str], list[str]]:
    """One throughput measurement's settings, as `hpctrain train` overrides of BENCH_CONFIG
    and as the plain baseline's arguments: the workshop CNN (or another model of the zoo),
    Adam at 0.001 (the config's), a constant rate without warm-up, 1,000 test images."""
    hpctrain = [f"data={data}", f"model={model}", f"epochs={epochs}", f"batch_size={batch}",
                f"threads={threads}", f"train_limit={train_limit}", "test_limit=1000"]
    plain = ["--data", data, "--model", model, "--epochs", str(epochs), "--batch", str(batch),
             "--threads", str(threads), "--optimizer", "adam", "--lr", "0.001",
             "--train-limit", str(train_limit)]
    return hpctrain, plain

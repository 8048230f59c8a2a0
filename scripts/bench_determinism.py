"""What TensorFlow op determinism (`deterministic: true`, the default) costs: the same short
run with it on and off, alternating, side by side in one invocation; the ratio is the result.

    python scripts/bench_determinism.py --config jobs/configs/fmnist_cnn.yaml:short \
        --rounds 2 --out results/bench/determinism
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from hpctrain.atomic import write_json, write_text


def one_run(config: str, deterministic: bool, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        subprocess.run([str(Path(sys.executable).parent / "hpctrain"), "train", "--config",
                        config, "--run-dir", str(run), f"deterministic={str(deterministic)}",
                        f"threads={threads}", "checkpoint=false"],
                       check=True, capture_output=True)
        report = json.loads((run / "report.json").read_text())
        return report["images_per_s"]["mean"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="jobs/configs/fmnist_cnn.yaml:short")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/bench/determinism")
    args = p.parse_args()
    rates: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.rounds):
        for det in (True, False):
            rates[det].append(one_run(args.config, det, args.threads))
    on, off = statistics.fmean(rates[True]), statistics.fmean(rates[False])
    text = (f"Op determinism on {args.config}, 1 rank, {args.threads} threads, "
            f"{args.rounds} alternating rounds (images/s of the epoch's tenths 2..10):\n\n"
            "| deterministic | images/s per run | mean | ratio to off |\n|---|---|---|---|\n"
            f"| true | {', '.join(f'{r:,.0f}' for r in rates[True])} | {on:,.0f} | "
            f"{on / off:.2f} |\n"
            f"| false | {', '.join(f'{r:,.0f}' for r in rates[False])} | {off:,.0f} | 1.00 |\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_json(f"{args.out}.json", {"config": args.config, "threads": args.threads,
                                    "images_per_s": {"deterministic": rates[True],
                                                     "nondeterministic": rates[False]},
                                    "ratio": on / off})
    write_text(f"{args.out}.md", text)
    print(text, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

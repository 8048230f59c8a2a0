"""Benchmark 6, startup: process start to the end of the first training step, and where it
goes (report.json `startup_phases_s`, rank 0: Python with the imports and the config,
hvd.init, TensorFlow setup and the run directory, opening the data, building and compiling
the model, the first step with its graph tracing), 1 rank and 2 ranks under horovodrun.
"""

from __future__ import annotations

import statistics

from hpctrain.bench.harness import fmt_spread, spread, with_inputs
from hpctrain.bench.runs import BENCH_CONFIG, hpctrain_run


def run(data: str, rounds: int, train_limit: int = 0) -> dict:
    del train_limit
    same = [f"data={data}", "epochs=1", "train_limit=2560", "test_limit=500"]
    phases: dict[str, list[dict[str, float]]] = {"1": [], "2": []}  # by ranks (JSON keys)
    for i in range(rounds):
        for ranks in phases:
            r = hpctrain_run(BENCH_CONFIG, same, int(ranks))
            phases[ranks].append(dict(r["startup_phases_s"]))
            print(f"  round {i + 1}/{rounds} {ranks} rank(s): "
                  f"{sum(phases[ranks][-1].values()):.1f} s", flush=True)
    return with_inputs(summarize, phases=phases)


def summarize(phases: dict[str, list[dict[str, float]]]) -> dict:
    rounds, ranks = len(phases["1"]), ("1", "2")
    names = list(phases["1"][0])
    table = ["| phase | 1 rank, s | 2 ranks, s |", "|---|---|---|"]
    for name in names:
        table.append(f"| {name} | " + " | ".join(
            f"{statistics.median(p[name] for p in phases[n]):.2f}" for n in ranks) + " |")
    totals = {n: spread([sum(p.values()) for p in phases[n]]) for n in ranks}
    table.append("| **total** | " + " | ".join(
        f"**{fmt_spread(totals[n], '', '.1f')}**" for n in ranks) + " |")
    md = "\n".join([
        "Seconds from process start to the end of the first training step (rank 0), the "
        f"workshop CNN on Fashion-MNIST, medians of {rounds} rounds (ranks under horovodrun "
        "on this host; Slurm's share is benchmark 5's).", "", *table])
    headline = {"benchmark": "6. Startup: process start to the end of the first step",
                "result": " and ".join(f"{totals[n]['median']:.1f} s for {n} rank"
                                       f"{'s' * (n != '1')}" for n in ranks),
                "verdict": "no goal"}
    return {"name": "startup", "phases": phases, "total_s": totals, "headline": headline,
            "markdown": md}

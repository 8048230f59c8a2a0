"""`hpctrain project`: a study (or a given per-GPU throughput) through the cost model to
larger clusters; and the model checked against published scaling figures (published.py).

    hpctrain project --study results/studies/synthetic_resnet20-weak --gpus 8,64,512 \\
        --network 25Gb/s --gpus-per-node 4
    hpctrain project --model resnet50 --throughput 909 --batch 256 --gpus 1,8 \\
        --network 200Gb/s --gpus-per-node 8 --intra-bandwidth 230GB/s
    hpctrain project --published --out results/projection     # the check, committed
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

from hpctrain.scaling.costmodel import Horovod, Network, Workload, project
from hpctrain.validation import InputError


def layer_profile(model: str, parameters: int | None = None) -> dict | None:
    """Per-layer gradient bytes and FLOPs (scripts/layer_profiles.py), or None. With the
    run's parameter count, the profile must match it: a zoo model renamed since the run (the
    old `cnn` is now `cnn64`) is found by its parameter count instead."""
    data = json.loads(resources.files("hpctrain.scaling").joinpath(
        "layer_profiles.json").read_text())
    found = data.get(model) or data.get(f"zoo:{model}")
    if parameters is None or (found and found["parameters"] == parameters):
        return found
    return next((p for p in data.values() if p["parameters"] == parameters), None)


def backward_layers(profile: dict | None) -> tuple[tuple[float, float], ...]:
    """(gradient bytes, backward time share) in the order the backward pass makes them."""
    if not profile:
        return ()
    return tuple((float(b), float(f)) for b, f in reversed(profile["layers"]))


@dataclass(frozen=True)
class Calibration:
    source: str  # where compute and bytes came from, said in the output
    workload: Workload


def from_throughput(model: str, throughput: float, batch: int,
                    gradient_bytes: float | None = None) -> Calibration:
    profile = layer_profile(model)
    nbytes = gradient_bytes or (profile or {}).get("gradient_bytes")
    if not nbytes:
        raise InputError(f"model {model!r} has no layer profile: give --gradient-bytes")
    return Calibration(
        f"{model}: {throughput:g} images/s per GPU at batch {batch} -> "
        f"{1e3 * batch / throughput:.1f} ms compute per step; {nbytes / 1e6:.1f} MB of "
        "gradients" + (" in the layers' backward order" if profile else ", spread evenly"),
        Workload(batch / throughput, nbytes, batch, layers=backward_layers(profile)))


def from_study(study_dir: Path) -> Calibration:
    """The study's smallest point: its mean step time without the allreduce (a rank's own
    compute, input and update) at its per-rank batch; the gradient bytes of its model."""
    import pandas as pd

    summary, runs = study_dir / "summary.csv", study_dir / "runs.csv"
    if not summary.is_file() or not runs.is_file():
        raise InputError(f"{study_dir}: no summary.csv/runs.csv (run hpctrain study first)")
    s = pd.read_csv(summary).sort_values("ranks").iloc[0]
    r = pd.read_csv(runs)
    model = str(r["model"].iloc[0])
    step = float(s["step_s"]) - float(s["allreduce_s"])
    nbytes = float(r["gradient_bytes"].dropna().iloc[0])
    params = r["parameters"].dropna().tolist() if "parameters" in r else []
    profile = layer_profile(model, int(params[0]) if params else None)
    return Calibration(
        f"{study_dir.name}: {model}, {int(s['ranks'])} rank(s) at batch "
        f"{int(s['batch_per_rank'])}: {1e3 * step:.1f} ms per step without allreduce "
        f"({float(s['images_per_s']):.0f} images/s); {nbytes / 1e6:.2f} MB of gradients",
        Workload(step, nbytes, int(s["batch_per_rank"]), layers=backward_layers(profile)))


def against_measured(study_dir: Path, cal: Calibration, net: Network, hvd: Horovod
                     ) -> list[dict]:
    """The study's own points (summary.csv) projected with `net`, next to what was measured:
    each point at its ranks per node and per-rank batch (a strong study's shrinks: compute
    scales with it), its efficiency against the study's base point as the study defines it
    (speedup over the base / ranks ratio), and the difference in points."""
    import pandas as pd

    s = pd.read_csv(study_dir / "summary.csv").sort_values(["ranks", "nodes"])
    base = s.iloc[0]
    rows, base_ips = [], None
    for p in s.itertuples():
        per_node = max(1, int(p.ranks) // int(p.nodes))
        w = replace(cal.workload, batch_per_rank=int(p.batch_per_rank),
                    compute_s=cal.workload.compute_s * int(p.batch_per_rank)
                    / cal.workload.batch_per_rank)
        r = project(w, int(p.ranks), per_node, net, hvd)
        base_ips = base_ips or r["images_per_s"]
        ratio = int(p.ranks) / int(base.ranks)
        projected = r["images_per_s"] / base_ips / ratio
        measured = float(p.efficiency) if pd.notna(p.efficiency) else None
        rows.append({"nodes": int(p.nodes), "ranks": int(p.ranks), "per_node": per_node,
                     "oversubscribed": bool(getattr(p, "oversubscribed", False)),
                     "measured_images_per_s": float(p.images_per_s),
                     "projected_images_per_s": r["images_per_s"], "measured": measured,
                     "projected": projected,
                     "difference_pp": None if measured is None
                     else 100 * (projected - measured)})
    return rows


def render_against(rows: list[dict]) -> str:
    head = ("| nodes | ranks | ranks/node | images/s measured | projected | efficiency "
            "measured | projected | projected - measured |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|")
    body = [f"| {r['nodes']} | {r['ranks']}{' (*)' if r['oversubscribed'] else ''} | "
            f"{r['per_node']} | "
            f"{r['measured_images_per_s']:,.0f} | {r['projected_images_per_s']:,.0f} | "
            + (f"{100 * r['measured']:.0f} %" if r["measured"] is not None else "n/a")
            + f" | {100 * r['projected']:.0f} % | "
            + (f"{r['difference_pp']:+.0f} pts" if r["difference_pp"] is not None else "n/a")
            + " |" for r in rows]
    over = ["", "(*) more ranks x threads than the machine's cores: the measured efficiency "
            "there is core sharing, which the model (one GPU per rank) does not have."]
    return "\n".join([head, *body, *(over if any(r["oversubscribed"] for r in rows) else [])])


def projection_table(cal: Calibration, gpus: list[int], per_node: int, net: Network,
                     hvd: Horovod) -> list[dict]:
    return [project(cal.workload, n, per_node, net, hvd) for n in gpus]


def render_table(rows: list[dict]) -> str:
    head = ("| GPUs | nodes | compute ms | slowest rank +ms | contention +ms | allreduce ms | "
            "exposed ms | step ms | images/s | efficiency |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    body = [f"| {r['gpus']} | {r['nodes']} | {1e3 * r['compute_s']:.1f} | "
            f"{1e3 * r['straggle_s']:.1f} | {1e3 * r['contention_s']:.1f} | "
            f"{1e3 * r['allreduce_s']:.1f} | "
            f"{1e3 * r['exposed_s']:.1f} | {1e3 * r['step_s']:.1f} | "
            f"{r['images_per_s']:,.0f} | {100 * r['efficiency']:.1f} % |" for r in rows]
    notes = ["", "compute ms: one rank's step; slowest rank: how much later the slowest of N "
             "ranks finishes its backward pass (step-time jitter); contention: how much longer "
             "the backward pass takes with allreduces beside it; allreduce ms: all of a "
             "step's allreduces, in the fused buffers Horovod sends while the backward pass "
             "runs; exposed ms: what the allreduces add after the slowest rank's backward "
             "pass."]
    return "\n".join([head, *body, *notes])

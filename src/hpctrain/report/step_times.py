"""Per-rank step times of a run (train/step_timing.py measures them) and the stragglers among
the ranks. Pure functions of the metrics rows.

A straggler is a rank whose own work per step (input wait + compute, medians) is more than
`threshold` above the median of the other ranks'. In synchronous data-parallel training every
rank waits for the slowest in the allreduce, so the slow rank is the one with the *least*
allreduce time and the most own work; its node is named with it, and when every rank of a
node is slow, the node is named.
"""

from __future__ import annotations

import statistics

PARTS = ("input_s", "compute_s", "allreduce_s", "other_s")
THRESHOLD = 0.25


def _steady(epochs: list[dict]) -> list[dict]:
    """Epochs with step times, without each segment's first epoch when there are others."""
    timed = [e for e in epochs if e.get("rank_steps")]
    steady = [e for e in timed if not e.get("first_in_segment")]
    return steady or timed


def per_rank(epochs: list[dict]) -> list[dict]:
    """Each rank's median of its per-epoch medians, and the mean of its per-epoch means."""
    rows = _steady(epochs)
    if not rows:
        return []
    out = []
    for rank_rows in zip(*(e["rank_steps"] for e in rows), strict=True):
        first = rank_rows[0]
        entry: dict = {"rank": first["rank"], "node": first["node"],
                       "steps": sum(r["steps"] for r in rank_rows)}
        for key in (*PARTS, "step_s"):
            values = [r[key] for r in rank_rows if r.get(key) is not None]
            entry[key] = statistics.median(values) if values else None
        means = [r["mean"] for r in rank_rows if r.get("mean", {}).get("step_s") is not None]
        entry["mean"] = {k: statistics.fmean(m[k] for m in means) if means else None
                         for k in (*PARTS, "step_s")}
        out.append(entry)
    return out


def own_work(rank: dict) -> float:
    return (rank["input_s"] or 0.0) + (rank["compute_s"] or 0.0)


def stragglers(ranks: list[dict], threshold: float = THRESHOLD) -> list[dict]:
    """Ranks whose own work exceeds the median of the others' by more than `threshold`,
    slowest first; each with the part (input or compute) that makes the difference."""
    found = []
    timed = [r for r in ranks if r.get("compute_s") is not None]
    if len(timed) < 2:
        return []
    for r in timed:
        others = statistics.median(own_work(o) for o in timed if o is not r)
        if others <= 0:
            continue
        ratio = own_work(r) / others
        if ratio > 1.0 + threshold:
            base_input = statistics.median(o["input_s"] or 0.0 for o in timed if o is not r)
            base_compute = statistics.median(o["compute_s"] or 0.0 for o in timed if o is not r)
            cause = "input" if (r["input_s"] or 0.0) - base_input > \
                (r["compute_s"] or 0.0) - base_compute else "compute"
            found.append({"rank": r["rank"], "node": r["node"], "own_s": own_work(r),
                          "others_median_s": others, "ratio": ratio, "cause": cause})
    return sorted(found, key=lambda s: -s["ratio"])


def slow_nodes(ranks: list[dict], slow: list[dict]) -> list[str]:
    """Nodes all of whose ranks are stragglers (when another node has a fast rank)."""
    slow_ranks = {s["rank"] for s in slow}
    nodes: dict[str, list[int]] = {}
    for r in ranks:
        nodes.setdefault(r["node"], []).append(r["rank"])
    if len(nodes) < 2:
        return []
    return sorted(n for n, rs in nodes.items() if all(x in slow_ranks for x in rs))


def step_time_summary(epochs: list[dict], threshold: float = THRESHOLD) -> dict:
    """The report's `step_times`: per rank, the mean breakdown over ranks, the stragglers."""
    ranks = per_rank(epochs)
    slow = stragglers(ranks, threshold)
    means = [r["mean"] for r in ranks if r["mean"].get("step_s") is not None]
    breakdown = {k: statistics.fmean(m[k] for m in means) for k in (*PARTS, "step_s")} \
        if means else None
    return {"ranks": ranks, "mean_over_ranks": breakdown, "stragglers": slow,
            "slow_nodes": slow_nodes(ranks, slow), "threshold": threshold,
            "units": "s per training step; input+compute is a rank's own work, allreduce "
                     "includes waiting for slower ranks"}


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value * 1e3:.1f}"


def render_lines(summary: dict, limit: int = 8) -> list[str]:
    """report.md lines: the breakdown, each rank (the slowest and fastest when many), the
    stragglers."""
    ranks = summary.get("ranks") or []
    if not ranks:
        return []
    b = summary["mean_over_ranks"]
    lines = []
    if b:
        lines.append(f"- step time (mean over ranks): {_ms(b['step_s'])} ms = input "
                     f"{_ms(b['input_s'])} + compute {_ms(b['compute_s'])} + allreduce "
                     f"{_ms(b['allreduce_s'])} + other {_ms(b['other_s'])} ms")
    shown = sorted(ranks, key=own_work, reverse=True)
    if len(shown) > limit:
        shown = shown[:limit // 2] + shown[-(limit // 2):]
    lines.append("- per rank (median ms, input / compute / allreduce / other): " + "; ".join(
        f"rank {r['rank']} ({r['node']}) {_ms(r['input_s'])} / {_ms(r['compute_s'])} / "
        f"{_ms(r['allreduce_s'])} / {_ms(r['other_s'])}"
        for r in sorted(shown, key=lambda r: r["rank"])))
    slow = summary["stragglers"]
    if not slow:
        lines.append(f"- stragglers: none (every rank's input + compute within "
                     f"{summary['threshold']:.0%} of the others' median)")
    else:
        lines.append("- stragglers: " + "; ".join(
            f"**rank {s['rank']} on {s['node']}**: {s['cause']} makes its own work "
            f"{_ms(s['own_s'])} ms per step, {s['ratio']:.2f}x the others' "
            f"{_ms(s['others_median_s'])} ms" for s in slow)
            + (f"; slow node(s): {', '.join(summary['slow_nodes'])}"
               if summary["slow_nodes"] else ""))
    return lines

"""A study directory's tables and README: runs.csv, summary.csv, README.md and the plots,
from any set of run directories (`hpctrain study` writes them at the end; `hpctrain report
RUN_DIR... --out DIR` writes them for runs submitted by hand)."""

from __future__ import annotations

import contextlib
import json
import math
import re
import shlex
from pathlib import Path

import pandas as pd

from hpctrain.atomic import write_json, write_text
from hpctrain.report.run_report import load_report
from hpctrain.report.statistics import confidence_for_looks
from hpctrain.scaling import plots
from hpctrain.scaling.aggregate import job_overhead, run_row, runs_table, scaling_mode, summarize

JOB_TIMES = "job_times.json"  # a run's job in Slurm's accounting, kept in its run directory


def _f(value, spec: str = ".0f", none: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def load_runs(run_dirs: list[Path], jobs: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per run directory holding a report; `jobs`: Slurm times by job id."""
    rows = []
    for d in run_dirs:
        if not (d / "report.json").is_file():
            continue
        report = load_report(d)
        if "images_per_s" not in report:  # a postmortem-only report of a failed job
            continue
        rows.append(run_row(report, str(d), job_times(d, report, jobs or {})))
    return runs_table(rows) if rows else pd.DataFrame()


def failures(run_dirs: list[Path], runs: pd.DataFrame) -> list[dict]:
    """Every run directory without a completed run: its point (from the study's directory
    name n<nodes>-r<ranks>-rep<k>, when it has one) and why, in one line."""
    import re

    listed = dict(zip(runs["run_dir"], runs["status"], strict=True)) if len(runs) else {}
    out = []
    for d in run_dirs:
        if listed.get(str(d)) == "completed":
            continue
        report = load_report(d) if (d / "report.json").is_file() else {}
        failure = (report.get("failure") or {}).get("summary")
        why = failure or ": ".join(str(v) for v in (report.get("status"), report.get("error"))
                                   if v) or "no report.json: the job did not start training"
        m = re.match(r"n(\d+)-r(\d+)-rep\d+$", d.name)
        out.append({"run_dir": str(d), "nodes": int(m.group(1)) if m else None,
                    "ranks": int(m.group(2)) if m else None, "why": why})
    return out


def job_times(run_dir: Path, report: dict, jobs: dict[str, dict]) -> dict | None:
    """The run's job in accounting (submit, start, end), kept in the run directory the first
    time it is found ended and matching the run: a study's tables then survive an accounting
    database that forgets job ids or gives them to other jobs (a new embedded cluster starts
    again at job 1)."""
    kept = run_dir / JOB_TIMES
    if kept.is_file():
        return json.loads(kept.read_text())
    job = jobs.get(str(report["slurm"]["job_id"]))
    if job is None or job_overhead(report, job)["job_s"] is None:
        return None
    with contextlib.suppress(OSError):  # a run directory we may read but not write
        write_json(kept, job)
    return job


def write_study(out: Path, runs: pd.DataFrame, *, title: str, command: str,
                note: str = "", base: Path | None = None, failed: list[dict] | None = None,
                base_point: tuple[int, int] | None = None, shared_host: bool = False) -> dict:
    """Write runs.csv, summary.csv, the plots and README.md into `out`; the summary.
    `failed`: runs without a completed run (failures()); `base_point`: the (nodes, ranks)
    speedup is measured against (default: the smallest completed one)."""
    out.mkdir(parents=True, exist_ok=True)
    write_runs_csv(out, runs, base or out)
    summary = summarize(runs, base_point, shared_host)
    write_text(out / "summary.csv", summary.to_csv(index=False, float_format="%.6g"))
    mode = scaling_mode(summary)
    made = plots.all_plots(summary, out, f"{title} ({mode} scaling)") \
        if len(summary) else {}
    write_text(out / "README.md", render(summary, runs, title=title, mode=mode,
                                         command=command, note=note, pictures=made,
                                         where=_relative(str(out), Path.cwd()),
                                         failed=failed, base_point=base_point))
    return {"mode": mode, "points": len(summary), "runs": len(runs),
            "failed": len(failed or []), "pictures": sorted(made)}


def write_runs_csv(out: Path, runs: pd.DataFrame, base: Path | None = None) -> None:
    """out/runs.csv: one row per run, run directories relative to `base` (default `out`)
    where they lie under it."""
    shown = runs.assign(run_dir=[_relative(p, base or out) for p in runs["run_dir"]])
    write_text(out / "runs.csv", shown.to_csv(index=False, float_format="%.6g"))


def completed_runs(runs: pd.DataFrame, pattern: re.Pattern, key: str) -> pd.DataFrame:
    """The completed runs with `key` and `repeat` read from the run directory's name by
    `pattern` (named groups `key` and `repeat`; a name it does not match: key the whole name,
    repeat 0)."""
    done = runs[runs["status"] == "completed"].copy() if len(runs) else runs
    names = [pattern.match(Path(p).name) for p in done["run_dir"]] if len(done) else []
    done[key] = [m[key] if m else Path(p).name
                 for m, p in zip(names, done["run_dir"], strict=True)]
    done["repeat"] = [int(m["repeat"]) if m else 0 for m in names]
    return done


def _relative(path: str, base: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return path


def render(s: pd.DataFrame, runs: pd.DataFrame, *, title: str, mode: str, command: str,
           note: str, pictures: dict, where: str = "DIR", failed: list[dict] | None = None,
           base_point: tuple[int, int] | None = None) -> str:
    first = runs.iloc[0] if len(runs) else None
    if failed is None:  # runs given by hand: those that did not complete
        failed = [{"run_dir": p, "nodes": n, "ranks": k, "why": st} for p, n, k, st in zip(
            runs["run_dir"], runs["nodes"], runs["ranks"], runs["status"], strict=True)
            if st != "completed"] if len(runs) else []
    lines = [f"# {title}: {mode} scaling", "",
             "Reproduce with:", "", "```", command, "```", ""]
    if first is not None:
        lines += [f"{first['model']} on {first['dataset']}"
                  + (" (synthetic data: throughput only)" if first["synthetic"] else
                     " (real data)")
                  + f"; {len(runs)} run(s), {len(s)} point(s); "
                  + ("the global batch is fixed" if mode == "strong" else
                     "the per-rank batch is fixed" if mode == "weak" else "batches vary")
                  + ". Raw rows: [runs.csv](runs.csv), per point: [summary.csv](summary.csv).",
                  ""]
    if note:
        lines += ["## What these numbers mean", "", note, ""]
    lines += hardware_section(runs)
    lines += ["The cost model against these points (the smallest point's compute time and "
              "the model's gradient bytes, the network as `hpctrain bench allreduce` measured "
              "it on the same cluster): [projection.md](projection.md), written by "
              f"`hpctrain project --study {shlex.quote(where)} --gpus "
              f"{','.join(str(r) for r in sorted(set(s['ranks'])))} --gpus-per-node 1 "
              "--network results/network/<name>/allreduce.json --out "
              f"{shlex.quote(where + '/projection.md')}`. Projections to a GPU cluster start "
              "from a GPU's throughput instead (`hpctrain project --model M --throughput "
              "IMAGES_PER_S --batch B`), never from this cluster's step time.", ""]
    if failed:
        lines += ["## Failed points", "",
                  "Points (or repeats) without a completed run, left out of every table and "
                  "picture below:", ""]
        lines += [f"- {_relative(f['run_dir'], Path.cwd())}"
                  + (f" ({f['nodes']} node(s), {f['ranks']} rank(s))" if f["ranks"] else "")
                  + f": {f['why']}" for f in failed]
        lines += [""]
    if not len(s):
        return "\n".join(lines + ["No completed run yet.", ""])
    if s["efficiency"].isna().all() and len(s):
        nodes, ranks = base_point or (None, None)
        lines += [f"**The base point ({nodes} node(s), {ranks} rank(s)) has no completed run: "
                  "no speedup or efficiency is given** (against the next point both would be "
                  "wrong). Rerun the study to fill it in.", ""]
    target = s["target_accuracy"].dropna()
    tgt = f"{target.iloc[0]:.2f}" if len(target) else None
    lines += ["## Per point", "",
              "| nodes | ranks | global batch | images/s (95 % interval) | speedup | "
              "efficiency | s per epoch (+ eval) | node-h per epoch | "
              + (f"s to {tgt} | node-h to {tgt} | " if tgt else "") + "test accuracy |",
              "|---:|---:|---:|---|---:|---:|---:|---:|" + ("---:|---:|" if tgt else "")
              + "---:|"]
    for r in s.itertuples():
        ci = f" ± {_f(r.images_per_s_ci95)}" if not pd.isna(r.images_per_s_ci95) else ""
        sp = _f(r.speedup, ".2f", "-") + (f" ± {r.speedup_ci95:.2f}"
                                          if not pd.isna(r.speedup_ci95) else "")
        eff = _f(None if pd.isna(r.efficiency) else 100 * r.efficiency, ".0f", "-")
        lines.append(
            f"| {r.nodes} | {r.ranks}{' (*)' if r.oversubscribed else ''} | "
            f"{r.global_batch} | {_f(r.images_per_s)}{ci} "
            f"({r.interval}) | {sp} | {eff} % | {_f(r.epoch_s, '.1f')} "
            f"(+ {_f(r.eval_s_per_epoch, '.1f')}) | {_f(r.node_hours_per_epoch, '.3g')} | "
            + (f"{_f(r.time_to_target_s, '.0f', 'not reached')} | "
               f"{_f(r.node_hours_to_target, '.3g', '-')} | " if tgt else "")
            + f"{_f(r.test_accuracy, '.4f')} |")
    if s["oversubscribed"].any():
        lines += ["", "(*) more ranks x threads than the cores they run on (marked in every "
                  "picture): the efficiency there measures core sharing, not communication."]
    lines += ["", *_budget(s, tgt, str(runs["experiment"].iloc[0]), runs), "",
              "## Where the time goes", "",
              "Per training step (mean over ranks and repeats, ms): each rank's own work is "
              "input + compute; allreduce is the gradient exchange not hidden behind the "
              "backward pass, including waiting for slower ranks.", "",
              "| ranks | step | input | compute | allreduce | other | stragglers | "
              "job start -> Python | startup | report -> job end | job |",
              "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in s.itertuples():
        ms = [_f(None if pd.isna(v) else 1e3 * v, ".1f")
              for v in (r.step_s, r.input_s, r.compute_s, r.allreduce_s, r.other_s)]
        lines.append(f"| {r.ranks} | " + " | ".join(ms) + f" | {r.stragglers or 'none'} | "
                     f"{_f(r.launch_s, '.1f')} s | {_f(r.startup_s, '.1f')} s | "
                     f"{_f(r.teardown_s, '.1f')} s | {_f(r.job_s, '.0f')} s |")
    lines += ["", "## Pictures", ""]
    captions = {"throughput": "Throughput vs ranks, with the ideal line",
                "efficiency": "Scaling efficiency vs ranks",
                "breakdown": "Where the time goes, per step and per job",
                "time_to_accuracy": "Time and node-hours to the target accuracy"}
    for key, path in pictures.items():
        lines += [f"{captions[key]}:", "", f"![{key}]({Path(path).name})", ""]
    return "\n".join(lines)


def report_head(heading: str, command: str, failed: list[dict] | None, left_out: str
                ) -> list[str]:
    """A batch or variants study's README up to its results: the heading, the command that
    reproduces it, and every run that did not complete with why (left out of `left_out`)."""
    lines = [f"# {heading}", "", "Reproduce with:", "", "```", command, "```", ""]
    if failed:
        lines += ["## Failed points", "", f"Runs without a completed run, left out of "
                  f"{left_out}:", ""]
        lines += [f"- {Path(f['run_dir']).name}: {f['why']}" for f in failed] + [""]
    return lines


def interval_name(confidence: float) -> str:
    """'95 % interval', '98.3 % interval'."""
    return f"{100 * confidence:.3g} % interval"


def looks_line(looks: list[int]) -> list[str]:
    """What the study's looks did to its intervals, when seeds were added after a look."""
    if len(looks) < 2:
        return []
    return [f"- Seeds were added after the verdicts were read: {len(looks)} looks, at "
            + ", ".join(map(str, looks)) + " seeds. Each verdict therefore uses the "
            f"{interval_name(confidence_for_looks(len(looks)))} of the paired difference "
            "(Bonferroni over the looks), so the chance that any look gave a false verdict "
            "stays within 5 %; a 95 % interval read at every look would not."]


def hardware_section(runs: pd.DataFrame) -> list[str]:
    """What the runs ran on and how their ranks talked (rank 0's node of each run)."""
    if "hardware" not in runs or runs["hardware"].isna().all():
        return []
    seen = runs["hardware"].dropna().value_counts(sort=False)
    return ["## Hardware and backend", "",
            *[f"- {text} ({n} run(s))" for text, n in seen.items()], ""]


def _budget(s: pd.DataFrame, tgt: str | None, experiment: str,
            runs: pd.DataFrame) -> list[str]:
    lines = ["## Node-hour budget", ""]
    if tgt and s["node_hours_to_target"].notna().any():
        for r in s.itertuples():
            if not pd.isna(r.node_hours_to_target):
                lines.append(f"- To train {experiment} to {tgt} test accuracy you need "
                             f"**{r.node_hours_to_target:.3g} node-hours at {r.nodes} "
                             f"node(s)** ({r.ranks} rank(s); {r.time_to_target_s:.0f} s of "
                             f"training + {r.startup_s:.0f} s startup).")
        best = s.loc[s["node_hours_to_target"].idxmin()]
        lines.append(f"- Cheapest: {int(best['nodes'])} node(s); fastest: "
                     f"{int(s.loc[s['time_to_target_s'].idxmin()]['nodes'])} node(s).")
    lines += ["- Per epoch: " + "; ".join(
        f"{_f(r.node_hours_per_epoch, '.3g')} node-h at {r.nodes} node(s)"
        for r in s.itertuples()) + " (multiply by your epochs; add startup once per job)."]
    if "node_hours" in runs and runs["node_hours"].notna().any():
        total, gpu = runs["node_hours"].sum(), runs["gpu_hours"].sum()
        lines += ["- What the jobs took (Slurm's job times, every repeat): "
                  + "; ".join(f"{_f(r.node_hours, '.3g')} node-h, {_f(r.gpu_hours, '.3g')} "
                              f"GPU-h at {r.ranks} rank(s)" for r in s.itertuples())
                  + f"; **{total:.3g} node-hours, {gpu:.3g} GPU-hours for the whole study** "
                  f"(all {len(runs)} runs with a report" + (", on nodes without GPUs"
                                                          if not gpu else "") + ")."]
    return lines


def study_metadata(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}

"""Run reports: report.json (everything, with units) and report.md (for people).

`build_report` and `render_markdown` are pure; `collect_versions` asks the installed stack.
"""

from __future__ import annotations

import json
import math
import platform
import shlex
import shutil
import subprocess
from pathlib import Path

from hpctrain.atomic import write_json, write_text
from hpctrain.report.statistics import throughput, time_to_accuracy
from hpctrain.report.step_times import render_lines, step_time_summary
from hpctrain.resources import checkout_root
from hpctrain.train.optim import scale_factor

RECIPE_KEYS = ("weight_decay", "label_smoothing", "zero_init_residual", "random_resized_crop")

def build_report(*, config: dict, epochs: list[dict], env: dict, node_names: list[str],
                 dataset: dict, startup_s: float, train_s: float, total_s: float,
                 weight_digests: list[str] | None, status: str, error: str | None,
                 versions: dict, run_dir: str, segments: list[dict] | None = None,
                 threads: int | None = None, model_size: dict | None = None,
                 started_unix: float | None = None, pictures: dict | None = None,
                 startup_marks: dict[str, float] | None = None,
                 checkpoints_skipped: list[dict] | None = None,
                 hardware: dict | None = None) -> dict:
    ranks = env["size"]
    accumulate = config.get("accumulate_steps", 1)
    thresholds = sorted(set(config["accuracy_thresholds"]) |
                        ({config["target_accuracy"]} if config["target_accuracy"] else set()))
    final_acc = epochs[-1].get("val_accuracy") if epochs else None
    total = {**throughput(epochs)}
    per_rank = {k: (v / ranks if isinstance(v, float) else v) for k, v in total.items()}
    last = epochs[-1] if epochs else {}
    nodes = sorted(set(node_names))
    return {
        "status": status,
        "error": error,
        "experiment": config["experiment"],
        "run_dir": run_dir,
        "model": config["model"],
        "dataset": {k: dataset[k] for k in ("dataset", "train_count", "test_count",
                                            "num_classes", "class_names", "input_shape",
                                            "staged_shape", "source_sha256") if k in dataset},
        "epochs": config["epochs"],
        "epochs_completed": len(epochs),
        "test_accuracy": last.get("val_accuracy"),
        "test_top5_accuracy": last.get("val_top5_accuracy"),  # None: ten classes or fewer
        "test_loss": last.get("val_loss"),
        "train_accuracy": last.get("accuracy"),
        "images_per_s": {**total, "unit": "images/s, all ranks"},
        "images_per_s_per_rank": {**per_rank, "unit": "images/s per rank"},
        "first_epoch_s": epochs[0]["epoch_s"] if epochs else None,
        "images_per_epoch": epochs[-1].get("images") if epochs else None,
        "startup_s": startup_s,
        "startup_phases_s": startup_phases(startup_marks or {}),
        "train_s": train_s,
        "train_s_all_segments": epochs[-1]["elapsed_s"] if epochs else 0.0,
        "total_s": total_s,
        "time_to_accuracy_s": time_to_accuracy(epochs, thresholds),
        "target_accuracy": None if not config["target_accuracy"] else {
            "target": config["target_accuracy"],
            "reached": time_to_accuracy(epochs, [config["target_accuracy"]]).popitem()[1]
            is not None},
        "expected_accuracy": None if not config["expected_accuracy"] else {
            "expected": config["expected_accuracy"],
            "met": final_acc is not None and final_acc >= config["expected_accuracy"]},
        "training": {k: config[k] for k in (
            "optimizer", "learning_rate", "lr_scaling", "momentum", "warmup_epochs",
            "lr_schedule", "lr_decay_epochs", "lr_decay", "batch_size", "precision", "xla", "seed",
            "deterministic", "activation", "synthetic")},
        # the recipe's parts (configs from before they existed have none)
        "recipe": {k: config[k] for k in RECIPE_KEYS if config.get(k)},
        "segments": segments or [],
        "checkpoints_skipped": checkpoints_skipped or [],
        "ranks": ranks,
        "threads_per_rank": threads,
        "nodes": len(nodes),
        "node_names": nodes,
        "rank_nodes": node_names,
        "global_batch_size": config["batch_size"] * ranks * accumulate,
        "accumulate_steps": accumulate,
        "learning_rate_scaled": config["learning_rate"] * scale_factor(
            ranks * accumulate, config.get("lr_scaling", "linear")),
        "model_size": model_size,
        "step_times": step_time_summary(epochs),
        "eval_s_total": sum(e.get("eval_s") or 0.0 for e in epochs),
        "started_unix": started_unix,
        "pictures": pictures,
        "launcher": env["launcher"],
        "slurm": {"job_id": env["job_id"], "array_task_id": env["array_task_id"],
                  "nodelist": env["job_nodelist"], "num_nodes": env["num_nodes"],
                  "restart_count": env["restart_count"]},
        "ranks_in_sync": None if weight_digests is None else {
            "ok": len(set(weight_digests)) == 1,
            "check": "sha256 of every weight tensor, allgathered from each rank",
            "weight_sha256": weight_digests,
        },
        "versions": versions,
        "hardware": hardware,
        "units": {"startup_s": "s from process start to the start of training (rank 0)",
                  "startup_phases_s": "s per startup phase, rank 0, to the first step's end",
                  "train_s": "s of model.fit incl. per-epoch evaluation, this segment",
                  "train_s_all_segments": "s of model.fit over all segments of the run",
                  "total_s": "s from process start to the report (rank 0)",
                  "started_unix": "rank 0's process start, Unix time (s)",
                  "eval_s_total": "s of test-set evaluation, all epochs",
                  "pictures": "PNG files in the run directory; seconds after training; "
                              "confusion[true][predicted]: test images",
                  "first_epoch_s": "s", "time_to_accuracy_s": "s since training start"},
    }


def collect_versions() -> dict:
    import horovod
    import mpi4py
    import tensorflow as tf

    from hpctrain.train.keras_compat import keras_version

    mpirun = shutil.which("mpirun")
    mpi_lib = None
    if mpirun:
        res = subprocess.run([mpirun, "--version"], capture_output=True, text=True)
        mpi_lib = (res.stdout or res.stderr).strip().splitlines()[0] if res.returncode == 0 \
            else None
    root = checkout_root()
    git = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty",
                          "--abbrev=12"], capture_output=True, text=True) if root else None
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras_version(tf),
        "horovod": horovod.__version__,
        "mpi4py": mpi4py.__version__,
        "mpi": mpi_lib,
        "git_commit": git.stdout.strip() if git and git.returncode == 0 else None,
    }


def hardware_parts(hw: dict | None) -> tuple[str, str] | None:
    """(rank 0's node, how the ranks talk) in words; None for a report without them."""
    if not hw:
        return None
    from hpctrain.machine import describe_node

    h = hw.get("horovod") or {}
    built = ", ".join(f"{k} {h[k]}" for k in ("cuda", "cudnn") if h.get(k))
    return (describe_node(hw["node"]),
            f"{h.get('controller')} controller, {h.get('tensor_ops')} allreduce"
            + (", hierarchical" if h.get("hierarchical_allreduce") else "")
            + f", fusion {h.get('fusion_threshold_bytes', 0) / 2**20:g} MiB, cycle "
            f"{h.get('cycle_time_ms')} ms" + (f"; built with {built}" if built else ""))


def hardware_lines(hw: dict | None) -> list[str]:
    """Rank 0's node and how the ranks talk, for report.md."""
    parts = hardware_parts(hw)
    return [] if parts is None else [f"- hardware (rank 0's node): {parts[0]}",
                                     f"- Horovod: {parts[1]}"]


def _fmt(value, spec: str = ".4f", none: str = "n/a") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec)


def _position(epoch: int, step: int) -> str:
    return f"{epoch}" + (f" (+{step} steps)" if step else "")


def _segment_lines(r: dict) -> list[str]:
    segments = r.get("segments", [])
    if len(segments) < 2 and all(s.get("ended", "completed") == "completed" for s in segments):
        return []
    return [f"- segments: {len(segments)} (each resumed from the last checkpoint)"] + [
        f"  - {i}. from epoch {_position(s['first_epoch'] - 1, s.get('first_step', 0))} to "
        f"{_position(s['last_epoch'], s.get('last_step', 0))}: job {s['job_id'] or '-'}, "
        f"restart {s['restart_count']}, {_fmt(s['train_s'], '.1f')} s, started {s['started']}"
        f", {s.get('ended', 'completed')}"
        for i, s in enumerate(segments, 1)]


def _skipped_lines(r: dict) -> list[str]:
    return [f"- checkpoint {s['checkpoint']} skipped on resume: {s['reason']}"
            + (f" (moved to {s['moved_to']})" if s.get("moved_to") else "")
            for s in r.get("checkpoints_skipped", [])]


def render_markdown(r: dict, inline_pictures: bool = True) -> str:
    """report.md; for a terminal (inline_pictures=False) the pictures are one line."""
    ips, ipr, t = r["images_per_s"], r["images_per_s_per_rank"], r["training"]
    ci = f" ± {_fmt(ips['ci95'], '.0f')}" if ips.get("ci95") is not None else ""
    sync = r["ranks_in_sync"]
    lines = [
        f"# {r['experiment']}: {r['model']} on {r['dataset']['dataset']}",
        "",
        f"- status: **{r['status']}**" + (f" ({r['error']})" if r["error"] else ""),
        f"- test accuracy: **{_fmt(r['test_accuracy'])}**"
        + (f" top-1, **{_fmt(r['test_top5_accuracy'])}** top-5"
           if r.get("test_top5_accuracy") is not None else "")
        + f" after {r['epochs_completed']}/{r['epochs']} epochs (test loss "
        f"{_fmt(r['test_loss'])})",
        f"- ranks: {r['ranks']} on {r['nodes']} node(s) ({', '.join(r['node_names'])}), "
        + (f"{r['threads_per_rank']} thread(s) each, " if r.get("threads_per_rank") else "")
        + f"launcher {r['launcher']}, global batch {r['global_batch_size']}"
        + (f" ({r['accumulate_steps']} accumulated batches per update)"
           if r.get("accumulate_steps", 1) > 1 else ""),
        f"- throughput: {_fmt(ips['mean'], '.0f')}{ci} images/s total, "
        f"{_fmt(ipr['mean'], '.0f')} per rank (mean"
        + (" and 95 % CI of the mean" if ci else "") + f" over {ips['basis']}, n={ips['n']})",
        f"- training: {t['optimizer']}, lr {t['learning_rate']:g} per rank"
        + (f" ({t['lr_scaling']} scaling)" if t.get("lr_scaling", "linear") != "linear"
           else "") + ", "
        f"{t['lr_schedule']} after {t['warmup_epochs']:g} warm-up epoch(s), "
        f"{t['precision']}{', XLA' if t['xla'] else ''}, seed {t['seed']}"
        + (", synthetic data" if t["synthetic"] else "")
        + "".join(f", {k.replace('_', ' ')}" + ("" if v is True else f" {v:g}")
                  for k, v in (r.get("recipe") or {}).items()),
        f"- startup {_fmt(r['startup_s'], '.1f')} s, first epoch "
        f"{_fmt(r['first_epoch_s'], '.1f')} s, training {_fmt(r['train_s'], '.1f')} s, "
        f"process total {_fmt(r['total_s'], '.1f')} s",
        *(["- startup phases (rank 0): " + ", ".join(
            f"{k} {v:.1f} s" for k, v in r["startup_phases_s"])]
          if r.get("startup_phases_s") else []),
        "- time to accuracy: " + ", ".join(
            f"{k}: {_fmt(v, '.1f', 'not reached')}" + (" s" if v is not None else "")
            for k, v in r["time_to_accuracy_s"].items()),
        *_segment_lines(r),
        *_skipped_lines(r),
        *render_lines(r.get("step_times") or {}),
        *([f"- expected accuracy >= {r['expected_accuracy']['expected']}: "
           + ("met" if r["expected_accuracy"]["met"] else "**not met**")]
          if r.get("expected_accuracy") else []),
        "- ranks in sync: " + ("not checked" if sync is None else
                               "yes (identical weight hashes)" if sync["ok"] else
                               "**NO**: " + ", ".join(h[:12] for h in sync["weight_sha256"])),
        f"- Slurm job {r['slurm']['job_id'] or '-'} on {r['slurm']['nodelist'] or '-'}",
        *hardware_lines(r.get("hardware")),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in r["versions"].items()),
        "",
        *picture_lines(r.get("pictures"), inline_pictures),
    ]
    return "\n".join(lines)


CAPTIONS = {"curves": "Learning curves: accuracy and loss per epoch on the training and the "
                      "test set, and the learning rate",
            "confusion": "Confusion matrix on the test set: counts, and each true class "
                         "row-normalised",
            "mistakes": "Misclassified test images, the most confident mistakes first "
                        "(predicted class, confidence, true class)",
            "correct": "Correctly classified test images"}


def startup_phases(marks: dict[str, float]) -> list[list]:
    """Consecutive timestamps (each ends the phase named by its key; the first is the start)
    -> [[phase, seconds], ...] in order (a list: report.json's keys are sorted)."""
    names, times = list(marks), list(marks.values())
    return [[names[i], round(times[i] - times[i - 1], 3)] for i in range(1, len(names))]


def picture_lines(pictures: dict | None, inline: bool = True) -> list[str]:
    if not pictures:
        return []
    if not inline:
        files = ", ".join(pictures.get("files", {}).values())
        return ([f"- pictures: {files} (report.md shows them)"] if files else []) + (
            [f"- pictures not drawn: {pictures['error']}"] if pictures.get("error") else [])
    lines = ["## Pictures", ""]
    for key, caption in CAPTIONS.items():
        name = pictures.get("files", {}).get(key)
        if name:
            lines += [f"{caption}:", "", f"![{key}]({name})", ""]
    if pictures.get("error"):
        lines += [f"Pictures not drawn: {pictures['error']}", ""]
    return lines


def write_report(run_dir: str | Path, report: dict) -> Path:
    run_dir = Path(run_dir)
    write_json(run_dir / "report.json", report)
    write_text(run_dir / "report.md", render_markdown(report))
    return run_dir / "report.json"


def mark(run_dir: str | Path, status: str, error: str | None = None) -> None:
    """Sets the status (and error) of a report an earlier segment wrote, so report.json never
    claims a state the run is not in: "running" while a resumed segment trains, "failed" when
    it cannot. Without a report there is nothing to correct."""
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        return
    report = {**json.loads(path.read_text()), "status": status, "error": error}
    write_report(run_dir, report)


class RunReporter:
    """What a training run writes about itself: report.json / report.md and its pictures.
    The command that starts a run hands one to the Trainer (the train stage writes reports
    through it and does not import report/)."""

    def mark(self, run_dir: str | Path, status: str, error: str | None = None) -> None:
        mark(run_dir, status, error)

    def write(self, run_dir: str | Path, **fields) -> dict:
        """build_report's fields (the installed versions added), written; the report."""
        report = build_report(**fields, versions=collect_versions(), run_dir=str(run_dir))
        write_report(run_dir, report)
        return report

    def draw(self, run_dir: Path, rows: list[dict], merged: dict | None,
             class_names: list[str], title: str) -> dict:
        from hpctrain.report.pictures import write_pictures

        return write_pictures(run_dir, rows, merged, class_names, title)


def tensorboard_line(logdir: str | Path) -> str | None:
    """The line that opens a run's (or a study's) event files in TensorBoard, if it has any."""
    logdir = Path(logdir)
    if not any(logdir.glob("**/tensorboard/events.out.tfevents.*")):
        return None
    return f"tensorboard: tensorboard --logdir {shlex.quote(str(logdir))}"


def load_report(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "report.json").read_text())


def check_failures(run_dirs: list[str], reports: list[dict]) -> list[str]:
    """One line per run that did not complete or missed its expected accuracy."""
    bad = []
    for d, r in zip(run_dirs, reports, strict=True):
        missed = bool(r.get("expected_accuracy")) and not r["expected_accuracy"]["met"]
        if r["status"] != "completed" or missed:
            bad.append(f"{d}: {r['status']}" + (" (expected accuracy not met)" if missed else ""))
    return bad


def job_outcome(run_dir: Path, state: str) -> tuple[bool, str]:
    """(did the job and the run complete, "test accuracy X (status, job STATE)")."""
    path = Path(run_dir) / "report.json"
    report = load_report(run_dir) if path.is_file() else {}
    ok = state == "COMPLETED" and report.get("status") == "completed"
    acc = report.get("test_accuracy")
    return ok, (f"test accuracy {'n/a' if acc is None else f'{acc:.4f}'} "
                f"({report.get('status')}, job {state})")

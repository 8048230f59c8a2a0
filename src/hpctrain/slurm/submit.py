"""`hpctrain submit`: resolve the request (request.py), render
results/<experiment>/<run-id>/job.sbatch (and stage.sbatch / report.sbatch for a chain),
sbatch it, and optionally wait for the job and print its report."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from hpctrain.atomic import write_json, write_text
from hpctrain.report.run_report import load_report, render_markdown, tensorboard_line
from hpctrain.slurm.client import SlurmClient, SlurmError, print_change
from hpctrain.slurm.queue import STAGE_DATASETS, Stage, chain_specs, queue_in_order
from hpctrain.slurm.request import Request, resolve
from hpctrain.slurm.script import JobSpecError, render_sbatch


@dataclass(frozen=True)
class Waiting:
    """--wait: block until the job ends, print its report, exit non-zero unless it completed."""

    enabled: bool = False
    timeout: float = 3600.0


def create_run_dir(path: Path, what: str = "run directory") -> None:
    """The new run (or sweep) directory; an existing one is never reused."""
    try:
        path.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise SlurmError(f"{what} {path} already exists") from None


def write_submission(directory: Path, client: SlurmClient, job_id: str, **extra) -> None:
    """submission.json: the job id and the cluster it belongs to (job ids repeat across
    clusters and across re-created embedded clusters; `hpctrain status` matches on both)."""
    write_json(directory / "submission.json", {
        "job_id": job_id, "cluster": client.cluster_name(),
        "slurm_conf": client.env.get("SLURM_CONF"), "submitted_at": time.time(), **extra})


def submit(req: Request, chain: tuple[str, ...] = ("train",), stage_dataset: str = "",
           stage_source: str = "", dry_run: bool = False, waiting: Waiting | None = None,
           client: SlurmClient | None = None, stage_args: tuple[str, ...] = ()) -> int:
    """Resolve, render and queue the request (a chain: one job per step, afterok)."""
    if "stage" in chain:
        if not (stage_source and stage_dataset):
            raise JobSpecError("--chain stage needs --stage-source and --stage-dataset")
        if stage_dataset not in STAGE_DATASETS:
            raise JobSpecError(f"--stage-dataset {stage_dataset!r}: choose from "
                               f"{', '.join(STAGE_DATASETS)}")
        if not Path(stage_source).exists():
            raise JobSpecError(f"--stage-source {stage_source}: no such file or directory")
    resolved = resolve(req, check_data_file="stage" not in chain)
    spec, run_dir = resolved.spec, resolved.run_dir
    if "stage" in chain and not resolved.cfg.data:
        raise JobSpecError("--chain stage: the config has no data file to stage into")
    stage = Stage(stage_dataset, str(Path(stage_source).resolve()) if stage_source else "",
                  stage_args)
    scripts = {step: render_sbatch(s) for step, s in chain_specs(spec, chain, stage).items()}
    client = client or SlurmClient()
    if dry_run:
        for step in chain:
            sys.stdout.write(scripts[step])
            print(f"# {step}: sbatch --test-only: {client.test_only(scripts[step])}",
                  file=sys.stderr)
        return 0
    create_run_dir(run_dir)
    files = {step: run_dir / ("job.sbatch" if step == "train" else f"{step}.sbatch")
             for step in chain}
    for step in chain:
        write_text(files[step], scripts[step])
    try:  # a failed step cancels the rest of the chain rather than leaving it pending
        job_ids = dict(zip(chain, queue_in_order(client, [files[s] for s in chain],
                                                 dependency="afterok"), strict=True))
    except SlurmError:
        shutil.rmtree(run_dir)  # nothing stays queued: leave no run directory behind
        raise
    job_id = job_ids["train"]
    write_submission(run_dir, client, job_id, jobs=job_ids, script=str(run_dir / "job.sbatch"))
    print(f"submitted job {job_id}; run dir {run_dir}" + (
        "" if len(chain) == 1 else
        f" (chain {' -> '.join(f'{s} {job_ids[s]}' for s in chain)}, afterok)"), flush=True)
    if waiting is None or not waiting.enabled:
        return 0
    last = job_ids[chain[-1]]
    state = client.wait(last, timeout=waiting.timeout, on_change=print_change)
    if last != job_id:
        state = client.state(job_id) or state
    return summarize(job_id, state, run_dir)


def outcome(run_dir: Path, state: str) -> tuple[bool, str]:
    """(did the job and the run complete, "test accuracy X (status, job STATE)")."""
    path = run_dir / "report.json"
    report = load_report(run_dir) if path.is_file() else {}
    ok = state == "COMPLETED" and report.get("status") == "completed"
    acc = report.get("test_accuracy")
    return ok, (f"test accuracy {'n/a' if acc is None else f'{acc:.4f}'} "
                f"({report.get('status')}, job {state})")


def summarize(job_id: str, state: str, run_dir: Path) -> int:
    report_path = run_dir / "report.json"
    if report_path.exists():
        report = load_report(run_dir)
        text = (render_markdown(report, inline_pictures=False) if "model" in report
                else (run_dir / "report.md").read_text())
        print(text.rstrip("\n"))
        print(f"report: {report_path}")
        board = tensorboard_line(run_dir)
        if board:
            print(board)
        ok, line = outcome(run_dir, state)
        print(line)
        return 0 if ok else 1
    log = next(iter(sorted(run_dir.glob("slurm-*.out"))), None)
    print(f"job {job_id} ended {state} without a report", file=sys.stderr)
    if log:
        tail = log.read_text(errors="replace").splitlines()[-30:]
        print(f"--- last lines of {log} ---", *tail, sep="\n", file=sys.stderr)
    return 1

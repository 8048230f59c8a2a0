"""`hpctrain submit`: resolve the request (request.py), render
results/<experiment>/<run-id>/job.sbatch (and stage.sbatch / report.sbatch for a chain) and
sbatch it. What was queued is returned (`Submitted`), or for a dry run the scripts and
Slurm's verdicts on them (`DryRun`); printing, waiting and the report are the command's
(cli/jobs.py)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from hpctrain.atomic import write_json, write_text
from hpctrain.slurm.client import SlurmClient, SlurmError
from hpctrain.slurm.queue import STAGE_DATASETS, Stage, chain_specs, queue_in_order
from hpctrain.slurm.request import Request, resolve
from hpctrain.slurm.script import JobSpecError, render_sbatch


@dataclass(frozen=True)
class Submitted:
    """What `submit` queued: the training job, its run directory, the job whose end is the
    chain's (the report step's, else the training job's), and each step's job."""

    job_id: str
    run_dir: Path
    last_job_id: str
    jobs: tuple[tuple[str, str], ...] = ()  # (step, job id) in chain order


@dataclass(frozen=True)
class DryRun:
    """What a dry run would queue: (step, script, `sbatch --test-only`'s verdict) each."""

    scripts: tuple[tuple[str, str, str], ...]


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
           stage_source: str = "", dry_run: bool = False, client: SlurmClient | None = None,
           stage_args: tuple[str, ...] = ()) -> Submitted | DryRun:
    """Resolve, render and queue the request (a chain: one job per step, afterok), or for a
    dry run only ask Slurm (`sbatch --test-only`) about each script."""
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
        return DryRun(tuple((step, scripts[step], client.test_only(scripts[step]))
                            for step in chain))
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
    return Submitted(job_id, run_dir, job_ids[chain[-1]],
                     tuple((step, job_ids[step]) for step in chain))

"""The submission core of submit, sweep and study: the specs of a chain (pure), queueing job
scripts in order with rollback, and waiting for the jobs.

    specs = chain_specs(train_spec, ("stage", "train", "report"), stage)   # no side effects
    job_ids = queue_in_order(client, [path1, path2], dependency="afterok")  # all or nothing
    failed = wait_each(client, job_ids, timeout, judge)                     # one deadline
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hpctrain.slurm.client import SlurmClient, SlurmError
from hpctrain.slurm.script import JobSpec, JobSpecError, with_changes

CHAIN_STEPS = ("stage", "train", "report")
STAGE_DATASETS = ("mnist", "fashion-mnist", "imagefolder")


def parse_chain(value: str | None) -> tuple[str, ...]:
    steps = tuple(s.strip() for s in (value or "train").split(",") if s.strip())
    if "train" not in steps or any(s not in CHAIN_STEPS for s in steps) or \
            list(steps) != sorted(steps, key=CHAIN_STEPS.index) or len(set(steps)) != len(steps):
        raise JobSpecError(f"--chain {value!r}: a subsequence of stage,train,report with train")
    return steps


@dataclass(frozen=True)
class Stage:
    """What a chain's stage step stages: a data set kind, its source, `hpctrain stage` options."""

    dataset: str = ""
    source: str = ""  # absolute
    args: tuple[str, ...] = ()


def chain_specs(train: JobSpec, chain: tuple[str, ...], stage: Stage | None = None
                ) -> dict[str, JobSpec]:
    """The job spec of every step of `chain`, in order, derived from the training job's: the
    stage step on the training job's nodes (an image tree: one rank per node with all of its
    CPUs as workers; IDX files: one task), the report step one task for ten minutes."""
    stage = stage or Stage()
    one_task = dict(nodes=1, ntasks_per_node=1, cpus_per_task=1, gpus_per_node=0)
    specs = {}
    for step in chain:
        if step == "stage":
            geometry = dict(ntasks_per_node=1, gpus_per_node=0,
                            cpus_per_task=train.ntasks_per_node * train.cpus_per_task
                            ) if stage.dataset == "imagefolder" else one_task
            specs[step] = with_changes(train, template="stage.sbatch",
                                       job_name=train.job_name + "-stage",
                                       stage_dataset=stage.dataset, stage_source=stage.source,
                                       stage_args=stage.args, **geometry)
        elif step == "report":
            specs[step] = with_changes(train, template="report.sbatch", time="00:10:00",
                                       job_name=train.job_name + "-report", **one_task)
        else:
            specs[step] = train
    return specs


def queue_in_order(client: SlurmClient, job_files: Sequence[Path],
                   dependency: str | None = None, after: str | None = None,
                   on_queued: Callable[[Path, str], None] | None = None) -> list[str]:
    """sbatch each job file in order; with `dependency` (afterok, afterany) each job waits
    for the one before it (the first for `after`, if given), and under afterok a failed job
    cancels those after it instead of leaving them pending. `on_queued(file, job_id)` after
    each. When an sbatch fails, every job queued here is cancelled before the error goes on:
    nothing half-queued is left."""
    job_ids: list[str] = []
    try:
        for path in job_files:
            before = job_ids[-1] if job_ids else after
            deps = [f"--dependency={dependency}:{before}"] if dependency and before else []
            if deps and dependency == "afterok":
                deps.append("--kill-on-invalid-dep=yes")
            job_ids.append(client.sbatch(path, *deps))
            if on_queued:
                on_queued(path, job_ids[-1])
    except SlurmError:
        client.scancel(*job_ids)
        raise
    return job_ids


def wait_each(client: SlurmClient, job_ids: Sequence[str], timeout: float,
              judge: Callable[[int, str, str], bool]) -> int:
    """Wait for the jobs one after another under one deadline; `judge(i, job_id, state)`
    says whether job i succeeded (and reports it). The number that did not."""
    import time

    deadline = time.monotonic() + timeout
    failed = 0
    for i, job_id in enumerate(job_ids):
        state = client.wait(job_id, timeout=max(1.0, deadline - time.monotonic()))
        failed += not judge(i, job_id, state)
    return failed

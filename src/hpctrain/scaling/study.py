"""`hpctrain study`: one config over several node counts, one Slurm job per point and repeat,
then the study's tables, plots and node-hour budget in results/studies/<name>/.

    hpctrain study --config jobs/configs/fmnist_cnn.yaml:study --nodes 1,2,4 --mode strong

- strong scaling keeps the global batch of the smallest point (per-rank batch = global /
  ranks, which must divide) and its learning rate (the per-rank rate is scaled down by the
  same factor, so `learning_rate x ranks` is equal at every point);
- weak scaling keeps the per-rank batch (and so the global batch grows with the ranks);
- `--within-node 1,2,4` first adds ranks within one node (1, 2, 4, then --ntasks-per-node
  of them: GPUs over NVLink or PCIe), then nodes (--nodes, each with --ntasks-per-node
  ranks), all against one base, the smallest point;
- `--mode batch --global-batches 128,512,4096` asks whether accuracy holds at large global
  batches: on fixed nodes, each rank accumulates gradients over several batches (Horovod's
  backward_passes_per_step) to emulate the global batch of a larger cluster, with the
  learning rate scaled linearly with it, once with the config's warm-up and once without
  (Goyal et al. 2017). With several --nodes it is a nodes x global-batch grid: every global
  batch on every node count (fewer accumulated batches on more nodes), so one study shows
  what each global batch costs in time and node-hours and what it does to accuracy. With
  `--variants sgd,lars,lamb` (config variants: one method each, with its own optimizer, rate,
  scaling rule and warm-up) every method runs at every global batch, `--repeats` seeds each,
  and each is compared with the first method at the smallest global batch; `--base-alone`
  runs the first method only there and the others only above it (a rate sweep at large
  batch against one base);
- `--mode variants --variants base,no_weight_decay,...` trains several of the config file's
  variants (`base`: the file's own keys) on one node count, `--repeats` seeds each (seed,
  seed + 1, ...), and compares each with the first: an ablation of a recipe's parts.
Each point is its own job with its own geometry (not an array: arrays share one geometry).
By default the jobs run one after another (`--dependency=afterany` on the previous one), so
points never share nodes or the file system with each other; `--parallel` lets them overlap.
A study is resumed by running the same command again: runs with a completed report are kept,
others are moved aside (`<run>.failed-<time>`) and submitted again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hpctrain.atomic import write_json, write_text
from hpctrain.experiment import ConfigError, TrainConfig, load_config
from hpctrain.progress import Progress
from hpctrain.resources import results_dir
from hpctrain.scaling.plan import (
    BASE,
    Point,
    batch_points,
    extends,
    looks_after,
    plan_points,
    variant_changes,
    variant_points,
)
from hpctrain.slurm.client import SlurmClient, SlurmError
from hpctrain.slurm.job_options import flag
from hpctrain.slurm.queue import queue_in_order, wait_each
from hpctrain.slurm.request import Request, resolve
from hpctrain.slurm.script import render_sbatch
from hpctrain.slurm.submit import DryRun, create_run_dir, write_submission


@dataclass(frozen=True)
class Study:
    request: Request  # config, overrides, profile and job options shared by every point
    nodes: tuple[int, ...]
    tasks_per_node: int = 1
    mode: str = "strong"
    repeats: int = 1
    name: str = ""
    parallel: bool = False
    global_batches: tuple[int, ...] = ()  # --mode batch
    within_node: tuple[int, ...] = ()  # ranks on one node before the nodes
    variants: tuple[str, ...] = ()  # --mode variants: config variants, the first the reference
    base_alone: bool = False  # --mode batch --variants: the base point, the others above

    def points(self, cfg: TrainConfig) -> list[Point]:
        if self.variants and self.mode not in ("variants", "batch"):
            raise ConfigError("--variants is for --mode variants or batch")
        if self.mode == "variants":
            return variant_points(self.request.config, self.nodes, self.tasks_per_node,
                                  self.variants, self.global_batches or self.within_node)
        if self.mode != "batch":
            if self.global_batches:
                raise ConfigError("--global-batches is for --mode batch")
            return plan_points(cfg, self.nodes, self.tasks_per_node, self.mode,
                               self.within_node)
        if self.within_node:
            raise ConfigError("--within-node is for --mode strong or weak")
        if not self.global_batches:
            raise ConfigError("--mode batch: --global-batches, e.g. --nodes 2 "
                              "--global-batches 128,512,4096 (or --nodes 1,2,4 for a grid)")
        return batch_points(cfg, self.nodes, self.tasks_per_node, self.global_batches,
                            self.variants, self.request.config, self.request.overrides,
                            self.base_alone)

    def directory(self) -> Path:
        return results_dir() / "studies" / self.name

    def plan(self) -> dict:
        return {"config": self.request.config, "overrides": list(self.request.overrides),
                "nodes": list(self.nodes), "tasks_per_node": self.tasks_per_node,
                "mode": self.mode, "profile": self.request.profile, "job": self.job(),
                **({"global_batches": list(self.global_batches)} if self.global_batches
                   else {}),
                **({"within_node": list(self.within_node)} if self.within_node else {}),
                **({"variants": list(self.variants)} if self.variants else {}),
                **({"base_alone": True} if self.base_alone else {})}

    def job(self) -> dict:
        """The job options given besides the points' geometry (the same for every point)."""
        return {k: v for k, v in self.request.job.given.items()
                if k not in ("nodes", "ntasks_per_node")}

    def command(self) -> str:
        import shlex

        args = ["hpctrain", "study", "--config", self.request.config, "--nodes",
                ",".join(map(str, self.nodes)), "--ntasks-per-node", str(self.tasks_per_node),
                *(a for k, v in self.job().items() for a in (flag(k), str(v))),
                "--mode", self.mode, *(["--global-batches", ",".join(map(
                    str, self.global_batches))] if self.global_batches else []),
                *(["--within-node", ",".join(map(str, self.within_node))]
                  if self.within_node else []),
                *(["--variants", ",".join(self.variants)] if self.variants else []),
                *(["--base-alone"] if self.base_alone else []),
                "--repeats", str(self.repeats), "--name", self.name,
                *(["--profile", self.request.profile] if self.request.profile else []),
                *self.request.overrides]
        return shlex.join(args)


def run_dir_of(study_dir: Path, point: Point, repeat: int) -> Path:
    return study_dir / "runs" / f"{point.name}-rep{repeat}"


def completed(run_dir: Path) -> bool:
    path = run_dir / "report.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("status") == "completed"
    except json.JSONDecodeError:
        return False


def run_study(study: Study, dry_run: bool = False, wait: bool = True,
              timeout: float = 6 * 3600.0, client: SlurmClient | None = None,
              log: Callable[[str], None] = lambda line: None,
              report_only: bool = False) -> int | DryRun:
    """Submit the study's missing runs, wait for them and write its report; the exit code
    (1: a run failed), or for a dry run what would be queued. Progress goes to `log`.
    `report_only`: write the report from the run directories as they are (a point that
    failed or was cancelled listed as such), submitting nothing."""
    req = study.request
    cfg = load_config(req.config, list(req.overrides))
    if study.repeats < 1:
        raise ConfigError("--repeats must be >= 1")
    points = study.points(cfg)
    study_dir = study.directory()
    plan_file = study_dir / "plan.json"
    if plan_file.is_file() and not extends(json.loads(plan_file.read_text()), study.plan()):
        raise ConfigError(f"study {study.name!r} exists with another plan ({plan_file}): a "
                          "study can gain points (more --nodes or --global-batches) but not "
                          "change its config, mode, job options or (strong) smallest point; "
                          "give a new --name")
    client = client or SlurmClient()
    if report_only:
        if not (study_dir / "runs").is_dir():
            raise ConfigError(f"study {study.name!r} has no runs yet ({study_dir})")
        summary = collect(study_dir, study.command(), client, study.name,
                          embedded=_embedded(req), mode=study.mode)
        log(f"study {study.name}: {summary['points']} point(s), {summary['runs']} run(s), "
            f"{summary.get('failed', 0)} failed -> {study_dir / 'README.md'}")
        return 1 if summary.get("failed") else 0
    todo, running = [], []
    done_repeats = study.repeats  # repeats 0 .. done_repeats - 1 completed at every point
    for r in range(study.repeats):  # repeat by repeat (A B C A B C): drift hits every point
        for p in points:
            run_dir = run_dir_of(study_dir, p, r)
            if completed(run_dir):
                continue
            done_repeats = min(done_repeats, r)
            job = _live_job(run_dir, client)
            if job:  # submitted earlier (--no-wait) and not finished: wait for it
                running.append((job, run_dir))
            else:
                todo.append((p, r))
    resolved = [resolve(_point_request(study, p, run_dir_of(study_dir, p, r), r))
                for p, r in todo]  # every point checked before anything is queued
    if study.mode == "variants":
        shape = (f"{points[0].nodes} node(s) x {study.tasks_per_node} rank(s), variants "
                 + ", ".join(p.variant for p in points) + f" (seeds {cfg.seed}.."
                 f"{cfg.seed + study.repeats - 1})")
    elif study.mode == "batch" and study.variants:
        shape = (f"{points[0].nodes} node(s) x {study.tasks_per_node} rank(s), methods "
                 + ", ".join(study.variants) + " at global batches "
                 + ", ".join(map(str, study.global_batches)) + f" (seeds {cfg.seed}.."
                 f"{cfg.seed + study.repeats - 1})")
    elif study.mode == "batch":
        shape = "; ".join(
            f"{n} node(s) x {study.tasks_per_node} = {n * study.tasks_per_node} ranks, global "
            "batches " + ", ".join(f"{p.batch_size * p.ranks * p.accumulate_steps} (warm-up "
                                   f"{p.warmup_epochs:g})" for p in points if p.nodes == n)
            for n in study.nodes)
    else:
        shape = ", ".join(f"{p.nodes} node(s) x {p.ranks // p.nodes} = {p.ranks} ranks, "
                          f"batch {p.batch_size}/rank" for p in points)
    log(f"study {study.name}: {study.mode} study of {cfg.experiment} over {shape}; "
        f"{study.repeats} repeat(s); {len(todo)} run(s) to submit, {len(running)} queued or "
        f"running, {len(points) * study.repeats - len(todo) - len(running)} done")
    if dry_run:
        scripts = [(str(res.run_dir), render_sbatch(res.spec)) for res in resolved]
        return DryRun(tuple((where, script, client.test_only(script))
                            for where, script in scripts))
    study_dir.mkdir(parents=True, exist_ok=True)
    old = json.loads(plan_file.read_text()) if plan_file.is_file() else {}
    write_json(plan_file, {**study.plan(), "looks": looks_after(old, study.repeats,
                                                                 done_repeats)})
    jobs = running + _submit_all(study, resolved, client, log,
                                 after=running[-1][0] if running else None)
    if not wait:
        return 0
    failed = _wait_all(client, jobs, timeout)
    summary = collect(study_dir, study.command(), client, study.name, embedded=_embedded(req),
                      mode=study.mode)
    log(f"study {study.name}: {summary['points']} point(s), {summary['runs']} run(s) -> "
        f"{study_dir / 'README.md'}")
    from hpctrain.report.run_report import tensorboard_line

    board = tensorboard_line(study_dir)  # every point's run side by side
    if board:
        log(board)
    return 1 if failed else 0


def _point_request(study: Study, point: Point, run_dir: Path, repeat: int = 0) -> Request:
    req = study.request
    job = req.job.replace(nodes=point.nodes, ntasks_per_node=point.ranks // point.nodes)
    config, overrides = req.config, (*req.overrides, *point.overrides())
    if point.variant:  # the variant's config
        config = config if point.variant == BASE else f"{config}:{point.variant}"
    if study.mode in ("batch", "variants"):  # accuracy studies: each repeat its own seed
        seed = load_config(config, list(req.overrides)).seed + repeat
        overrides = (*overrides, f"seed={seed}")
    return dataclasses.replace(req, config=config, overrides=overrides, job=job,
                               run_dir=str(run_dir),
                               job_name=req.job_name or f"study-{study.name}-{point.name}")


def _live_job(run_dir: Path, client: SlurmClient) -> str | None:
    from hpctrain.slurm.client import TERMINAL

    path = run_dir / "submission.json"
    if not path.is_file():
        return None
    job_id = str(json.loads(path.read_text())["job_id"])
    state = client.state(job_id)
    return job_id if state and state not in TERMINAL else None


def _submit_all(study: Study, resolved, client: SlurmClient, log: Callable[[str], None],
                after: str | None = None) -> list[tuple[str, Path]]:
    """Every point's run directory and job script, then the jobs queued in order (one after
    another unless --parallel); a failed sbatch cancels them all and removes what was made."""
    made = []
    for res in resolved:
        run_dir = res.run_dir
        if run_dir.exists():  # an earlier attempt that did not complete: keep it aside
            run_dir.rename(run_dir.with_name(f"{run_dir.name}.failed-"
                                             f"{time.strftime('%Y%m%d-%H%M%S')}"))
        create_run_dir(run_dir)
        made.append(run_dir)
        write_text(run_dir / "job.sbatch", render_sbatch(res.spec))

    def queued(job_file: Path, job_id: str) -> None:
        write_submission(job_file.parent, client, job_id, study=study.name,
                         script=str(job_file))
        log(f"submitted job {job_id}: {job_file.parent}")

    try:
        job_ids = queue_in_order(client, [d / "job.sbatch" for d in made],
                                 dependency=None if study.parallel else "afterany",
                                 after=None if study.parallel else after, on_queued=queued)
    except SlurmError:
        for run_dir in made:  # no half-submitted study left queued, nor its directories
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    return list(zip(job_ids, made, strict=True))


def _wait_all(client: SlurmClient, jobs: list[tuple[str, Path]], timeout: float) -> int:
    with Progress(len(jobs), "study runs", unit="run", every_s=300.0,
                  stream=sys.stdout) as progress:
        def judge(i: int, job_id: str, state: str) -> bool:
            run_dir = jobs[i][1]
            progress.update(1, note=f"job {job_id} {state}: {run_dir.name}")
            return state == "COMPLETED" and completed(run_dir)

        return wait_each(client, [j for j, _ in jobs], timeout, judge)


def _embedded(req: Request) -> bool:
    from hpctrain.slurm.profiles import load_profile

    return load_profile(req.profile).name == "embedded"


def shared_core_note(ranks: list[int]) -> str:
    cores = os.cpu_count() or 1
    beyond = [r for r in ranks if r > cores]
    return (f"These runs used the embedded Slurm cluster: its logical nodes are processes on "
            f"one machine with {cores} CPU core(s), shared by all ranks. Up to {cores} "
            f"rank(s), the efficiency says how well hpctrain and Horovod turn more cores into "
            f"throughput (allreduce over loopback, no network), against a generous base: a "
            f"single rank's input pipeline and Horovod threads run on the cores it leaves idle,"
            f" which more ranks must share (compare the compute column at the same per-rank "
            f"batch)."
            + (f" At {', '.join(map(str, beyond))} ranks the ranks outnumber the cores: "
               f"ideal would need cores that do not exist, so the efficiency there measures "
               f"core sharing, not communication, and says nothing about a real cluster."
               if beyond else "")
            + " Statements about real clusters come from `hpctrain project`, which takes "
            "this study's compute time per step and model size into a communication cost "
            "model checked against published figures.")


def collect(study_dir: Path, command: str, client: SlurmClient | None, title: str,
            embedded: bool, mode: str = "") -> dict:
    from hpctrain.scaling.study_report import failures, load_runs, write_study

    run_dirs = sorted(d for d in (study_dir / "runs").iterdir()
                      if d.is_dir() and ".failed-" not in d.name)
    job_ids = [json.loads((d / "submission.json").read_text())["job_id"]
               for d in run_dirs if (d / "submission.json").is_file()]
    try:
        jobs = client.job_times(job_ids) if client else {}
    except SlurmError:
        jobs = {}
    runs = load_runs(run_dirs, jobs)
    failed = failures(run_dirs, runs)
    if mode == "variants":
        from hpctrain.scaling.variants_report import write_variants_study

        plan = json.loads((study_dir / "plan.json").read_text())
        return write_variants_study(study_dir, runs, title=title, command=command,
                                    variants=plan["variants"], failed=failed,
                                    changes=variant_changes(plan["config"], plan["variants"]),
                                    looks=plan.get("looks") or [])
    if mode == "batch":
        from hpctrain.scaling.batch_report import write_batch_study

        plan = json.loads((study_dir / "plan.json").read_text())
        if plan.get("variants"):
            from hpctrain.scaling.methods_report import write_methods_study

            return write_methods_study(study_dir, runs, title=title, command=command,
                                       methods=plan["variants"], failed=failed,
                                       changes=variant_changes(plan["config"], plan["variants"]),
                                       looks=plan.get("looks") or [])
        return write_batch_study(study_dir, runs, title=title, command=command, failed=failed)
    note = shared_core_note(sorted(set(runs["ranks"]))) if embedded and len(runs) else ""
    points = {(int(n), int(r)) for n, r in zip(runs["nodes"], runs["ranks"], strict=True)} \
        if len(runs) else set()
    points |= {(f["nodes"], f["ranks"]) for f in failed if f["ranks"]}
    base = min(points, key=lambda p: (p[1], p[0])) if points else None
    return write_study(study_dir, runs, title=title, command=command, note=note,
                       failed=failed, base_point=base, shared_host=embedded)

#!/usr/bin/env python3
"""A fault-injection soak: one 2-node training job on the embedded cluster, hit at random
moments by faults a cluster really throws, must end with the same weights, bit for bit, as
the same job run without faults, every epoch counted once.

    make soak                                   # = the line below, then the README
    .venv/bin/python scripts/soak.py run --seed 1 --faults 20 --out results/reliability
    .venv/bin/python scripts/soak.py render     # results/reliability/README.md from soak.json

Faults, drawn with the seed (so a failing sequence replays with the same --seed):

    kill_rank        SIGKILL one rank's process: the job fails fast; the operator (this
                     script) requeues it, `scontrol requeue`, and it resumes
    preempt_usr1     `scancel --signal=USR1`: the ranks checkpoint mid-epoch, exit 75, the
                     job requeues itself
    preempt_term     `scancel --signal=TERM`: the same with SIGTERM
    admin_requeue    `scontrol requeue`: Slurm stops the job and queues it again
    node_down        the job's second node marked DOWN: NODE_FAIL, Slurm requeues the job
                     (the node is put back in service once the job runs again)
    cut_checkpoint   the newest checkpoint's data file cut to a third (a node dying during a
                     flush), then a rank killed: the rerun moves the damaged checkpoint
                     aside and resumes from the one before
    full_scratch     the node-local scratch filled up, then `scontrol requeue`: the rerun's
                     data copy fails with one line; the operator frees the space and
                     requeues again

Where in the run each fault hits is drawn too: points spread at random over the run's
steps, in order; the driver follows the run's position (the step each rerun resumed from,
plus the reference run's pace) and strikes when it passes the next point, so a fault that
throws work away makes the run do it again before the next one. For each fault the record
keeps when and at which step it hit, how long until the job trained again, the step the
rerun resumed from, and the work redone (steps between the two, and their seconds at the
reference's pace). Needs root (scratch is a small tmpfs) and the embedded
cluster (`make cluster-up`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
from hpctrain.progress import wait_until  # noqa: E402
from hpctrain.slurm.client import slurm_env  # noqa: E402

ENV = slurm_env()  # $SLURM_CONF, else the checkout's embedded cluster
BIN = Path(sys.executable).parent
FAULTS = ("kill_rank", "preempt_usr1", "preempt_term", "admin_requeue", "node_down",
          "cut_checkpoint", "full_scratch")
# the run: long enough that 20 faults land mid-training, short enough for ~30 minutes
RUN = {"experiment": "soak", "model": "mlp5_dropout", "batch_size": 64, "epochs": 12,
       "train_limit": 8000, "test_limit": 1000, "threads": 1, "pictures": False}
PACE = "1:0.1:1000"  # rank 1 sleeps 0.1 s a step in every run: 6 s an epoch and more
DATE_FORMAT = "%Y-%m-%d %H:%M UTC"
RANK0_START = re.compile(r"\[rank 0/\d+ [^\]]*\] .*; startup [\d.]+ s$", re.M)
RANK0_RUN = re.compile(r"\[rank 0/\d+ [^\]]*\] run dir (.*)$", re.M)
RESUMED = re.compile(r"resuming after epoch (\d+)(?: \+ (\d+) steps)? from (\S+)$")


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(list(argv), capture_output=True, text=True, env=ENV, **kw)
    if check and res.returncode != 0:
        raise SystemExit(f"soak: {' '.join(argv)}: exit {res.returncode}: "
                         f"{(res.stderr or res.stdout).strip()}")
    return res


class Soak:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args, self.work = args, work
        self.rng = random.Random(args.seed)
        self.t0 = time.monotonic()
        self.env = {**ENV, "HPCTRAIN_TEST_SLOW_RANK": PACE, "HOROVOD_CYCLE_TIME": "50"}
        self.scratch = work / "scratch"
        self.records: list[dict] = []

    # ---- the job -----------------------------------------------------------------------
    def submit(self, name: str, profile: Path | None) -> tuple[Path, subprocess.Popen]:
        run_dir = self.work / name
        config = self.work / "soak.yaml"
        argv = [str(BIN / "hpctrain"), "submit", "--config", str(config), "--nodes", "2",
                "--run-dir", str(run_dir), "--max-restarts", "100", "--wait",
                *(["--profile", str(profile)] if profile else [])]
        return run_dir, subprocess.Popen(argv, env=self.env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True)

    def job_id(self, run_dir: Path) -> str:
        wait_until(lambda: (run_dir / "submission.json").is_file(), 120, "submission")
        return json.loads((run_dir / "submission.json").read_text())["job_id"]

    def field(self, job: str, name: str) -> str:
        out = sh("scontrol", "show", "job", "-o", job, check=False).stdout
        m = re.search(rf"\b{name}=(\S+)", out)
        return m.group(1) if m else ""

    def training_runs(self, run_dir: Path, job: str) -> int:
        """How many runs of the job have started training (rank 0's start-up line)."""
        log = run_dir / f"slurm-{job}.out"
        return len(RANK0_START.findall(log.read_text(errors="replace"))) if log.is_file() else 0

    def epochs(self, run_dir: Path) -> list[int]:
        path = run_dir / "metrics.jsonl"
        return [json.loads(x)["epoch"] for x in path.read_text().splitlines()] \
            if path.is_file() else []

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 1)

    # ---- faults ------------------------------------------------------------------------
    def rank_pids(self, job: str) -> dict[int, int]:
        pids = {}
        for proc in Path("/proc").iterdir():
            try:
                raw = (proc / "environ").read_bytes().decode(errors="replace")
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            env = dict(kv.split("=", 1) for kv in raw.split("\0") if "=" in kv)
            if env.get("SLURM_JOB_ID") == job and b"train" in cmd and b"hpctrain" in cmd \
                    and "SLURM_PROCID" in env:
                pids[int(env["SLURM_PROCID"])] = int(proc.name)
        return pids

    def requeue_when_failed(self, job: str) -> None:
        """The operator's part: a job that failed is queued again."""
        wait_until(lambda: self.field(job, "JobState") in ("FAILED", "COMPLETED", "CANCELLED"),
                  180, "the job to fail")
        sh("scontrol", "requeue", job)

    def inject(self, kind: str, run_dir: Path, job: str) -> str:
        """Inject `kind`; a note on what was done."""
        if kind in ("kill_rank", "cut_checkpoint"):
            note = ""
            if kind == "cut_checkpoint":
                ckpts = sorted(p for p in (run_dir / "checkpoints").glob("epoch-*")
                               if p.is_dir())
                if ckpts:
                    (data,) = ckpts[-1].glob("ckpt.data-*")
                    data.write_bytes(data.read_bytes()[:data.stat().st_size // 3])
                    note = f"cut {ckpts[-1].name}; "
            pids = wait_until(lambda: self.rank_pids(job), 60, "the ranks' processes")
            rank = self.rng.choice(sorted(pids))
            os.kill(pids[rank], signal.SIGKILL)
            self.requeue_when_failed(job)
            return note + f"killed rank {rank}"
        if kind == "preempt_usr1":
            sh("scancel", "--signal=USR1", job)
            return "USR1 to the ranks"
        if kind == "preempt_term":
            sh("scancel", "--signal=TERM", job)
            return "TERM to the ranks"
        if kind == "admin_requeue":
            sh("scontrol", "requeue", job)
            return "scontrol requeue"
        if kind == "node_down":
            nodes = sh("scontrol", "show", "hostnames", self.field(job, "NodeList")).stdout
            node = nodes.split()[-1]
            sh("scontrol", "update", f"NodeName={node}", "State=DOWN", "Reason=soak")
            self.down.append(node)
            return f"{node} DOWN"
        if kind == "full_scratch":
            ballast = self.scratch / "ballast"
            free = shutil.disk_usage(self.scratch).free
            with open(ballast, "wb") as f:
                f.truncate(0)
                f.write(b"\0" * max(0, free - 4096))
            log = run_dir / f"slurm-{job}.out"
            refusals = log.read_text(errors="replace").count("GB free")
            sh("scontrol", "requeue", job)
            wait_until(lambda: log.read_text(errors="replace").count("GB free") > refusals,
                      300, "the data copy to fail")
            ballast.unlink()
            self.requeue_when_failed(job)
            return "scratch filled, requeued; freed, requeued again"
        raise ValueError(kind)

    # ---- the soak ----------------------------------------------------------------------
    def run(self) -> dict:
        a = self.args
        data = Path(a.data).resolve()
        (self.work / "soak.yaml").write_text(yaml.safe_dump({**RUN, "data": str(data)}))
        size = data.stat().st_size
        self.scratch.mkdir()
        # room for every logical node's copy: they share this one file system, where a real
        # cluster's nodes each have a disk
        sh("mount", "-t", "tmpfs", "-o", f"size={size * 8 + (16 << 20)}", "tmpfs",
           str(self.scratch))
        profile = self.work / "soak-profile.yaml"
        embedded = (REPO / "env" / "clusters" / "embedded.yaml").read_text()
        profile.write_text(embedded.replace("scratch: null\n", f"scratch: '{self.scratch}'\n"))
        self.down: list[str] = []
        self.job = ""
        proc: subprocess.Popen | None = None
        try:
            print("soak: the reference run, without faults", flush=True)
            ref_dir, ref = self.submit("reference", None)
            out, _ = ref.communicate(timeout=3600)
            if ref.returncode != 0:
                raise SystemExit(f"soak: the reference run failed:\n{out[-2000:]}")
            spe, rate, tracing = self.pace(ref_dir)
            self.spe = spe
            total = RUN["epochs"] * spe
            plan = list(FAULTS) + [self.rng.choice(FAULTS) for _ in range(a.faults - len(FAULTS))]
            self.rng.shuffle(plan)
            # where in the run each fault hits: random points of its steps, in order
            marks = sorted(self.rng.uniform(0.03, 0.97) * total for _ in plan)
            self.t0 = time.monotonic()
            run_dir, proc = self.submit("soak", profile)
            self.job = job = self.job_id(run_dir)
            log = run_dir / f"slurm-{job}.out"
            runs = wait_until(lambda: self.training_runs(run_dir, job), 900, "training")
            at, since = 0, time.monotonic()  # the run's position (steps) when it last started
            for i, (kind, mark) in enumerate(zip(plan, marks, strict=True), 1):
                def step(a0=at, t=since) -> float:  # where the run is now, estimated
                    return a0 + max(0.0, time.monotonic() - t - tracing) * rate

                wait_until(lambda m=mark: proc.poll() is not None or step() >= m, 3600,
                           f"step {mark:.0f}")
                if proc.poll() is not None:
                    raise SystemExit(f"soak: the run ended before fault {i}: {proc.returncode}")
                position = step()
                epochs_done = len(self.epochs(run_dir))
                hit = self.now()
                note = self.inject(kind, run_dir, job)
                runs = wait_until(lambda n=runs: (k := self.training_runs(run_dir, job)) > n
                                  and k, 900, f"the job to train again after {kind}")
                since, back = time.monotonic(), self.now()
                m = RESUMED.search(RANK0_RUN.findall(log.read_text(errors="replace"))[-1])
                at = int(m[1]) * spe + int(m[2] or 0) if m else 0
                for node in self.down:
                    sh("scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)
                self.down.clear()
                redone = max(0.0, position - at)
                self.records.append({
                    "n": i, "fault": kind, "note": note, "at_s": hit, "at_step": round(position),
                    "epochs_done": epochs_done, "recovery_s": round(back - hit, 1),
                    "resumed_at_step": at, "redone_steps": round(redone),
                    "redone_s": round(redone / rate, 1)})
                print(f"soak: fault {i}/{len(plan)} {kind} at {hit:.0f} s, step ~{position:.0f} "
                      f"({note}); training again {back - hit:.0f} s later from step {at}",
                      flush=True)
            out, _ = proc.communicate(timeout=3600)
            if proc.returncode != 0:
                raise SystemExit(f"soak: the run failed after its faults:\n{out[-3000:]}")
            return self.result(ref_dir, run_dir, job)
        finally:
            # a failed soak stops its job first
            if self.job and proc is not None and proc.poll() is None:
                sh("scancel", self.job, check=False)
                proc.wait(timeout=120)
            for node in self.down:
                sh("scontrol", "update", f"NodeName={node}", "State=RESUME", check=False)
            sh("umount", "-l", str(self.scratch), check=False)

    def pace(self, ref_dir: Path) -> tuple[int, float, float]:
        """Steps an epoch, steps a second of training, and the seconds a run takes to trace
        its first steps, as the reference ran (its first epoch less a typical one)."""
        log = next(ref_dir.glob("slurm-*.out")).read_text(errors="replace")
        spe = int(re.search(r"(\d+) steps/epoch", log)[1])
        rows = [json.loads(x) for x in (ref_dir / "metrics.jsonl").read_text().splitlines()]
        typical = statistics.median(r["epoch_s"] for r in rows)
        return spe, spe / typical, max(0.0, rows[0]["epoch_s"] - typical)

    def result(self, ref_dir: Path, run_dir: Path, job: str) -> dict:
        from hpctrain.machine import cpu

        ref = json.loads((ref_dir / "report.json").read_text())
        rep = json.loads((run_dir / "report.json").read_text())
        epochs = self.epochs(run_dir)
        same = rep["ranks_in_sync"]["weight_sha256"] == ref["ranks_in_sync"]["weight_sha256"]
        return {
            "seed": self.args.seed, "faults": len(self.records),
            "date": time.strftime(DATE_FORMAT, time.gmtime()), "cpu": cpu(),
            "commit": sh("git", "rev-parse", "--short", "HEAD", cwd=REPO).stdout.strip(),
            "duration_s": self.now(), "run": RUN, "pace": PACE,
            "steps_per_epoch": self.spe,
            "epochs_logged": epochs,
            "every_epoch_once": epochs == list(range(1, RUN["epochs"] + 1)),
            "weights": {"soak": rep["ranks_in_sync"]["weight_sha256"],
                        "reference": ref["ranks_in_sync"]["weight_sha256"]},
            "identical_weights": same,
            "test_accuracy": {"soak": rep["test_accuracy"], "reference": ref["test_accuracy"]},
            "segments": len(rep["segments"]),
            "checkpoints_skipped": rep.get("checkpoints_skipped", []),
            "records": self.records,
        }


def _sha(result: dict, run: str) -> str:
    """The run's weight checksum (one per rank, equal when the ranks agree), shortened."""
    value = result["weights"][run]
    return ", ".join(sorted({v[:16] for v in ([value] if isinstance(value, str) else value)}))


def render_readme(result: dict) -> str:
    ok = result["identical_weights"] and result["every_epoch_once"]
    recs = result["records"]
    lines = [
        "# Reliability: a fault-injection soak", "",
        "Rendered by `scripts/soak.py render` from [soak.json](soak.json); run with "
        "`make soak`.", "",
        f"One 2-node job on the embedded cluster ({result['run']['model']}, "
        f"{result['run']['epochs']} epochs of {result['run']['train_limit']} images), hit by "
        f"{result['faults']} faults at random moments (seed {result['seed']}), against the "
        f"same job run without faults. {result['cpu']['model']}, commit {result['commit']}, "
        f"{result['date']}; the soak took {result['duration_s'] / 60:.0f} minutes.", "",
        f"- **Final weights identical, bit for bit** (sha256 `{_sha(result, 'soak')}...` on "
        "every rank of both runs)" if result["identical_weights"]
        else f"- **Final weights differ**: soak `{_sha(result, 'soak')}`, reference "
        f"`{_sha(result, 'reference')}`",
        f"- Every epoch logged once: {'yes' if result['every_epoch_once'] else 'NO'} "
        f"({len(result['epochs_logged'])} epochs); test accuracy "
        f"{result['test_accuracy']['soak']:.4f} (reference "
        f"{result['test_accuracy']['reference']:.4f})",
        f"- {result['segments']} segments; checkpoints moved aside as damaged: "
        f"{len(result['checkpoints_skipped'])}",
        f"- Verdict: **{'survived' if ok else 'FAILED'}**", "",
        "| # | fault | what was done | at (s) | at step | epochs done | back training "
        "after (s) | resumed at step | redone (steps) | redone (s) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in recs:
        lines.append(f"| {r['n']} | {r['fault']} | {r['note']} | {r['at_s']:.0f} | "
                     f"{r['at_step']} | {r['epochs_done']} | {r['recovery_s']:.0f} | "
                     f"{r['resumed_at_step']} | {r['redone_steps']} | {r['redone_s']} |")
    by_kind: dict[str, list[dict]] = {}
    for r in recs:
        by_kind.setdefault(r["fault"], []).append(r)
    lines += ["", "| fault | times | median back training after (s) | median training "
              "redone (s) |", "|---|---:|---:|---:|"]
    for kind, rs in sorted(by_kind.items()):
        redone = [r["redone_s"] for r in rs]
        lines.append(f"| {kind} | {len(rs)} | "
                     f"{statistics.median(r['recovery_s'] for r in rs):.0f} | "
                     f"{statistics.median(redone):.1f} |")
    lines += ["", f"{result['steps_per_epoch']} steps an epoch. \"Back training after\" runs "
              "from the fault to the rerun's ranks logging their start (requeue hold, "
              "scheduling, TensorFlow's start-up, the data copy, loading the checkpoint). "
              "\"Redone\" is the work between the step the fault hit (estimated, to ~10 "
              "steps, from the reference run's pace and its first steps' tracing time) and "
              "the step the rerun resumed from: ~0 where the ranks checkpointed on the "
              "stop request, up to an epoch after a kill, more where the newest checkpoint "
              "was damaged. "
              "Rank 1 sleeps 0.1 s a step (the test hook that paces runs alike on any "
              "machine).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    r = sub.add_parser("run", help="the soak on the embedded cluster (SLURM_CONF or the "
                       "checkout's cluster)")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--faults", type=int, default=20)
    r.add_argument("--data", default=str(REPO / "data" / "fashion-mnist.h5"))
    r.add_argument("--out", default=str(REPO / "results" / "reliability"))
    g = sub.add_parser("render", help="README.md from soak.json")
    g.add_argument("--out", default=str(REPO / "results" / "reliability"))
    args = p.parse_args(argv)
    out = Path(args.out)
    from hpctrain.atomic import write_json, write_text

    if args.action == "run":
        if args.faults < len(FAULTS):
            p.error(f"--faults: at least {len(FAULTS)}, one of each kind")
        work = Path(tempfile.mkdtemp(prefix="soak-"))
        print(f"soak: working in {work} (kept when the soak fails)", flush=True)
        result = Soak(args, work).run()
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "soak.json", result, sort_keys=False)
        shutil.rmtree(work)
    write_text(out / "README.md", render_readme(json.loads((out / "soak.json").read_text())))
    print(f"soak: {out / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

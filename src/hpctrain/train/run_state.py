"""Where a run stands, owned in one place: the epoch and step it starts from, the metrics rows
and the segments of earlier jobs, and an epoch begun in an earlier segment. Rank 0 picks it
from the newest checkpoint and broadcasts it; every checkpoint saves `snapshot()` of it.

A segment is one process lifetime of a run (one job, or one requeue of it):
`{first_epoch, first_step, last_epoch, last_step, job_id, restart_count, nodes, started,
train_s, ended}`; the report lists them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from hpctrain.environment import JobEnvironment
from hpctrain.train import checkpoint


@dataclass
class RunState:
    epoch: int = 0  # epochs completed before this segment
    step: int = 0  # steps of the next epoch completed before this segment
    checkpoint: str | None = None  # where they were restored from
    rows: list[dict] = field(default_factory=list)  # metrics of the epochs completed
    segments: list[dict] = field(default_factory=list)
    partial: dict | None = None  # {"step", "epoch_s", ...}: an epoch begun earlier

    @classmethod
    def pick(cls, hvd_tf, run_dir: Path, resume: bool, is_main: bool) -> RunState:
        """Horovod: rank 0 picks the newest checkpoint and broadcasts where the run stands."""
        found = checkpoint.latest(run_dir / "checkpoints") if resume and is_main else None
        mine = (found[0], found[1], str(found[2]), checkpoint.read_state(found[2])) \
            if found else (0, 0, None, {})
        epoch, step, path, saved = hvd_tf.broadcast_object(mine, root_rank=0)
        return cls(epoch=epoch, step=step, checkpoint=path, rows=list(saved.get("rows", [])),
                   segments=list(saved.get("segments", [])), partial=saved.get("partial"))

    def describe(self) -> str:
        where = f"epoch {self.epoch}" + (f" + {self.step} steps" if self.step else "")
        return f"resuming after {where} from {self.checkpoint}"

    def begin_segment(self, env: JobEnvironment, node_names: list[str]) -> None:
        self.segments.append({
            "first_epoch": self.epoch + 1, "first_step": self.step, "last_epoch": self.epoch,
            "last_step": 0, "job_id": env.job_id, "restart_count": env.restart_count,
            "nodes": sorted(set(node_names)), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "train_s": 0.0, "ended": "running"})

    def end_segment(self, how: str) -> None:
        self.segments[-1]["ended"] = how

    def snapshot(self, rows: list[dict], partial: dict | None, train_s: float,
                 stop_reason: str | None) -> dict:
        """The bookkeeping a checkpoint saves and a report reads, as of now."""
        self.segments[-1].update(last_epoch=len(rows), train_s=train_s,
                                 last_step=partial["step"] if partial else 0)
        if stop_reason:
            self.end_segment(f"stopped ({stop_reason})")
        return {"rows": rows, "segments": self.segments, "partial": partial}

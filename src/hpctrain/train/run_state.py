"""Where a run stands, owned in one place: the epoch and step it starts from, the metrics rows
and the segments of earlier jobs, an epoch begun in an earlier segment, and the checkpoints
skipped as unusable. Rank 0 picks it from the newest checkpoint that passes verification
(moving newer, damaged ones aside) and broadcasts it, so every rank loads the same one;
every checkpoint saves `snapshot()` of it.

A segment is one process lifetime of a run (one job, or one requeue of it):
`{first_epoch, first_step, last_epoch, last_step, job_id, restart_count, nodes, started,
train_s, ended}`; the report lists them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hpctrain.environment import JobEnvironment
from hpctrain.train import checkpoint


class NoUsableCheckpoint(Exception):
    """--resume found checkpoints, and every one failed verification or loading."""


@dataclass
class RunState:
    epoch: int = 0  # epochs completed before this segment
    step: int = 0  # steps of the next epoch completed before this segment
    checkpoint: str | None = None  # where they were restored from
    rows: list[dict] = field(default_factory=list)  # metrics of the epochs completed
    segments: list[dict] = field(default_factory=list)
    partial: dict | None = None  # {"step", "epoch_s", ...}: an epoch begun earlier
    skipped: list[dict] = field(default_factory=list)  # {checkpoint, reason, moved_to}

    @classmethod
    def pick(cls, hvd_tf, run_dir: Path, resume: bool, is_main: bool,
             loadable: Callable[[Path], str | None] = lambda path: None) -> RunState:
        """Horovod: rank 0 picks the newest usable checkpoint and broadcasts where the run
        stands. Newer checkpoints that fail `checkpoint.verify` (or `loadable`, which reads
        every tensor of one without a manifest) are moved aside, each with one line on
        stdout. Raises NoUsableCheckpoint on every rank when none is left."""
        mine: tuple = (0, 0, None, {}, [])
        if resume and is_main:
            try:
                mine = _pick(run_dir / "checkpoints", loadable)
            except OSError as e:  # every rank must hear of it, not wait in the broadcast
                mine = (0, 0, None, {}, [{"checkpoint": "checkpoints", "moved_to": None,
                                          "reason": f"cannot be read or moved: {e}"}])
        epoch, step, path, saved, skipped = hvd_tf.broadcast_object(mine, root_rank=0)
        if path is None and skipped:
            raise NoUsableCheckpoint(
                f"no usable checkpoint in {run_dir / 'checkpoints'}: {len(skipped)} moved "
                f"to {run_dir / 'checkpoints' / checkpoint.SKIPPED} ("
                + "; ".join(f"{s['checkpoint']}: {s['reason']}" for s in skipped) + ")")
        return cls(epoch=epoch, step=step, checkpoint=path, rows=list(saved.get("rows", [])),
                   segments=list(saved.get("segments", [])), partial=saved.get("partial"),
                   skipped=list(saved.get("skipped", [])) + skipped)

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
        return {"rows": rows, "segments": self.segments, "partial": partial,
                "skipped": self.skipped}


def _pick(directory: Path, loadable: Callable[[Path], str | None]) -> tuple:
    """(epoch, step, path, saved state, newly skipped) of the newest usable checkpoint."""
    skipped: list[dict] = []
    for epoch, step, path in reversed(checkpoint.complete(directory)):
        problem = checkpoint.verify(path)
        if problem is None and not (path / checkpoint.MANIFEST).is_file():
            problem = loadable(path)  # written before manifests: read it to know
        if problem is None:
            return epoch, step, str(path), checkpoint.read_state(path), skipped
        moved = checkpoint.move_aside(path, problem)
        print(f"hpctrain: checkpoint {path.name} skipped ({problem}); moved to {moved}",
              flush=True)
        skipped.append({"checkpoint": path.name, "reason": problem, "moved_to": str(moved)})
    return 0, 0, None, {}, skipped

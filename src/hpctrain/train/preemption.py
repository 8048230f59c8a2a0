"""Stop requests: the time limit is near, or the job is being preempted.

A rank is asked to stop in one of two ways:

- a signal to the rank itself: SIGUSR1 (`scancel --signal=USR1 <job>`, the preemption path)
  or SIGTERM (Slurm's first step when it cancels or preempts a job);
- a file `<run dir>/STOP`, which the batch script writes when *it* receives
  `--signal=B:USR1@<seconds>` before the time limit. This works the same for all three
  launchers (srun, mpirun, horovodrun), and a request made before the ranks have started
  is not lost.

The trainer polls `StopRequest.reason()` every few steps and the ranks agree by allreduce
(callbacks.StopOnRequest); they then finish the step, checkpoint and exit with
EXIT_REQUEUE; rank 0 leaves a REQUEUE file, which the batch script answers with
`scontrol requeue`.
"""

from __future__ import annotations

import signal
from pathlib import Path

EXIT_REQUEUE = 75  # sysexits.h EX_TEMPFAIL: checkpointed on request; run again to continue
STOP_FILE = "STOP"
# Written by rank 0 once the stop checkpoint is safe. The job script requeues on it rather
# than on the exit code: srun --kill-on-bad-exit may kill the last ranks while they exit.
REQUEUE_FILE = "REQUEUE"
SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopRequest:
    """Remembers the first stop signal; checks the run directory's STOP file on demand."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self.stop_file: Path | None = None

    def install(self) -> StopRequest:
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def watch(self, run_dir: Path) -> None:
        self.stop_file = Path(run_dir) / STOP_FILE

    def _handle(self, signum, frame) -> None:
        if self.signal_name is None:
            self.signal_name = signal.Signals(signum).name

    def reason(self) -> str | None:
        """Why this rank was asked to stop (e.g. "SIGUSR1", "STOP file"), or None."""
        if self.signal_name:
            return self.signal_name
        if self.stop_file is not None and self.stop_file.exists():
            return f"{STOP_FILE} file"
        return None


REASONS = ("SIGUSR1", "SIGTERM", f"{STOP_FILE} file")  # index + 1 is the allreduced code


def encode(reason: str | None) -> int:
    return 0 if reason is None else REASONS.index(reason) + 1 if reason in REASONS else 1


def decode(code: int) -> str | None:
    return None if code <= 0 else REASONS[min(code, len(REASONS)) - 1]

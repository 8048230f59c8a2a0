"""Epochs in turns: two training processes started together on the same cores run their
epochs one at a time, alternately, so that each epoch of one is measured next to an epoch of
the other, seconds apart (a benchmark's pairing; between whole runs minutes apart this host's
speed drifts by several per cent).

`HPCTRAIN_BENCH_TURNS=FILE:ROLE` (ROLE 0 or 1; benchmarks only) turns it on in `hpctrain
train` and in the plain Keras baseline. In epoch e, role e % 2 goes first (0 1, 1 0, 0 1, ...:
neither always follows the other). A process waits for its turn before the epoch begins,
passes the turn on after the epoch's evaluation, and after its last epoch waits until the
other's last epoch is over too (what it does after training must not overlap it). FILE holds
the number of turns taken; only the process whose turn it is writes it (a new file renamed
over the old).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "HPCTRAIN_BENCH_TURNS"
POLL_S = 0.005
TIMEOUT_S = 900.0  # the other process died: give up instead of waiting forever


class Turns:
    def __init__(self, path: Path, role: int, timeout_s: float = TIMEOUT_S):
        if role not in (0, 1):
            raise ValueError(f"{ENV}: role {role} is not 0 or 1")
        self.path, self.role, self.timeout_s = Path(path), role, timeout_s

    @classmethod
    def from_env(cls) -> Turns | None:
        value = os.environ.get(ENV)
        if not value:
            return None
        path, _, role = value.rpartition(":")
        return cls(Path(path), int(role))

    def turn(self, epoch: int) -> int:
        """The number of turns taken before this process' turn in `epoch`."""
        return 2 * epoch + (self.role if epoch % 2 == 0 else 1 - self.role)

    def taken(self) -> int:
        try:
            return int(self.path.read_text() or 0)
        except FileNotFoundError:
            return 0

    def wait_for(self, count: int) -> None:
        deadline = time.monotonic() + self.timeout_s
        while self.taken() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ENV}: no turn {count} after {self.timeout_s:.0f} s "
                                   f"({self.path} says {self.taken()})")
            time.sleep(POLL_S)

    def begin(self, epoch: int) -> None:
        self.wait_for(self.turn(epoch))

    def end(self, epoch: int) -> None:
        tmp = self.path.with_name(f"{self.path.name}.{self.role}.tmp")
        tmp.write_text(str(self.turn(epoch) + 1))
        os.replace(tmp, self.path)

    def last(self, epochs: int) -> None:
        """After the last epoch: wait for the other process' last epoch."""
        self.wait_for(2 * epochs)

    def callbacks(self, tf, epochs: int) -> tuple:
        """Keras callbacks: the first goes before every other callback (an epoch's clock
        starts on the turn), the second after every other (the turn passes on after the
        evaluation and the epoch's records)."""
        first = tf.keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: self.begin(e))
        last = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: self.end(e),
                                                 on_train_end=lambda logs: self.last(epochs))
        return first, last

"""Epochs in turns: two or more training processes started together on the same cores run
their epochs one at a time, in turns, so that each epoch of one is measured next to an epoch
of the others, seconds apart (a benchmark's pairing; between whole runs minutes apart this
host's speed drifts by several per cent).

`HPCTRAIN_BENCH_TURNS=FILE:ROLE` (two processes, ROLE 0 or 1) or `FILE:ROLE/COUNT` (COUNT
processes, ROLE 0..COUNT-1; benchmarks only) turns it on in `hpctrain train` and in the plain
Keras baseline. The order within an epoch follows a balanced Latin square (Williams' design;
`order`): with two, role e % 2 goes first in epoch e (0 1, 1 0, 0 1, ...); with more, every
role takes every place and follows every other role equally often over 2 x COUNT epochs (COUNT
when even). A process waits for its turn before the epoch begins, passes the turn on after the
epoch's evaluation, and after its last epoch waits until the others' last epochs are over too
(what it does after training must not overlap them). FILE holds the number of turns taken;
only the process whose turn it is writes it (a new file renamed over the old).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ENV = "HPCTRAIN_BENCH_TURNS"
POLL_S = 0.005
TIMEOUT_S = 900.0  # the other process died: give up instead of waiting forever


def order(epoch: int, count: int) -> list[int]:
    """The roles in `epoch`'s order: row epoch % count of the balanced Latin square whose first
    row is 0, 1, count-1, 2, count-2, ...; for an odd count the rows repeat mirrored in epochs
    count..2 x count-1 (alone they would not balance who follows whom)."""
    first, lo, hi = [0], 1, count - 1
    while lo <= hi:
        first.append(lo)
        if lo != hi:
            first.append(hi)
        lo, hi = lo + 1, hi - 1
    i = epoch % (count if count % 2 == 0 else 2 * count)
    row = [(r + i) % count for r in first]
    return row[::-1] if i >= count else row


class Turns:
    def __init__(self, path: Path, role: int, timeout_s: float = TIMEOUT_S, count: int = 2):
        if count < 2 or not 0 <= role < count:
            raise ValueError(f"{ENV}: role {role} is not 0..{count - 1} of {count} processes")
        self.path, self.role, self.timeout_s, self.count = Path(path), role, timeout_s, count

    @classmethod
    def from_env(cls) -> Turns | None:
        value = os.environ.get(ENV)
        return cls.parse(value) if value else None

    @classmethod
    def parse(cls, value: str) -> Turns:
        """From `FILE:ROLE` or `FILE:ROLE/COUNT`."""
        path, _, role = value.rpartition(":")
        role, _, count = role.partition("/")
        return cls(Path(path), int(role), count=int(count or 2))

    def turn(self, epoch: int) -> int:
        """The number of turns taken before this process' turn in `epoch`."""
        return self.count * epoch + order(epoch, self.count).index(self.role)

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
        """After the last epoch: wait for the other processes' last epochs."""
        self.wait_for(self.count * epochs)

    def callbacks(self, tf, epochs: int) -> tuple:
        """Keras callbacks: the first goes before every other callback (an epoch's clock
        starts on the turn), the second after every other (the turn passes on after the
        evaluation and the epoch's records)."""
        first = tf.keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: self.begin(e))
        last = tf.keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: self.end(e),
                                                 on_train_end=lambda logs: self.last(epochs))
        return first, last

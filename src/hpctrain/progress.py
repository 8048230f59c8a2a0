"""Progress of a long step: a tqdm bar on a terminal, plain lines in a batch log.

    with Progress(total=1_281_167, what="train images", prefix="[rank 0] ") as bar:
        bar.update(64)

In a batch log (stderr not a terminal) a line is printed at every 10 % and at least every
`every_s` seconds, so `tail -f slurm-*.out` shows movement without a flood of bar redraws.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, what: str, prefix: str = "", bar: bool | None = None,
                 every_s: float = 60.0, stream=None, unit: str = "img"):
        self.total, self.what, self.prefix = max(0, total), what, prefix
        self.stream = stream or sys.stderr
        self.done = 0
        self.note = ""
        self.start = self._last = time.monotonic()
        self._next_tenth = 1
        self.every_s = every_s
        use_bar = self.stream.isatty() if bar is None else bar
        self._bar = None
        if use_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=f"{prefix}{what}", unit=unit,
                             file=self.stream, smoothing=0.05, dynamic_ncols=True)

    def update(self, n: int, note: str = "") -> None:
        self.done += n
        if note:
            self.note = note
        if self._bar is not None:
            self._bar.update(n)
            if note:
                self._bar.set_postfix_str(note, refresh=False)
            return
        now = time.monotonic()
        tenth = self.done * 10 // self.total if self.total else 10
        if tenth >= self._next_tenth or now - self._last >= self.every_s:
            self._next_tenth = tenth + 1
            self._last = now
            self._line()

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        pct = 100.0 * self.done / self.total if self.total else 100.0
        print(f"{self.prefix}{self.what}: {self.done:,}/{self.total:,} ({pct:.0f} %), "
              f"{self.done / elapsed:,.0f}/s" + (f", {self.note}" if self.note else ""),
              file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.done and self._next_tenth <= 10:
            self._line()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_until(predicate, timeout: float, what: str, poll: float = 0.5):
    """Poll `predicate()` until it returns something true; that value. TimeoutError naming
    `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")

"""Progress of a long loop (training steps, messages decoded).

A tqdm bar on a terminal; plain lines (position, rate, ETA) at most every 30 s when the output
is captured, because a carriage-return bar turns into one unreadable line in a log file.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, name: str, total: int, unit: str, start: int = 0, every_seconds: float = 30.0):
        self.name, self.total, self.unit = name, total, unit
        self.start = self.position = start  # a resumed run starts past 0; rates count from here
        self.every_seconds = every_seconds
        self.t0 = time.monotonic()
        self.last_print = 0.0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=name, unit=unit, dynamic_ncols=True)

    def advance(self, count: int = 1, note: str = "") -> None:
        """Move on by `count` units; `note` (e.g. the current loss) goes on the bar or line."""
        self.position += count
        if self.bar is not None:
            self.bar.update(count)
            if note:
                self.bar.set_postfix_str(note)
            return
        now = time.monotonic()
        first = self.position - count == self.start
        if first or self.position >= self.total or now - self.last_print >= self.every_seconds:
            self.last_print = now
            print(self.line(now, note), file=sys.stderr, flush=True)

    def line(self, now: float, note: str = "") -> str:
        done = self.position - self.start
        seconds_each = (now - self.t0) / max(done, 1)
        if seconds_each >= 1:
            rate = f"{seconds_each:.2f}s/{self.unit}"
        else:
            rate = f"{1 / max(seconds_each, 1e-9):.1f} {self.unit}s/s"
        eta = seconds_each * (self.total - self.position)
        note = f" {note}" if note else ""
        return (f"{self.name}: {self.unit} {self.position}/{self.total}{note} {rate} "
                f"eta {int(eta // 60)}m{int(eta % 60):02d}s")

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

"""Timestamp the test guest's heartbeat (``VFBEAT`` lines, see tests/guest) as the lines appear.

The guest prints one beat a second; a resize that stops it shows as a gap between two beats as the host saw
them arrive. ``HeartbeatMonitor`` tails the console log in a thread (every 50 ms) and keeps, for each beat,
the host's monotonic time it was first seen; ``longest_gap`` is the downtime plus one beat interval.
"""

from __future__ import annotations

import os
import threading
import time
from typing import List, Optional, Tuple

from tests.support.guest_report import Beat, heartbeats

POLL = 0.05


class HeartbeatMonitor:
    """Tail ``console_log`` for heartbeats until ``stop``; ``beats`` holds (host time, beat) in order."""

    def __init__(self, console_log: str) -> None:
        self.console_log = console_log
        self.beats: List[Tuple[float, Beat]] = []
        self._offset = 0
        self._tail = b""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "HeartbeatMonitor":
        self._skip_existing()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._read()

    def _skip_existing(self) -> None:
        try:
            self._offset = os.path.getsize(self.console_log)
        except FileNotFoundError:
            self._offset = 0

    def _read(self) -> None:
        try:
            with open(self.console_log, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return
        if not data:
            return
        now = time.monotonic()
        self._offset += len(data)
        data = self._tail + data
        complete, _newline, self._tail = data.rpartition(b"\n")
        for beat in heartbeats(complete.decode("utf-8", "replace")):
            self.beats.append((now, beat))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._read()
            time.sleep(POLL)

    def wait_for_beats(self, count: int, timeout: float = 120, boot: Optional[str] = None) -> None:
        """Wait until ``count`` beats (of ``boot``, when given) have been seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len([b for _t, b in self.beats if boot is None or b.boot == boot]) >= count:
                return
            time.sleep(POLL)
        raise AssertionError("saw %d heartbeats in %s after %.0f s, wanted %d" % (
            len(self.beats), self.console_log, timeout, count))

    def longest_gap(self) -> float:
        """The longest time between two beats the host saw (seconds); 0 with fewer than two."""
        times = [t for t, _b in self.beats]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)

    def boots(self) -> List[str]:
        seen: List[str] = []
        for _t, beat in self.beats:
            if beat.boot not in seen:
                seen.append(beat.boot)
        return seen

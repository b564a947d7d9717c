"""What the canary lab shows of a rollout: the traffic split users see through nginx, and the weights changeflow
gave nginx as they changed (read from the lab's upstream include file, `# written by changeflow: N% to the
canary`, every 50 ms on a thread), so a test asserts when the traffic went back to stable even where a resumed
run sends it to the canary again seconds later."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

_HEADER = re.compile(r"written by changeflow: (\d+)% to the canary")


def wait_for_split(lab, expected: set[str], timeout_s: float = 10) -> dict[str, int]:
    """The versions that answered 30 requests through nginx, once they are `expected` (or the last try)."""
    deadline = time.monotonic() + timeout_s
    while True:
        split = lab.traffic_split(30)
        if set(split) == expected or time.monotonic() > deadline:
            return split
        time.sleep(0.2)


class WeightHistory:
    def __init__(self, include_file: Path, every_s: float = 0.05):
        self.include_file = include_file
        self.every_s = every_s
        self.changes: list[tuple[float, int]] = []  # (time.monotonic(), weight) at each change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> "WeightHistory":
        self._sample()  # the weight in force when watching began, before anything the test does next
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _sample(self) -> None:
        found = _HEADER.search(self.include_file.read_text()) if self.include_file.exists() else None
        if found and (not self.changes or self.changes[-1][1] != int(found.group(1))):
            self.changes.append((time.monotonic(), int(found.group(1))))

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def first_at(self, weight: int, after: float) -> float | None:
        """When the weight first became `weight` after the moment `after` (None: it did not)."""
        return next((at for at, w in self.changes if at > after and w == weight), None)

    def weights_after(self, after: float) -> list[int]:
        return [w for at, w in self.changes if at > after]

"""Wall-clock seconds per stage of a run, added up block by block: ``with timer("serve"): ...``."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager


class StageTimer:
    """Adds the wall-clock time of each ``with timer(stage):`` block to ``seconds[stage]``.

    A stage's key appears when its first block ends, so ``seconds`` lists the stages in the order they first
    finished (the order the run logs and prints them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start

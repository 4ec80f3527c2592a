"""The Task protocol: what :class:`trainers.learner.OnlineLearner` asks of a strategy's training task."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Task(Protocol):
    """A strategy's own models, their loss and optimiser, trained by the arm's learner after its base models.

    The learner calls, on every tick, ``train`` and then ``weights``; at checkpoints ``state`` and, on
    resume, ``load_state``. The serving channel of the same ``name`` loads ``weights()`` in its
    ``on_weights`` hook (:class:`serving.channels.base.Channel`).

    A task may say ``draws_global_rng = False`` when its ``train`` neither draws from nor seeds torch's global
    generator: it may then train in a second thread beside other learners (:mod:`trainers.two_threads`). A task
    that does not say so is taken to draw, and keeps to the caller's thread.
    """

    name: str
    """The strategy's name: the key of its weights and state, and the name of its serving channel."""

    def train(self, batch: dict[str, np.ndarray], tick_seed: int) -> dict[str, float]:
        """Train on one tick's logged exposures (the base columns plus the channel's ``log_features``);
        every random draw comes from ``tick_seed``. Returns statistics (``samples`` at least)."""
        ...

    def weights(self) -> dict[str, np.ndarray]:
        """The models' parameters as one flat dict of numpy copies (:func:`trainers.weights.pack_weights`)."""
        ...

    def state(self) -> Any:
        """The task's state record (models, optimiser, counters; :mod:`trainers.checkpoint`)."""
        ...

    def load_state(self, state: Any) -> None:
        """Continue from a record of :meth:`state`: later ticks train exactly as without the interruption."""
        ...

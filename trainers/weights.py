"""How a model's weights travel from a learner to the serving side: numpy copies of state dicts, several modules
packed into one flat ``{"<part>.<parameter>": array}`` dict (a training task's ``weights()``) and split back."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn


def module_arrays(module: nn.Module) -> dict[str, np.ndarray]:
    """The module's state dict as numpy copies (safe to ship across processes)."""
    return {key: value.detach().numpy().copy() for key, value in module.state_dict().items()}


def pack_weights(parts: dict[str, nn.Module]) -> dict[str, np.ndarray]:
    """One flat dict of every part's parameters, each key prefixed with its part's name and a dot."""
    packed: dict[str, np.ndarray] = {}
    for part, module in parts.items():
        packed.update({f"{part}.{key}": value for key, value in module_arrays(module).items()})
    return packed


def unpack_weights(weights: dict[str, np.ndarray], *parts: str) -> tuple[dict[str, torch.Tensor], ...]:
    """The state dicts (as tensors) of ``parts`` from :func:`pack_weights`' output, in the order asked."""
    return tuple({key[len(part) + 1:]: torch.from_numpy(np.array(value)) for key, value in weights.items()
                  if key.startswith(part + ".")} for part in parts)


def state_dict_of(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """A state dict of tensors from :func:`module_arrays`' output (copies: the arrays stay the caller's)."""
    return {key: torch.from_numpy(np.array(value)) for key, value in arrays.items()}


@dataclass(frozen=True)
class WeightsRef:
    """An arm's trained weights left where the trainer put them: each part names one tick's ``{key: weights}`` (on
    Ray, an object in the object store that a Train worker put) and the entry ``key``. The driver passes it on to
    the arm's serving replica, which fetches it; the weights never pass through the driver (docs/performance.md).
    An arm whose learners trained on several workers (``TrainConfig.placement='by_learner'``: the shared base
    models on one, the arm's strategy models on another) has one part per worker, merged in order."""

    parts: tuple[tuple[Any, str], ...]

    @classmethod
    def of(cls, ref: Any, key: str) -> "WeightsRef":
        return cls(((ref, key),))

    @property
    def refs(self) -> list:
        """The objects to fetch, in the order :meth:`pick` takes them."""
        return [ref for ref, _ in self.parts]

    def pick(self, fetched: list[dict[str, dict]]) -> dict:
        """The arm's weights from the fetched ticks (the objects of :attr:`refs`, in order)."""
        if len(fetched) != len(self.parts):
            raise ValueError(f"{len(self.parts)} weight parts, {len(fetched)} fetched")
        out: dict = {}
        for (_, key), tick in zip(self.parts, fetched):
            out |= tick[key]
        return out

    def join(self, other: "WeightsRef") -> "WeightsRef":
        """This arm's weights and another worker's part of them (whose keys win on a clash)."""
        return WeightsRef(self.parts + other.parts)

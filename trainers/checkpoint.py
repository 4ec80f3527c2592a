"""Checkpoint state records: each stateful class names what it saves in one dataclass, its state record.

The convention, followed by serving's feature store, arm policy and channels and by the trainers' tasks:

- a ``@dataclass`` record lists every attribute the object checkpoints, under the attribute's own name.
  A field made with :func:`torch_state` holds a module's or an optimiser's ``state_dict()`` (or a dict of
  them) with its embedding tables as the rows training moved (:mod:`trainers.compact`), :func:`index_bytes` an ANN index's bytes, :func:`nested_state` the ``state()`` record of an
  object that follows this convention itself (:func:`named_states` those of a list of named objects),
  :func:`id_map` an ``IdMap``'s ids; any other field holds a deep copy of the attribute's value;
- the class names in ``NOT_SAVED`` the attributes its constructor rebuilds (configuration, values derived
  from it, caches, wall-clock timers);
- ``state()`` returns ``capture(self, Record)`` and ``load_state(record)`` calls ``restore(self, record)``.

:func:`capture` raises when the object has an attribute in neither the record nor ``NOT_SAVED``, so a new
attribute cannot be left out of checkpoints by accident. A record is a snapshot: later changes to the
object do not reach it.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, TypeVar

from trainers.compact import compact_torch, expand

Record = TypeVar("Record")

_SAVE, _LOAD = "checkpoint_save", "checkpoint_load"


def converted(save: Callable[[Any], Any], load: Callable[[Any, Any], Any]) -> Any:
    """A record field whose attribute is saved as ``save(attribute)`` and restored as
    ``attribute = load(attribute, saved)`` (``load`` may update the attribute in place and return it)."""
    return dataclasses.field(metadata={_SAVE: save, _LOAD: load})


def _state_dict(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {key: _state_dict(value) for key, value in obj.items()}
    return compact_torch(obj)


def _load_state_dict(obj: Any, saved: Any) -> Any:
    if isinstance(obj, dict):
        for key, value in obj.items():
            _load_state_dict(value, saved[key])
    else:
        obj.load_state_dict(expand(saved))
    return obj


def _load_bytes(index: Any, saved: bytes) -> Any:
    index.from_bytes(saved)
    return index


def _load_nested(obj: Any, saved: Any) -> Any:
    obj.load_state(saved)
    return obj


def torch_state() -> Any:
    """A field for an ``nn.Module`` or optimiser (or a dict of them): its ``state_dict()``, loaded back in place."""
    return converted(_state_dict, _load_state_dict)


def index_bytes() -> Any:
    """A field for an :class:`serving.index.ANNIndex`: its serialised graph, loaded back in place."""
    return converted(lambda index: index.to_bytes(), _load_bytes)


def nested_state() -> Any:
    """A field for an object with its own ``state()`` / ``load_state()`` (its record, restored in place)."""
    return converted(lambda obj: obj.state(), _load_nested)


def _named_states(members: list) -> dict[str, Any]:
    return {member.name: state for member in members if (state := member.state()) is not None}


def _load_named_states(members: list, saved: dict[str, Any]) -> list:
    for member in members:
        if member.name in saved:
            member.load_state(saved[member.name])
    return members


def named_states() -> Any:
    """A field for a list of objects with a ``name`` and their own ``state()`` / ``load_state()``: their records
    by name (a ``state()`` of None saves nothing), each restored in place."""
    return converted(_named_states, _load_named_states)


def id_map() -> Any:
    """A field for a :class:`simulator.core.ids.IdMap`: its ids in row order, rebuilt as a new map."""
    return converted(lambda ids: ids.ids.copy(), lambda ids, saved: type(ids)(saved, ids.what))


def unrecorded(owner: Any, record_type: type) -> list[str]:
    """Attributes of ``owner`` neither in ``record_type`` nor in ``owner.NOT_SAVED`` (should be empty)."""
    known = {field.name for field in dataclasses.fields(record_type)} | set(getattr(owner, "NOT_SAVED", ()))
    return sorted(set(vars(owner)) - known)


def capture(owner: Any, record_type: type[Record]) -> Record:
    """The state record of ``owner``: each field of ``record_type`` read from the attribute of that name."""
    missing = unrecorded(owner, record_type)
    if missing:
        raise ValueError(f"{type(owner).__name__} has attributes {missing} that are neither in "
                         f"{record_type.__name__} nor in NOT_SAVED: add them to one of the two")
    values = {}
    for field in dataclasses.fields(record_type):
        value = getattr(owner, field.name)
        save = field.metadata.get(_SAVE)
        values[field.name] = save(value) if save else copy.deepcopy(value)
    return record_type(**values)


def restore(owner: Any, record: Any) -> None:
    """Set ``owner``'s attributes from its state record (the inverse of :func:`capture`); plain values are taken
    as they are, not copied."""
    for field in dataclasses.fields(record):
        saved = getattr(record, field.name)
        load = field.metadata.get(_LOAD)
        setattr(owner, field.name, load(getattr(owner, field.name), saved) if load else saved)

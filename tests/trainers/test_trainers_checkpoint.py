"""The checkpoint convention (trainers/checkpoint.py), the weights format (trainers/weights.py) and the Task protocol:
every task and learner record round trips to an equal object and names every attribute (a new one is caught)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from serving.arms import arm_tasks
from simulator.core.config import ArmSpec, DualRecSpec, IHMArmSpec, ModelConfig, NextUserSpec
from trainers.arm_context import ArmContext, model_configs
from trainers.checkpoint import capture, nested_state, restore, torch_state, unrecorded
from trainers.learner import LearnerState, OnlineLearner
from trainers.tasks.base import Task
from trainers.tasks.dualrec import DualRecTask, DualRecTaskState
from trainers.tasks.ihm_online import IHMTask, IHMTaskState
from trainers.tasks.next_user import NextUserTask, NextUserTaskState
from trainers.weights import module_arrays, pack_weights, state_dict_of, unpack_weights

CTX = ArmContext(model=ModelConfig(dim=8, id_buckets=256, hidden=16), slate_size=4, n_item_dense=1, seed=7)
SPECS = {
    "next_user": (ArmSpec(name="nu", kind="next_user", share=1.0, next_user=NextUserSpec()), NextUserTask,
                  NextUserTaskState),
    "ihm": (ArmSpec(name="ihm", kind="ihm", share=1.0, ihm=IHMArmSpec()), IHMTask, IHMTaskState),
    "dualrec": (ArmSpec(name="dr", kind="dualrec", share=1.0, dualrec=DualRecSpec(auc_table=True)), DualRecTask,
                DualRecTaskState),
}


# ---------------------------------------------------------------- the helper on a toy class


@dataclass
class _InnerState:
    count: int


class _Inner:
    NOT_SAVED = ()

    def __init__(self):
        self.count = 0

    def state(self) -> _InnerState:
        return capture(self, _InnerState)

    def load_state(self, state: _InnerState) -> None:
        restore(self, state)


@dataclass
class _ToyState:
    layer: dict = torch_state()
    inner: _InnerState = nested_state()
    history: list


class _Toy:
    NOT_SAVED = ("width",)

    def __init__(self, seed: int, width: int = 3):
        torch.manual_seed(seed)
        self.width = width
        self.layer = nn.Linear(width, 2)
        self.inner = _Inner()
        self.history: list[np.ndarray] = []


def test_capture_and_restore_follow_the_record():
    a, b = _Toy(0), _Toy(1)
    a.inner.count, a.history = 5, [np.arange(3)]
    restore(b, capture(a, _ToyState))
    assert b.inner.count == 5 and b.history[0].tolist() == [0, 1, 2]
    assert all(torch.equal(v, b.layer.state_dict()[k]) for k, v in a.layer.state_dict().items())
    assert b.layer is not a.layer  # loaded in place, not replaced


def test_a_record_is_a_copy():
    a = _Toy(0)
    a.history = [np.zeros(2)]
    record = capture(a, _ToyState)
    a.history[0][:] = 1
    with torch.no_grad():
        a.layer.weight.add_(1.0)
    assert record.history[0].tolist() == [0.0, 0.0]
    assert not torch.equal(record.layer["weight"], a.layer.weight)


def test_an_attribute_outside_the_record_and_not_saved_is_caught():
    a = _Toy(0)
    assert unrecorded(a, _ToyState) == []
    a.new_counter = 1
    assert unrecorded(a, _ToyState) == ["new_counter"]
    with pytest.raises(ValueError, match="new_counter"):
        capture(a, _ToyState)


# ---------------------------------------------------------------- the weights format


def test_pack_and_unpack_weights_round_trip():
    torch.manual_seed(0)
    parts = {"model": nn.Linear(3, 2), "user_tower": nn.Linear(2, 2, bias=False)}
    packed = pack_weights(parts)
    assert sorted(packed) == ["model.bias", "model.weight", "user_tower.weight"]
    model, tower = unpack_weights(packed, "model", "user_tower")
    assert sorted(model) == ["bias", "weight"] and sorted(tower) == ["weight"]
    assert torch.equal(model["weight"], parts["model"].weight.detach())
    packed["model.weight"][:] = 0  # the unpacked tensors are copies
    assert not torch.equal(model["weight"], torch.zeros_like(model["weight"]))
    arrays = module_arrays(parts["model"])
    assert torch.equal(state_dict_of(arrays)["bias"], parts["model"].bias.detach())


# ---------------------------------------------------------------- the tasks and the learner


def _task(kind: str, seed: int):
    spec, _, _ = SPECS[kind]
    ctx = ArmContext(model=CTX.model, slate_size=CTX.slate_size, n_item_dense=CTX.n_item_dense, seed=seed)
    (task,) = arm_tasks(spec, ctx, lr=1e-3, batch_size=32)
    return task


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_every_task_is_a_task_with_a_complete_record(kind):
    _, task_type, record = SPECS[kind]
    task = _task(kind, 0)
    assert isinstance(task, task_type) and isinstance(task, Task)
    assert task.name == kind and isinstance(task.state(), record)
    assert unrecorded(task, record) == []
    task.forgotten = 1
    with pytest.raises(ValueError, match="forgotten"):
        task.state()


def _same_torch_state(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same_torch_state(a[key], b[key])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b) and all(_same_torch_state(x, y) is None for x, y in zip(a, b))
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_a_task_record_round_trip_restores_an_equal_task(kind):
    a, b = _task(kind, 0), _task(kind, 1)
    b.load_state(copy.deepcopy(a.state()))
    _same_torch_state(vars(a.state()), vars(b.state()))
    for key, value in a.weights().items():
        np.testing.assert_array_equal(value, b.weights()[key])


@pytest.mark.parametrize("base_models", [True, False])
def test_the_learner_record_names_every_attribute_and_round_trips(base_models):
    tt, rk = model_configs(CTX.model, CTX.n_item_dense)
    make = lambda seed: OnlineLearner(tt, rk, lr=1e-3, batch_size=32, temperature=0.1, epochs=1, seed=seed,  # noqa: E731
                                      extra_tasks=[_task("next_user", seed)], base_models=base_models)
    a, b = make(0), make(1)
    assert unrecorded(a, LearnerState) == []  # OnlineLearner writes its record by hand: this keeps it complete
    a.version, a.samples_seen = 3, 40
    b.load_state_bytes(a.state_bytes())
    state_a, state_b = a.state(), b.state()
    assert (state_b.version, state_b.samples_seen) == (3, 40)
    tasks_a, tasks_b = state_a.extra_tasks, state_b.extra_tasks
    _same_torch_state({k: v for k, v in vars(state_a).items() if k != "extra_tasks"},
                      {k: v for k, v in vars(state_b).items() if k != "extra_tasks"})
    _same_torch_state({name: vars(record) for name, record in tasks_a.items()},
                      {name: vars(record) for name, record in tasks_b.items()})

"""Which days of a real log a run replays (--start, the densest window) and the warnings before a run."""

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from simulator.core.schema import SECONDS_PER_DAY, Log, validate_log
from simulator.core.window import MIN_EVENTS_PER_DAY, choose_window, log_warnings, parse_start

T0 = 1_700_006_400  # 2023-11-15, a midnight (UTC)
D = SECONDS_PER_DAY


def _log(per_day: dict[int, int], event: str = "like", n_creators: int = 200) -> Log:
    """``per_day[d]`` exposures (each with an ``event`` when it is not 'expose') on day d, users and items cycling."""
    ts, users, items, events = [], [], [], []
    k = 0
    for d, n in sorted(per_day.items()):
        for j in range(n):
            for e in ("expose", event) if event != "expose" else ("expose",):
                ts.append(T0 + d * D + j)
                users.append(k % 500)
                items.append(k % 1000)
                events.append(e)
            k += 1
    item_ids = np.arange(1000)
    return validate_log(Log(
        name="hand",
        events=pa.table({"ts": ts, "user_id": users, "item_id": items, "event": events}),
        items=pa.table({"item_id": item_ids, "creator_id": item_ids % n_creators, "upload_ts": np.full(1000, T0 - D),
                        "category": np.zeros(1000, np.int64)}),
    ))


def test_densest_window_and_start_date():
    log = _log({d: (400 if d in (5, 6, 7) else 120) for d in range(10)})
    w = choose_window(log, 3)
    assert w.t0 == T0 + 5 * D and "densest 3-day window of 10 days" in w.meta["window"]
    assert w.meta["window"].startswith("2023-11-20 to 2023-11-22")
    assert choose_window(log, 10) is log  # the log fits: unchanged
    s = choose_window(log, 3, "2023-11-16")
    assert s.t0 == T0 + D and "--start 2023-11-16" in s.meta["window"]
    with pytest.raises(ValueError, match="covers 2023-11-15 to 2023-11-24"):
        choose_window(log, 3, "2024-01-01")
    with pytest.raises(ValueError, match="not a date"):
        parse_start("15/11/2023")
    # without interaction events the densest window counts all events
    flat = _log({0: 150, 1: 150, 2: 150, 3: 900, 4: 150}, event="expose")
    assert choose_window(flat, 1).t0 == T0 + 3 * D


def test_warnings_name_what_makes_a_read_out_doubtful():
    assert log_warnings(_log({d: 200 for d in range(3)}), 3, [0.5, 0.5]) == []
    no_inter = log_warnings(_log({d: 200 for d in range(3)}, event="expose"), 3, [0.5, 0.5])
    assert len(no_inter) == 1 and "no interaction events" in no_inter[0]
    thin = log_warnings(_log({0: 200, 1: 5, 2: 200}), 3, [0.5, 0.5])
    assert len(thin) == 1 and "1 of 3 replayed days" in thin[0] and "day 1 (10 events)" in thin[0]
    assert MIN_EVENTS_PER_DAY > 10
    few = log_warnings(_log({d: 200 for d in range(3)}, n_creators=40), 3, [0.25, 0.25, 0.5])
    assert len(few) == 1 and "smallest arm (25%) gets about 10 creators" in few[0]
    # only the replayed days count: a thin day after the window is not warned about
    assert log_warnings(dataclasses.replace(_log({0: 200, 1: 200, 2: 3})), 2, [0.5, 0.5]) == []

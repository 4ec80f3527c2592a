"""Log replay: day partitions written and read back, requests grouped from exposures, tick boundaries."""

import numpy as np
import polars as pl
import pyarrow as pa

from simulator.world.replay import ArrowDayReader, requests_of_day, tick_bounds, write_log
from simulator.core.schema import EVENTS_SCHEMA, SECONDS_PER_DAY, Log, validate_log

T0 = 1_767_225_600
D = SECONDS_PER_DAY


def _log() -> Log:
    rng = np.random.default_rng(0)
    n = 600
    ts = T0 + rng.integers(0, 3 * D, n)
    events = pa.table({
        "ts": ts, "user_id": rng.integers(0, 20, n), "item_id": rng.integers(0, 10, n),
        "event": rng.choice(["expose", "like", "view"], n),
    })
    # de-duplicate event keys (validation rejects duplicates)
    events = pa.Table.from_pandas(events.to_pandas().drop_duplicates(), preserve_index=False)
    items = pa.table({"item_id": np.arange(10), "creator_id": np.arange(10) % 3,
                      "upload_ts": np.full(10, T0 - 1), "category": np.zeros(10, np.int64)})
    return validate_log(Log(name="r", events=events, items=items))


def test_write_then_read_day_returns_that_days_events_sorted(tmp_path):
    log = _log()
    root = write_log(log, tmp_path, days=2)
    assert (tmp_path / "items.parquet").exists()
    reader = ArrowDayReader(root)
    ev = pl.from_arrow(log.events)
    for d in range(2):
        got = reader.read_day(d)
        assert got.schema == EVENTS_SCHEMA
        ts = got["ts"].to_numpy()
        assert (np.diff(ts) >= 0).all()
        assert ((ts >= T0 + d * D) & (ts < T0 + (d + 1) * D)).all()
        want = ev.filter((pl.col("ts") >= T0 + d * D) & (pl.col("ts") < T0 + (d + 1) * D))
        assert got.num_rows == want.height > 0
        keys = ["ts", "user_id", "item_id", "event"]
        assert pl.from_arrow(got).sort(keys).equals(want.sort(keys))
    # day 2 was not written: empty, with the schema
    empty = reader.read_day(2)
    assert empty.num_rows == 0 and empty.schema == EVENTS_SCHEMA


def test_read_day_sorts_by_ts(tmp_path):
    import pyarrow.parquet as pq

    part = tmp_path / "events" / "day=0000"
    part.mkdir(parents=True)
    tab = pa.table({"ts": [30, 10, 20], "user_id": [1, 2, 3], "item_id": [4, 5, 6], "event": ["like", "expose", "view"]},
                   schema=EVENTS_SCHEMA)
    pq.write_table(tab, part / "part-0.parquet")
    got = ArrowDayReader(tmp_path / "events").read_day(0)
    assert got["ts"].to_pylist() == [10, 20, 30]
    assert got["user_id"].to_pylist() == [2, 3, 1]


def test_requests_of_day_groups_exposures_into_slates():
    rows = [
        # user 1: five exposures -> ceil(5/2) = 3 requests, at its 1st, 3rd and 5th exposure
        (50, 1, 5, "expose"), (10, 1, 1, "expose"), (20, 1, 2, "expose"), (40, 1, 4, "expose"), (30, 1, 3, "expose"),
        (12, 1, 1, "like"),  # responses are not requests
        # user 2: two exposures -> one request
        (15, 2, 1, "expose"), (25, 2, 2, "expose"),
        (26, 2, 2, "view"),
    ]
    tab = pa.table({k: [r[i] for r in rows] for i, k in enumerate(["ts", "user_id", "item_id", "event"])},
                   schema=EVENTS_SCHEMA)
    req = requests_of_day(tab, slate_size=2)
    assert req.columns == ["user_id", "ts"]
    assert list(req.iter_rows()) == [(1, 10), (2, 15), (1, 30), (1, 50)]
    req3 = requests_of_day(tab, slate_size=3)
    assert list(req3.iter_rows()) == [(1, 10), (2, 15), (1, 40)]


def test_requests_of_day_without_exposures_uses_every_event():
    tab = pa.table({"ts": [5, 7, 9], "user_id": [1, 1, 2], "item_id": [1, 2, 3], "event": ["like", "like", "view"]},
                   schema=EVENTS_SCHEMA)
    assert list(requests_of_day(tab, slate_size=1).iter_rows()) == [(1, 5), (1, 7), (2, 9)]
    assert list(requests_of_day(tab, slate_size=2).iter_rows()) == [(1, 5), (2, 9)]


def test_requests_of_empty_day():
    req = requests_of_day(EVENTS_SCHEMA.empty_table(), slate_size=4)
    assert req.height == 0 and req.schema == pl.Schema({"user_id": pl.Int64, "ts": pl.Int64})


def test_tick_bounds():
    np.testing.assert_array_equal(tick_bounds(1000, 1, 4), [87_400, 109_000, 130_600, 152_200, 173_800])
    np.testing.assert_array_equal(tick_bounds(0, 0, 1), [0, D])
    b = tick_bounds(T0, 2, 7)  # 86400 / 7 is not an integer: floor, but the day is covered exactly
    assert len(b) == 8 and b[0] == T0 + 2 * D and b[-1] == T0 + 3 * D
    assert b[1] - b[0] == 12_342 and (np.diff(b) > 0).all()

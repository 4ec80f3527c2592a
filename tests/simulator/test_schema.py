"""Log validation: normalisation, and errors that name the source, the column and the number of rows."""

import numpy as np
import pyarrow as pa
import pytest

from simulator.core.schema import EVENTS_SCHEMA, LogValidationError, Log, validate_log

T0 = 1_767_225_600


def _items(**over):
    cols = {"item_id": [1, 2, 3], "creator_id": [7, 7, 8], "upload_ts": [T0, T0, T0 + 100], "category": [0, 1, 0]}
    cols.update(over)
    return pa.table(cols)


def _events(**over):
    cols = {"ts": [T0 + 200, T0 + 5, T0 + 300, T0 + 300], "user_id": [1, 2, 1, 1], "item_id": [3, 1, 2, 2],
            "event": ["expose", "like", "expose", "view"]}
    cols.update(over)
    return pa.table(cols)


def _err(events=None, items=None, name="src") -> LogValidationError:
    log = Log(name=name, events=_events() if events is None else events, items=_items() if items is None else items)
    with pytest.raises(LogValidationError) as exc:
        validate_log(log)
    return exc.value


def test_valid_log_is_normalised():
    events = _events(ts=pa.array([T0 + 200, T0 + 5, T0 + 300, T0 + 300], pa.int32()), extra=[0, 0, 0, 0])
    log = validate_log(Log(name="ok", events=events, items=_items(f_x=[1, 2, 3], other=["a", "b", "c"])))
    assert log.events.schema == EVENTS_SCHEMA
    assert log.events["ts"].to_pylist() == [T0 + 5, T0 + 200, T0 + 300, T0 + 300]
    assert log.items.column_names == ["item_id", "creator_id", "upload_ts", "category", "f_x"]
    assert log.items["f_x"].type == pa.float32()
    assert log.t0 == T0 and log.n_days == 1


def test_missing_column():
    e = _err(events=_events().drop(["ts"]))
    assert (e.source, e.column, e.n_rows) == ("src: events", "ts", 4)
    assert "src: events: column 'ts': missing required column" in str(e) and "(4 row(s))" in str(e)
    e = _err(items=_items().drop(["creator_id"]))
    assert (e.source, e.column, e.n_rows) == ("src: items", "creator_id", 3)


def test_nan_ids():
    e = _err(events=_events(user_id=np.array([1.0, np.nan, 1.0, np.nan])))
    assert (e.source, e.column, e.n_rows) == ("src: events", "user_id", 2)
    assert "NaN" in str(e)
    e = _err(events=_events(item_id=pa.array([3, None, 2, 2], pa.int64())))
    assert (e.column, e.n_rows) == ("item_id", 1)
    e = _err(events=_events(user_id=np.array([1.0, 2.5, 1.0, 1.0])))
    assert (e.column, e.n_rows) == ("user_id", 1) and "non-integer" in str(e)


def test_unknown_event():
    e = _err(events=_events(event=["expose", "click", "click", "view"]))
    assert (e.source, e.column, e.n_rows) == ("src: events", "event", 2)
    assert "click" in str(e) and "expose" in str(e)


def test_events_before_upload():
    e = _err(events=_events(ts=[T0 + 50, T0 - 5, T0 + 50, T0 + 300]))  # item 3 @ T0+50 (< T0+100), item 1 @ T0-5
    assert (e.source, e.column, e.n_rows) == ("src: events", "ts", 2)
    assert "before" in str(e)


def test_duplicated_event_keys():
    ev = _events(ts=[T0 + 200, T0 + 200, T0 + 200, T0 + 300], user_id=[1, 1, 1, 1], item_id=[3, 3, 3, 2],
                 event=["expose", "expose", "expose", "view"])
    e = _err(events=ev)
    assert (e.source, e.column, e.n_rows) == ("src: events", "ts,user_id,item_id,event", 2)
    assert "duplicated" in str(e)
    e = _err(items=_items(item_id=[1, 1, 3]))
    assert (e.source, e.column, e.n_rows) == ("src: items", "item_id", 1)


def test_duplicate_events_counts_repeated_keys_only():
    """Hand-counted: a key seen three times is two duplicates; the same (ts, user, item) with another event, or the
    same event at another ts, user or item, is none. Rows interleave so that no duplicate starts out adjacent."""
    ev = _events(ts=[T0 + 300, T0 + 200, T0 + 300, T0 + 200, T0 + 300, T0 + 201, T0 + 200],
                 user_id=[1, 1, 1, 1, 1, 1, 2], item_id=[2, 3, 2, 3, 2, 3, 3],
                 event=["like", "expose", "view", "expose", "like", "expose", "expose"])
    e = _err(events=ev)
    assert e.n_rows == 2  # (T0+300, 1, 2, like) once more, (T0+200, 1, 3, expose) once more


def test_duplicate_events_match_a_plain_count():
    """The sorted-neighbour count against counting the keys in Python, on logs dense in collisions."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(1, 400))
        keys = list(zip((T0 + 300 + rng.integers(0, 3, n)).tolist(), rng.integers(1, 3, n).tolist(),
                        rng.integers(1, 4, n).tolist(), rng.choice(["expose", "like", "view"], n).tolist()))
        expected = len(keys) - len(set(keys))
        ev = pa.table({"ts": [k[0] for k in keys], "user_id": [k[1] for k in keys], "item_id": [k[2] for k in keys],
                       "event": [k[3] for k in keys]})
        log = Log(name="src", events=ev, items=_items())
        if expected:
            with pytest.raises(LogValidationError) as exc:
                validate_log(log)
            assert exc.value.n_rows == expected
        else:
            assert validate_log(log).events.num_rows == n


def test_events_sort_is_stable():
    """Rows with the same (ts, user, item) keep their input order (the replay reads them in it)."""
    ev = _events(ts=[T0 + 300, T0 + 300, T0 + 5, T0 + 300], user_id=[1, 1, 2, 1], item_id=[2, 2, 1, 2],
                 event=["view", "expose", "like", "like"])
    log = validate_log(Log(name="ok", events=ev, items=_items()))
    assert log.events["event"].to_pylist() == ["like", "view", "expose", "like"]


def test_unknown_item_ids():
    e = _err(events=_events(item_id=[3, 99, 2, 42]))
    assert (e.source, e.column, e.n_rows) == ("src: events", "item_id", 2)
    assert "missing from the items table" in str(e)


def test_unknown_user_ids_when_users_given():
    log = Log(name="u", events=_events(), items=_items(), users=pa.table({"user_id": [1]}))
    with pytest.raises(LogValidationError) as exc:
        validate_log(log)
    assert (exc.value.source, exc.value.column, exc.value.n_rows) == ("u: events", "user_id", 1)


def test_no_events():
    e = _err(events=_events().slice(0, 0))
    assert e.source == "src: events" and e.n_rows == 0 and "no events" in str(e)


def test_error_is_a_value_error():
    assert issubclass(LogValidationError, ValueError)

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

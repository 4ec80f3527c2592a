"""The ``tabular:PATH?key=value`` reading options: delimiter, headerless files, constant events, event rules,
timestamps (unit, layout, date parts) and their plausibility checks, string ids, the creator fallback,
duplicates, and errors that name the file, the line or column and the rows. Tiny inline files."""

from __future__ import annotations

import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from simulator.core.schema import LogValidationError
from simulator.sources.spec import load_real_log, parse_log_spec
from simulator.sources.table_files import MalformedFileError, sniff_delimiter
from simulator.sources.tabular import load_tabular
from simulator.sources.tabular_options import EventRule, TabularOptions

DAY0 = 1_600_000_000  # 2020-09-13T12:26:40Z


def _file(tmp_path: Path, name: str, *rows: str) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(rows) + "\n")
    return path


def _load(path: Path, query: str):
    return load_real_log(parse_log_spec(f"tabular:{path}?{query}"))


def _events(log) -> list[tuple]:
    return sorted(zip(*(log.events[c].to_pylist() for c in ("ts", "user_id", "item_id", "event"))))


def _count(log, event: str) -> int:
    return int(pc.sum(pc.equal(log.events["event"], event)).as_py() or 0)


# ---------------------------------------------------------------- delimiters and headers


def test_sniff_delimiter() -> None:
    assert sniff_delimiter("a,b,c\n1,2,3\n") == ","
    assert sniff_delimiter("a\tb\tc\n1\t2,5\t3\n") == "\t"  # the header has only tabs
    assert sniff_delimiter("a;b\n1;2\n") == ";"
    assert sniff_delimiter('a,b;c\n1,"x;y";3\n4,z;5\n') in {",", ";"}
    assert sniff_delimiter("single\n1\n") == ","
    assert sniff_delimiter("single\n1\n", preferred="\t") == "\t"


def test_tab_separated_csv_is_detected_and_sep_overrides(tmp_path: Path) -> None:
    path = _file(tmp_path, "amazon.csv", "user\titem\trating\tts", f"1\t10\t5.0\t{DAY0}", f"2\t10\t3.0\t{DAY0 + 60}")
    log = _load(path, "user_id=user&item_id=item&event=expose&creator_group_size=1")
    assert _events(log) == [(DAY0, 1, 10, "expose"), (DAY0 + 60, 2, 10, "expose")]
    semi = _file(tmp_path, "semi.csv", "user;item;ts", f"1;10;{DAY0}")
    assert _load(semi, "user_id=user&item_id=item&event=view&creator_group_size=1").events.num_rows == 1
    with pytest.raises(LogValidationError, match="missing column"):  # forced to ',' the header is one column
        _load(semi, "sep=comma&user_id=user&item_id=item&event=view&creator_group_size=1")
    assert _load(semi, "sep=;&user_id=user&item_id=item&event=view&creator_group_size=1").events.num_rows == 1
    with pytest.raises(ValueError, match="sep="):
        _load(semi, "sep=::&event=view")


def test_headerless_file_with_names(tmp_path: Path) -> None:
    path = _file(tmp_path, "ratings.csv", f"10,1,4.0,{DAY0}", f"11,2,2.0,{DAY0 + 5}")
    log = _load(path, "names=item,user,rating,timestamp&user_id=user&item_id=item&ts=timestamp&event=expose"
                      "&like_if=rating>=4&creator_group_size=4")
    assert _events(log) == [(DAY0, 1, 10, "expose"), (DAY0, 1, 10, "like"), (DAY0 + 5, 2, 11, "expose")]


# ---------------------------------------------------------------- events


def test_constant_event_for_an_implicit_log(tmp_path: Path) -> None:
    path = _file(tmp_path, "plays.csv", "ts,user_id,item_id,creator_id", f"{DAY0},1,5,9", f"{DAY0 + 1},2,5,9")
    log = _load(path, "event=view")
    assert log.events["event"].to_pylist() == ["view", "view"] and log.meta["constant_event"] == "view"
    with pytest.raises(LogValidationError) as exc:
        _load(path, "")
    assert "'event'" in str(exc.value) and "event=TYPE" in str(exc.value)
    # a file column named like an event type is a column, not a constant
    col = _file(tmp_path, "col.csv", "ts,user_id,item_id,creator_id,like", f"{DAY0},1,5,9,expose")
    assert _load(col, "event=like").events["event"].to_pylist() == ["expose"]


def test_rating_rules_compare_numbers(tmp_path: Path) -> None:
    path = _file(
        tmp_path, "r.csv", "ts,user_id,item_id,creator_id,rating",
        f"{DAY0},1,1,1,4.0", f"{DAY0 + 1},1,2,1,3.5", f"{DAY0 + 2},2,1,1,4.5", f"{DAY0 + 3},2,2,1,", f"{DAY0 + 4},3,1,1,5",
    )
    log = _load(path, "event=expose&like_if=rating>=4&share_if=rating=5")
    likes = sorted((u, i) for t, u, i, e in _events(log) if e == "like")
    assert likes == [(1, 1), (2, 1), (3, 1)]  # 4.0, 4.5 and 5; 3.5 and the missing rating do not match
    assert _count(log, "share") == 1 and _count(log, "expose") == 5
    assert log.meta["event_rules"] == ["like_if=rating>=4", "share_if=rating==5"]
    with pytest.raises(ValueError, match="COLUMN OP NUMBER"):
        _load(path, "event=expose&like_if=rating>=good")
    with pytest.raises(ValueError, match="unknown options \\['clicked_if'\\]"):
        _load(path, "event=expose&clicked_if=rating>=4")
    with pytest.raises(LogValidationError, match="'stars'"):
        _load(path, "event=expose&like_if=stars>=4")
    words = _file(tmp_path, "w.csv", "ts,user_id,item_id,creator_id,rating", f"{DAY0},1,1,1,good")
    with pytest.raises(LogValidationError) as exc:
        _load(words, "event=expose&like_if=rating>=4")
    assert "'rating'" in str(exc.value) and "good" in str(exc.value)
    assert EventRule.parse("view", " watch_s > 10 ") == EventRule("view", "watch_s", ">", 10.0)


def test_rule_never_duplicates_the_base_event(tmp_path: Path) -> None:
    path = _file(tmp_path, "l.csv", "ts,user_id,item_id,creator_id,rating", f"{DAY0},1,1,1,5")
    assert _events(_load(path, "event=like&like_if=rating>=4")) == [(DAY0, 1, 1, "like")]


def test_float_event_column_maps_numeric_keys(tmp_path: Path) -> None:
    path = _file(tmp_path, "e.csv", "ts,user_id,item_id,creator_id,stars", f"{DAY0},1,1,1,4.0", f"{DAY0 + 1},1,2,1,5.0")
    log = _load(path, "event=stars&event.4=like&event.5.0=share")
    assert log.events["event"].to_pylist() == ["like", "share"]
    with pytest.raises(LogValidationError, match=r"unknown event types \['5'\]"):
        _load(path, "event=stars&event.4=like")


# ---------------------------------------------------------------- timestamps


def test_ts_unit_and_format(tmp_path: Path) -> None:
    ms = _file(tmp_path, "ms.csv", "t,user_id,item_id,event,creator_id", f"{DAY0}123,1,1,expose,1")
    assert _load(ms, "ts=t&ts_unit=ms").events["ts"].to_pylist() == [DAY0]
    us = _file(tmp_path, "us.csv", "t,user_id,item_id,event,creator_id", f"{DAY0}123456,1,1,expose,1")
    assert _load(us, "ts=t&ts_unit=us").events["ts"].to_pylist() == [DAY0]
    fmt = _file(tmp_path, "f.csv", "t,user_id,item_id,event,creator_id", "13/09/2020 12:26,1,1,expose,1")
    assert _load(fmt, "ts=t&ts_format=%d/%m/%Y %H:%M").events["ts"].to_pylist() == [DAY0 - 40]
    with pytest.raises(LogValidationError, match="'%d/%m/%Y'"):
        _load(fmt, "ts=t&ts_format=%d/%m/%Y")
    with pytest.raises(ValueError, match="ts_unit='min'"):
        _load(ms, "ts=t&ts_unit=min")


def test_timestamps_from_date_parts(tmp_path: Path) -> None:
    path = _file(tmp_path, "lastfm.csv", "user,artist,day,month,year", "1,7,3,5,2009", "2,8,31,12,2010", "1,8,1,1,2011")
    log = _load(path, "user_id=user&item_id=artist&creator_id=artist&event=view&year=year&month=month&day=day")
    assert sorted(log.events["ts"].to_pylist()) == [1241308800, 1293753600, 1293840000]  # midnights UTC
    log = _load(path, "user_id=user&item_id=artist&creator_id=artist&event=view&year=year")
    assert sorted(log.events["ts"].to_pylist()) == [1230768000, 1262304000, 1293840000]  # January 1st
    bad = _file(tmp_path, "bad.csv", "user,artist,day,month,year", "1,7,3,5,2009", "2,8,31,2,2010")
    with pytest.raises(LogValidationError) as exc:
        _load(bad, "user_id=user&item_id=artist&creator_id=artist&event=view&year=year&month=month&day=day")
    assert "impossible dates" in str(exc.value) and "line 3: 2010-2-31" in str(exc.value)
    with pytest.raises(ValueError, match="not both"):
        _load(path, "ts=year&year=year&event=view")
    with pytest.raises(ValueError, match="need year"):
        _load(path, "month=month&event=view")
    with pytest.raises(LogValidationError) as exc:
        _load(path, "user_id=user&item_id=artist&creator_id=artist&event=view")
    assert "year=COLUMN" in str(exc.value)


def test_integer_years_read_as_seconds_are_an_error(tmp_path: Path) -> None:
    path = _file(tmp_path, "years.csv", "user,artist,year", "1,7,2009", "2,8,2010")
    with pytest.raises(LogValidationError) as exc:
        _load(path, "user_id=user&item_id=artist&creator_id=artist&event=view&ts=year")
    msg = str(exc.value)
    assert "years.csv" in msg and "'year'" in msg and "calendar years" in msg and "line 2: 2009" in msg
    assert "year=year" in msg


def test_seconds_milliseconds_confusion_is_an_error(tmp_path: Path) -> None:
    ms = _file(tmp_path, "ms.csv", "time_ms,user_id,item_id,event,creator_id",
               "1649408076860,1,1,expose,1", "1649408200123,2,1,expose,1")
    with pytest.raises(LogValidationError) as exc:
        _load(ms, "ts=time_ms")
    msg = str(exc.value)
    assert "'time_ms'" in msg and "line 2: 1649408076860" in msg and "ts_unit=ms" in msg
    us = _file(tmp_path, "us.csv", "t,user_id,item_id,event,creator_id", f"{DAY0}000000,1,1,expose,1")
    with pytest.raises(LogValidationError, match="they look like us: set ts_unit=us"):
        _load(us, "ts=t&ts_unit=ms")
    seconds = _file(tmp_path, "s.csv", "t,user_id,item_id,event,creator_id", f"{DAY0},1,1,expose,1")
    with pytest.raises(LogValidationError) as exc:
        _load(seconds, "ts=t&ts_unit=ms")
    assert "plausible unix seconds" in str(exc.value) and f"line 2: {DAY0}" in str(exc.value)


def test_placeholder_timestamps_among_real_ones(tmp_path: Path) -> None:
    path = _file(tmp_path, "p.csv", "ts,user_id,item_id,event,creator_id",
                 f"{DAY0},1,1,expose,1", "0,2,1,expose,1", f"{DAY0 + 9},3,1,expose,1")
    with pytest.raises(LogValidationError) as exc:
        _load(path, "")
    assert "before 1990 among later ones" in str(exc.value) and "line 3: 0 -> 1970-01-01" in str(exc.value)
    assert str(exc.value).endswith("(1 row(s))")


def test_relative_clock_warns_and_ts_check_off_is_silent(tmp_path: Path) -> None:
    path = _file(tmp_path, "rel.csv", "ts,user_id,item_id,event,creator_id", "10,1,1,expose,1", "20,2,1,expose,1")
    with pytest.warns(UserWarning, match="relative clock"):
        assert _load(path, "").events["ts"].to_pylist() == [10, 20]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _load(path, "ts_check=off")


def test_items_upload_ts_is_checked_too(tmp_path: Path) -> None:
    events = _file(tmp_path, "e.csv", "ts,user_id,item_id,event", f"{DAY0},1,1,expose")
    items = _file(tmp_path, "i.csv", "item_id,creator_id,upload_ts", f"1,1,{DAY0 - 10}000")
    with pytest.raises(LogValidationError, match="'upload_ts'.*ts_unit=ms"):
        _load(events, f"items={items}")


# ---------------------------------------------------------------- malformed files


def test_ragged_csv_names_file_and_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "ragged.csv", "ts,user_id,item_id,event", *(f"{DAY0 + i},1,{i},expose" for i in range(5)), "4,5")
    with pytest.raises(MalformedFileError) as exc:
        load_tabular(path)
    assert str(exc.value) == f"{path} line 7: expected 4 columns, got 2"
    assert exc.value.line == 7 and isinstance(exc.value, LogValidationError)


def test_encoding_errors_name_the_line_and_latin1_reads(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(f"ts,user_id,item_id,event,creator_id,title\n{DAY0},1,1,expose,1,Caf\xe9\n".encode("latin-1"))
    with pytest.raises(MalformedFileError, match=r"latin\.csv line 2: not valid utf-8.*encoding=latin-1"):
        load_tabular(path)
    assert _load(path, "encoding=latin-1").events.num_rows == 1


def test_json_lines_errors_name_the_line(tmp_path: Path) -> None:
    path = _file(tmp_path, "e.jsonl", f'{{"ts": {DAY0}, "user_id": 1, "item_id": 1, "event": "expose", "creator_id": 1}}',
                 '{"ts": 1, "user_id": ')
    with pytest.raises(MalformedFileError, match=r"e\.jsonl line 2: not valid JSON"):
        load_tabular(path)
    path = _file(tmp_path, "ok.jsonl", f'{{"ts": {DAY0}, "user_id": 1, "item_id": 1, "event": "expose", '
                 '"creator_id": 1, "tags": ["a"], "meta": {"x": 1}}')
    assert load_tabular(path).events.num_rows == 1  # nested values are dropped


def test_a_later_non_numeric_value_is_read_as_text(tmp_path: Path) -> None:
    rows = [f"{DAY0 + i},{i},1,expose,1" for i in range(3)] + [f"{DAY0 + 9},u9,1,expose,1"]
    path = _file(tmp_path, "mixed.csv", "ts,user_id,item_id,event,creator_id", *rows)
    with pytest.raises(LogValidationError, match="'user_id'.*ids=codes"):
        load_tabular(path)


# ---------------------------------------------------------------- ids, creators, duplicates


def test_string_ids_as_codes_across_files(tmp_path: Path) -> None:
    events = _file(tmp_path, "e.csv", "ts,user,item,event", f"{DAY0},bob,x2,expose", f"{DAY0 + 1},amy,x1,expose")
    items = _file(tmp_path, "i.csv", "item,creator_id", "x1,c9", "x2,c1", "x3,c1")
    users = _file(tmp_path, "u.csv", "user,country", "amy,fr", "bob,de", "cat,it")
    with pytest.raises(LogValidationError) as exc:
        _load(events, f"user_id=user&item_id=item&items={items}")
    assert "'user'" in str(exc.value) and "ids=codes" in str(exc.value) and "(2 row(s))" in str(exc.value)
    log = _load(events, f"user_id=user&item_id=item&items={items}&users={users}&ids=codes")
    assert _events(log) == [(DAY0, 1, 1, "expose"), (DAY0 + 1, 0, 0, "expose")]  # amy=0 bob=1; x1=0 x2=1
    assert sorted(zip(log.items["item_id"].to_pylist(), log.items["creator_id"].to_pylist())) == [(0, 1), (1, 0)]
    assert log.users["user_id"].to_pylist() == [0, 1, 2]


def test_creator_fallback_groups_items(tmp_path: Path) -> None:
    rows = [f"{DAY0 + i},1,{item},expose" for i, item in enumerate([30, 10, 20, 40, 50])]
    path = _file(tmp_path, "e.csv", "ts,user_id,item_id,event", *rows)
    with pytest.raises(LogValidationError) as exc:
        _load(path, "")
    assert "'creator_id'" in str(exc.value) and "creator_group_size=N" in str(exc.value)
    log = _load(path, "creator_group_size=2")
    assert dict(zip(log.items["item_id"].to_pylist(), log.items["creator_id"].to_pylist())) == {
        10: 0, 20: 0, 30: 1, 40: 1, 50: 2}
    assert log.meta["creator_rule"] == "group_creators(creator_group_size=2)"
    items = _file(tmp_path, "i.csv", "item_id,upload_ts", *(f"{i},{DAY0 - 1}" for i in (10, 20, 30, 40, 50)))
    with_items = _load(path, f"items={items}&creator_group_size=3")
    assert with_items.items["creator_id"].to_pylist() == [0, 0, 0, 1, 1]
    assert load_tabular(path, options=TabularOptions(creator_group_size=1)).items["creator_id"].to_pylist() == [0, 1, 2, 3, 4]


def test_duplicates_drop(tmp_path: Path) -> None:
    path = _file(tmp_path, "d.csv", "ts,user_id,item_id,event,creator_id",
                 f"{DAY0},1,1,expose,1", f"{DAY0},1,1,expose,1", f"{DAY0 + 1},1,1,like,1")
    with pytest.raises(LogValidationError, match="duplicated event keys"):
        _load(path, "")
    log = _load(path, "duplicates=drop")
    assert log.events.num_rows == 2 and log.meta["duplicate_events_dropped"] == 1


def test_layout_hint_and_unknown_options(tmp_path: Path) -> None:
    path = _file(tmp_path, "reviews.json", f'{{"reviewerID": "A1", "asin": "B1", "overall": 5.0, "unixReviewTime": {DAY0}}}')
    with pytest.raises(LogValidationError, match="add layout=amazon-json"):
        _load(path, "")
    assert _load(path, "layout=amazon-json").events.num_rows == 2
    with pytest.raises(ValueError, match="unknown layout 'amazon'"):
        _load(path, "layout=amazon")
    with pytest.raises(ValueError, match="unknown options \\['colour'\\].*ts_unit"):
        _load(path, "colour=red")


def test_parquet_rows_are_named_by_row_number(tmp_path: Path) -> None:
    table = pa.table({"ts": [2009, 2010], "user_id": [1, 2], "item_id": [1, 1], "event": ["view"] * 2, "creator_id": [1, 1]})
    pq.write_table(table, tmp_path / "e.parquet")
    with pytest.raises(LogValidationError, match="row 1: 2009"):
        load_tabular(tmp_path / "e.parquet")

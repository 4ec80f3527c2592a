"""Tests of the log sources (synthetic platform, MovieLens, tabular, KuaiRand catalogue) and log specs, tiny fixtures.

More in test_datasets.py (datasets by name, the publishers' layouts) and test_tabular_options.py.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from pydantic import ValidationError

from simulator.core.config import SyntheticConfig
from simulator.world.replay import ArrowDayReader, write_log
from simulator.core.schema import SECONDS_PER_DAY, Log, LogValidationError
from simulator.sources.kuairand import VIDEO_FILE, load_kuairand_catalogue, load_kuairand_users
from simulator.sources.movielens import genre_column, load_movielens
from simulator.sources.spec import LogSpec, load_real_log, parse_log_spec
from simulator.sources.synthetic import CATALOGUE_DAYS, T0, generate_synthetic
from simulator.sources.tabular import load_tabular

pytestmark = pytest.mark.filterwarnings("ignore:.*relative clock:UserWarning")  # tiny fixtures count from 0

ML_100K = Path("/work/shared/data/ml-100k")
GROUPLENS_100K = Path(__file__).resolve().parents[1] / "fixtures" / "movielens" / "ml-100k"
KUAIRAND = Path("/work/shared/data/kuairand_pure_meta")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "sources.md"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _lines(*rows: str) -> str:
    return "\n".join(rows) + "\n"


def _assert_names(exc: pytest.ExceptionInfo[LogValidationError], path: Path | str, column: str, n_rows: int) -> None:
    """The error names the file, the column and the row count, in its message and its fields."""
    msg = str(exc.value)
    assert str(path) in msg, msg
    assert f"'{column}'" in msg, msg
    assert f"({n_rows} row(s))" in msg, msg
    assert exc.value.column == column and exc.value.n_rows == n_rows


# ---------------------------------------------------------------- MovieLens

ML_INTER = _lines(
    "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    "1\t1\t5\t100",
    "1\t2\t3\t200",
    "2\t1\t4\t150",
    "2\t3\t1\t50",
    "3\t4\t4\t300",
    "3\t5\t2\t400",
    "1\t6\t5\t500",
)
ML_ITEM = _lines(
    "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
    "1\tA Film\t1995\tComedy Drama",
    "2\tB Film\t1995\tComedy",
    "3\tC Film\t1987\tAction",
    "4\tD Film\tunknown\t",
    "5\tE Film\t1996\tComedy",
    "7\tNever Rated\t2001\tDrama",
)
ML_USER = _lines(
    "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
    "1\t24\tM\ttechnician\t85711",
    "2\t53\tF\tother\t94043",
    "3\t23\tM\twriter\tT8H1N",
)


def _ml(tmp_path: Path, inter: str = ML_INTER, item: str | None = ML_ITEM, user: str | None = ML_USER) -> Path:
    d = tmp_path / "ml-tiny"
    _write(d / "ml-tiny.inter", inter)
    if item is not None:
        _write(d / "ml-tiny.item", item)
    if user is not None:
        _write(d / "ml-tiny.user", user)
    return d


def _rows(table: pa.Table, *cols: str) -> list[tuple]:
    return sorted(zip(*(table[c].to_pylist() for c in cols)))


def test_movielens_events_likes_and_exposures(tmp_path: Path) -> None:
    log = load_movielens(_ml(tmp_path))
    assert log.name == "movielens:ml-tiny"
    ev = log.events
    exposes = _rows(ev.filter(pc.equal(ev["event"], "expose")), "user_id", "item_id", "ts")
    likes = _rows(ev.filter(pc.equal(ev["event"], "like")), "user_id", "item_id", "ts")
    assert exposes == [(1, 1, 100), (1, 2, 200), (1, 6, 500), (2, 1, 150), (2, 3, 50), (3, 4, 300), (3, 5, 400)]
    assert likes == [(1, 1, 100), (1, 6, 500), (2, 1, 150), (3, 4, 300)]  # rating >= 4, same ts
    assert ev["ts"].to_pylist() == sorted(ev["ts"].to_pylist())


def test_movielens_items_upload_category_and_features(tmp_path: Path) -> None:
    log = load_movielens(_ml(tmp_path))
    items = pl.from_arrow(log.items)
    assert items["item_id"].to_list() == [1, 2, 3, 4, 5, 6]  # item 7 has no rating: not in the log
    assert items["upload_ts"].to_list() == [100, 200, 50, 300, 400, 500]  # first rating
    # genres sorted: Action=0, Comedy=1, Drama=2; unknown genre -> 0
    assert items["category"].to_list() == [1, 1, 0, 0, 1, 0]
    assert log.meta["genres"] == ["Action", "Comedy", "Drama"]
    assert items["f_g_comedy"].to_list() == [1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert items["f_g_drama"].to_list() == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    year = items["f_year"].to_list()  # known years 1987..1996 over the rated items, unknown -> median (1995)
    assert year[2] == pytest.approx(0.0) and year[4] == pytest.approx(1.0)
    assert year[3] == pytest.approx(8 / 9) and year[5] == pytest.approx(8 / 9)
    assert all(log.items[c].type == pa.float32() for c in log.items.column_names if c.startswith("f_"))
    assert genre_column("Children's") == "f_g_children_s" and genre_column("Sci-Fi") == "f_g_sci_fi"


def test_movielens_creator_rule_chunked_and_deterministic(tmp_path: Path) -> None:
    creators = dict(_rows(load_movielens(_ml(tmp_path), creator_group_size=2).items, "item_id", "creator_id"))
    # groups in (genre, decade) order, unknown first: (?, ?) = {4, 6}; (Action, 1980) = {3};
    # (Comedy, 1990) = {1, 2, 5} cut into chunks of 2: {1, 2}, {5}
    assert creators == {4: 0, 6: 0, 3: 1, 1: 2, 2: 2, 5: 3}
    # row order of the files does not matter
    inter = ML_INTER.splitlines()
    item = ML_ITEM.splitlines()
    shuffled = _ml(tmp_path / "b", _lines(inter[0], *reversed(inter[1:])), _lines(item[0], *reversed(item[1:])))
    assert dict(_rows(load_movielens(shuffled, creator_group_size=2).items, "item_id", "creator_id")) == creators
    # larger groups: one creator per (genre, decade)
    big = dict(_rows(load_movielens(_ml(tmp_path), creator_group_size=16).items, "item_id", "creator_id"))
    assert big == {4: 0, 6: 0, 3: 1, 1: 2, 2: 2, 5: 2}
    with pytest.raises(ValueError, match="creator_group_size"):
        load_movielens(_ml(tmp_path), creator_group_size=0)


def test_movielens_inter_file_path_without_item_file(tmp_path: Path) -> None:
    d = _ml(tmp_path, item=None, user=None)
    log = load_movielens(d / "ml-tiny.inter", creator_group_size=4)
    assert log.users is None
    assert set(log.items["category"].to_pylist()) == {0}
    assert _rows(log.items, "item_id", "creator_id") == [(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 1)]
    assert not [c for c in log.items.column_names if c.startswith("f_")]


def test_movielens_users_numeric_and_codes(tmp_path: Path) -> None:
    users = pl.from_arrow(load_movielens(_ml(tmp_path)).users)
    assert users.columns == ["user_id", "age", "gender", "occupation", "zip_code"]
    assert users["age"].to_list() == [24.0, 53.0, 23.0]
    assert users["gender"].to_list() == [1, 0, 1]  # F=0, M=1
    assert users["occupation"].to_list() == [1, 0, 2]
    assert users["zip_code"].dtype == pl.Int64  # a non-numeric zip: category codes


def test_movielens_grouplens_layout_gives_the_same_log_as_recbole(tmp_path: Path) -> None:
    """tests/fixtures/movielens/ml-100k holds ML_INTER/ML_ITEM/ML_USER in GroupLens's u.data/u.item/u.user."""
    recbole, grouplens = load_movielens(_ml(tmp_path), 2), load_movielens(GROUPLENS_100K, 2)
    assert recbole.meta["layout"] == "recbole" and grouplens.meta["layout"] == "grouplens-100k"
    assert grouplens.events.equals(recbole.events)
    assert grouplens.items.equals(recbole.items)
    assert grouplens.users.equals(recbole.users)
    assert grouplens.meta["genres"] == recbole.meta["genres"]


def test_movielens_non_numeric_token_is_an_error(tmp_path: Path) -> None:
    inter = ML_INTER.replace("3\t4\t4\t300", "u3\t4\t4\t300")
    d = _ml(tmp_path, inter=inter, user=None)
    with pytest.raises(LogValidationError) as exc:
        load_movielens(d)
    _assert_names(exc, d / "ml-tiny.inter", "user_id", 1)


def test_movielens_missing_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inter"):
        load_movielens(tmp_path)


# ---------------------------------------------------------------- tabular

MAPPING = {"ts": "time", "user_id": "uid", "item_id": "vid", "event": "action", "creator_id": "author"}
EVENTS_CSV = _lines(
    "time,uid,vid,action,author",
    "100,1,10,show,7",
    "101,1,10,click,7",
    "105,2,10,show,7",
    "110,2,11,show,8",
    "120,2,11,like,8",
)


def test_tabular_csv_with_mapping_derives_items(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", EVENTS_CSV)
    log = load_tabular(path, mapping=MAPPING, event_mapping={"show": "expose", "click": "view"})
    assert log.name == f"tabular:{path}"
    assert _rows(log.events, "ts", "user_id", "item_id", "event") == [
        (100, 1, 10, "expose"),
        (101, 1, 10, "view"),
        (105, 2, 10, "expose"),
        (110, 2, 11, "expose"),
        (120, 2, 11, "like"),
    ]
    assert _rows(log.items, "item_id", "creator_id", "upload_ts", "category") == [(10, 7, 100, 0), (11, 8, 110, 0)]


def test_tabular_parquet_with_items_and_users(tmp_path: Path) -> None:
    events = pa.table(
        {
            "when": pa.array([1_000.0, 2_000.5, 3_000.0]),
            "u": pa.array([1, 2, 1]),
            "i": pa.array([5, 5, 6]),
            "kind": pa.array(["expose", "expose", "like"]),
        }
    )
    items = pa.table(
        {
            "i": [5, 6],
            "creator_id": [1, 2],
            "upload_ts": [500, 900],
            "category": [3, 4],
            "f_len": [0.5, 1.0],
            "junk": ["a", "b"],
        }
    )
    users = pa.table({"u": [1, 2], "age": [30, 40], "country": ["fr", "de"]})
    pq.write_table(events, tmp_path / "events.parquet")
    pq.write_table(items, tmp_path / "items.parquet")
    pq.write_table(users, tmp_path / "users.parquet")
    log = load_tabular(
        tmp_path / "events.parquet", tmp_path / "items.parquet", tmp_path / "users.parquet",
        mapping={"ts": "when", "user_id": "u", "item_id": "i", "event": "kind"},
    )
    assert log.events["ts"].to_pylist() == [1000, 2000, 3000]  # float seconds floored
    assert log.items.column_names == ["item_id", "creator_id", "upload_ts", "category", "f_len"]
    assert log.items["category"].to_pylist() == [3, 4]
    assert pl.from_arrow(log.users).to_dicts() == [
        {"user_id": 1, "age": 30.0, "country": 1}, {"user_id": 2, "age": 40.0, "country": 0},
    ]


def test_tabular_iso_datetime_ts(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "events.csv",
        _lines(
            "ts,user_id,item_id,event,creator_id",
            "2024-01-02T03:04:05Z,1,1,expose,1",
            "2024-01-02 03:04:06,1,2,expose,1",
            "2024-01-03,2,1,expose,1",
            "2024-01-03T02:00:00+02:00,2,2,like,1",
        ),
    )
    log = load_tabular(path)
    utc = lambda *a: int(datetime(*a, tzinfo=timezone.utc).timestamp())  # noqa: E731
    expected = [utc(2024, 1, 2, 3, 4, 5), utc(2024, 1, 2, 3, 4, 6), utc(2024, 1, 3), utc(2024, 1, 3)]
    assert log.events["ts"].to_pylist() == expected


def test_tabular_timestamp_column(tmp_path: Path) -> None:
    ts = pa.array([datetime(2024, 5, 1, 12, tzinfo=timezone.utc)], pa.timestamp("ms", tz="UTC"))
    table = pa.table({"ts": ts, "user_id": [1], "item_id": [1], "event": ["expose"], "creator_id": [3]})
    pq.write_table(table, tmp_path / "e.parquet")
    log = load_tabular(tmp_path / "e.parquet")
    assert log.events["ts"].to_pylist() == [int(datetime(2024, 5, 1, 12, tzinfo=timezone.utc).timestamp())]


def test_tabular_missing_column(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", EVENTS_CSV.replace("action", "what"))
    with pytest.raises(LogValidationError) as exc:
        load_tabular(path, mapping=MAPPING)
    _assert_names(exc, path, "action", 5)
    assert "'event'" in str(exc.value)


def test_tabular_missing_creator_without_items_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", _lines("ts,user_id,item_id,event", "1,1,1,expose"))
    with pytest.raises(LogValidationError) as exc:
        load_tabular(path)
    _assert_names(exc, path, "creator_id", 1)


def test_tabular_unparsable_ts(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "events.csv",
        _lines(
            "ts,user_id,item_id,event,creator_id",
            "2024-01-02,1,1,expose,1",
            "yesterday,1,2,expose,1",
            "soon,2,1,expose,1",
        ),
    )
    with pytest.raises(LogValidationError) as exc:
        load_tabular(path)
    _assert_names(exc, path, "ts", 2)


def test_tabular_nan_ids(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "events.csv",
        _lines("ts,user_id,item_id,event,creator_id", "1,1,1,expose,1", "2,,1,expose,1", "3,,2,expose,1"),
    )
    with pytest.raises(LogValidationError) as exc:
        load_tabular(path)
    _assert_names(exc, path, "user_id", 2)
    nan = pa.table(
        {"ts": [1, 2], "user_id": [1, 2], "item_id": [1.0, np.nan], "event": ["expose"] * 2, "creator_id": [1, 1]}
    )
    pq.write_table(nan, tmp_path / "nan.parquet")
    with pytest.raises(LogValidationError) as exc:
        load_tabular(tmp_path / "nan.parquet")
    _assert_names(exc, tmp_path / "nan.parquet", "item_id", 1)


def test_tabular_events_before_item_upload(tmp_path: Path) -> None:
    events = _write(
        tmp_path / "events.csv", _lines("ts,user_id,item_id,event", "10,1,1,expose", "20,2,1,expose", "30,1,2,expose")
    )
    items = _write(tmp_path / "items.csv", _lines("item_id,creator_id,upload_ts,category", "1,1,25,0", "2,1,5,0"))
    with pytest.raises(LogValidationError) as exc:
        load_tabular(events, items)
    _assert_names(exc, events, "ts", 2)


def test_tabular_duplicated_event_keys(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "events.csv",
        _lines("ts,user_id,item_id,event,creator_id", "1,1,1,expose,1", "1,1,1,expose,1", "2,1,1,like,1"),
    )
    with pytest.raises(LogValidationError) as exc:
        load_tabular(path)
    _assert_names(exc, path, "ts,user_id,item_id,event", 1)


def test_tabular_duplicated_item_ids(tmp_path: Path) -> None:
    events = _write(tmp_path / "events.csv", _lines("ts,user_id,item_id,event", "10,1,1,expose"))
    items = _write(tmp_path / "items.csv", _lines("item_id,creator_id,upload_ts", "1,1,0", "1,2,0", "2,1,0"))
    with pytest.raises(LogValidationError) as exc:
        load_tabular(events, items)
    _assert_names(exc, items, "item_id", 1)


def test_tabular_unknown_event_type(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", EVENTS_CSV)
    with pytest.raises(LogValidationError) as exc:
        load_tabular(path, mapping=MAPPING, event_mapping={"show": "expose"})  # 'click' left unmapped
    _assert_names(exc, path, "event", 1)
    assert "click" in str(exc.value)


def test_tabular_items_without_upload_ts_use_first_event(tmp_path: Path) -> None:
    events = _write(tmp_path / "events.csv", _lines("ts,user_id,item_id,event", "10,1,1,expose", "30,1,2,expose"))
    items = _write(tmp_path / "items.csv", _lines("item_id,creator_id", "1,4", "2,5", "3,6"))
    log = load_tabular(events, items)
    assert _rows(log.items, "item_id", "creator_id", "upload_ts") == [(1, 4, 10), (2, 5, 30)]
    assert log.meta["items_without_events_dropped"] == 1


def test_tabular_bad_mapping_arguments(tmp_path: Path) -> None:
    path = _write(tmp_path / "events.csv", EVENTS_CSV)
    with pytest.raises(ValueError, match="timestamp"):
        load_tabular(path, mapping={"timestamp": "time"})
    with pytest.raises(ValueError, match="clicked"):
        load_tabular(path, mapping=MAPPING, event_mapping={"click": "clicked"})


# ---------------------------------------------------------------- KuaiRand catalogue

KR_VIDEOS = _lines(
    "video_id,author_id,video_type,upload_dt,upload_type,visible_status,video_duration,"
    "server_width,server_height,music_id,music_type,tag",
    "0,100,NORMAL,2022-04-10,LongImport,0.0,10000.0,720.0,1280.0,1,9.0,39",
    '1,100,NORMAL,2022-04-11,Kmovie,0.0,,720.0,1280.0,2,9.0,"12,62"',
    "2,200,AD,2022-04-09,Web,0.0,1000000.0,720.0,1280.0,3,,",
)


def test_kuairand_catalogue(tmp_path: Path) -> None:
    path = _write(tmp_path / "kr" / "video_features_basic_pure.csv", KR_VIDEOS)
    cat = load_kuairand_catalogue(tmp_path / "kr")
    assert cat.column_names == ["item_id", "creator_id", "upload_ts", "category", "f_duration"]
    assert cat["creator_id"].to_pylist() == [100, 100, 200]
    day = lambda d: int(datetime(2022, 4, d, tzinfo=timezone.utc).timestamp())  # noqa: E731
    assert cat["upload_ts"].to_pylist() == [day(10), day(11), day(9)]
    assert cat["category"].to_pylist() == [39, 12, 0]  # first tag; untagged -> 0
    dur = cat["f_duration"].to_pylist()  # log-duration scaled to [0, 1]; missing -> median (of 1e4, 1e6)
    assert dur[0] == pytest.approx(0.0) and dur[2] == pytest.approx(1.0)
    assert dur[1] == pytest.approx((np.log(505_000) - np.log(1e4)) / (np.log(1e6) - np.log(1e4)), rel=1e-5)
    assert cat.schema.field("f_duration").type == pa.float32()
    assert load_kuairand_catalogue(path).equals(cat)


def test_kuairand_catalogue_errors(tmp_path: Path) -> None:
    rows = KR_VIDEOS.splitlines()
    dup = _write(tmp_path / "dup.csv", _lines(*rows, rows[1]))
    with pytest.raises(LogValidationError) as exc:
        load_kuairand_catalogue(dup)
    _assert_names(exc, dup, "video_id", 1)
    no_author = _write(tmp_path / "na.csv", _lines(rows[0], rows[1].replace("0,100,", "0,,", 1), *rows[2:]))
    with pytest.raises(LogValidationError) as exc:
        load_kuairand_catalogue(no_author)
    _assert_names(exc, no_author, "author_id", 1)
    bad_date = _write(tmp_path / "bd.csv", KR_VIDEOS.replace("2022-04-11", "someday"))
    with pytest.raises(LogValidationError) as exc:
        load_kuairand_catalogue(bad_date)
    _assert_names(exc, bad_date, "upload_dt", 1)


def test_kuairand_users_activity(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "user_features_pure.csv",
        _lines(
            "user_id,user_active_degree,is_video_author",
            "0,full_active,1",
            "1,high_active,0",
            "2,UNKNOWN,0",
            "3,low_active,0",
        ),
    )
    users = load_kuairand_users(tmp_path)
    assert users.column_names == ["user_id", "activity"]
    assert users["activity"].to_pylist() == [1.0, 0.75, 0.5, 0.25]
    with pytest.raises(FileNotFoundError):
        load_kuairand_users(tmp_path / "nope")


# ---------------------------------------------------------------- specs

def test_parse_log_spec_forms(tmp_path: Path) -> None:
    ml = _ml(tmp_path)
    events = _write(tmp_path / "events.csv", EVENTS_CSV)
    kr = tmp_path / "kr"
    _write(kr / "video_features_basic_pure.csv", KR_VIDEOS)
    assert parse_log_spec(str(ml)) == LogSpec("movielens", str(ml), {})
    assert parse_log_spec(str(ml / "ml-tiny.inter")).kind == "movielens"
    assert parse_log_spec(str(kr)).kind == "kuairand"
    assert parse_log_spec(f"{events}?ts=time&event.show=expose") == LogSpec(
        "tabular", str(events), {"ts": "time", "event.show": "expose"}
    )
    assert parse_log_spec(f"movielens:{ml}?creator_group_size=2").options == {"creator_group_size": "2"}
    assert parse_log_spec("synthetic") == LogSpec("synthetic", "", {})
    assert parse_log_spec("synthetic:?n_users=100").options == {"n_users": "100"}


def test_parse_log_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'imdb'"):
        parse_log_spec(f"imdb:{tmp_path}")
    with pytest.raises(ValueError, match="does not exist"):
        parse_log_spec(f"tabular:{tmp_path / 'missing.csv'}")
    with pytest.raises(ValueError, match="needs a path"):
        parse_log_spec("movielens:")
    with pytest.raises(ValueError, match="cannot tell"):
        parse_log_spec(str(_write(tmp_path / "notes.txt", "x")))
    with pytest.raises(ValueError, match="key=value"):
        parse_log_spec(f"{tmp_path}?oops")


def test_load_real_log_dispatch(tmp_path: Path) -> None:
    ml = _ml(tmp_path)
    ml_log = load_real_log(parse_log_spec(f"{ml}?creator_group_size=2"))
    assert ml_log.items["creator_id"].to_pylist() == [2, 2, 1, 0, 3, 0]
    events = _write(tmp_path / "events.csv", EVENTS_CSV)
    spec = "tabular:" + str(events) + "?ts=time&user_id=uid&item_id=vid&event=action&creator_id=author"
    log = load_real_log(parse_log_spec(spec + "&event.show=expose&event.click=view"))
    assert log.events.num_rows == 5
    with pytest.raises(ValueError, match="unknown options"):
        load_real_log(parse_log_spec(spec + "&colour=red"))
    for kind in ("kuairand", "synthetic"):
        with pytest.raises(ValueError, match="synthetic platform"):
            load_real_log(LogSpec(kind, str(tmp_path)))
    with pytest.raises(ValueError, match="'nope'"):
        load_real_log(LogSpec("nope", str(tmp_path)))
    with pytest.raises(ValueError, match="does not exist"):
        load_real_log(LogSpec("movielens", str(tmp_path / "gone")))


# ---------------------------------------------------------------- docs and real data

@pytest.mark.skipif(not DOCS.exists(), reason="docs/sources.md not present")
def test_docs_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert blocks, "docs/sources.md has no python example"
    monkeypatch.chdir(tmp_path)
    for code in blocks:
        exec(compile(code, str(DOCS), "exec"), {"__name__": "docs_example"})


@pytest.mark.skipif(not ML_100K.exists(), reason="ml-100k not available")
def test_real_movielens_100k() -> None:
    log = load_movielens(ML_100K)
    ev = log.events
    assert int(pc.sum(pc.equal(ev["event"], "expose")).as_py()) == 100_000
    assert pc.count_distinct(ev["user_id"]).as_py() == 943
    assert log.users is not None and log.users.num_rows == 943
    assert log.items.num_rows == 1682
    n_creators = pc.count_distinct(log.items["creator_id"]).as_py()
    assert pc.max(log.items["creator_id"]).as_py() == n_creators - 1


@pytest.mark.skipif(not (KUAIRAND / VIDEO_FILE).exists(), reason="KuaiRand catalogue not available")
def test_real_kuairand_catalogue() -> None:
    cat = load_kuairand_catalogue(KUAIRAND)
    assert cat.num_rows == 7583
    assert pc.count_distinct(cat["creator_id"]).as_py() == 6510
    assert pc.min(cat["category"]).as_py() >= 0
    users = load_kuairand_users(KUAIRAND)
    assert users.num_rows == 27285


# ---------------------------------------------------------------- synthetic platform (docs/world.md)

D = SECONDS_PER_DAY
TINY = SyntheticConfig(n_users=300, n_creators=40, days=3, pre_days=2)


def test_synthetic_pre_period_is_logged_but_day_0_is_t0(tmp_path: Path) -> None:
    log = generate_synthetic(TINY, seed=0)
    ts = log.events["ts"].to_numpy()
    assert log.meta["start_ts"] == T0 and log.t0 == T0 and log.n_days == 3
    assert T0 - 2 * D <= ts.min() < T0 - D and ts.max() < T0 + 3 * D  # events on days -2..2
    assert (ts < T0).sum() > 0.3 * (ts >= T0).sum()  # two days of history for three replayed days
    # creators upload during the pre-period too (at their daily rate); the catalogue comes before it
    up = log.items["upload_ts"].to_numpy()
    assert up.min() >= T0 - (CATALOGUE_DAYS + 2) * D
    assert ((up >= T0 - 2 * D) & (up < T0)).sum() > 0
    pre_items = log.events.filter(pc.less(log.events["ts"], T0))["item_id"].to_numpy()
    assert np.isin(pre_items, log.items["item_id"].to_numpy()[up >= T0 - 2 * D]).any()  # ... and get exposed in it
    # replay writes only the simulated days: day 0 starts at t0, the pre-period is not a simulated day
    root = write_log(log, tmp_path, log.n_days)
    assert [p.name for p in root.children()] == ["day=0000", "day=0001", "day=0002"]
    replayed = pa.concat_tables([ArrowDayReader(root).read_day(d) for d in range(3)])
    assert replayed.num_rows == int((ts >= T0).sum())
    assert pc.min(replayed["ts"]).as_py() >= T0


def test_synthetic_without_pre_period_starts_at_t0() -> None:
    log = generate_synthetic(TINY.model_copy(update={"pre_days": 0}), seed=0)
    assert log.t0 == T0 and log.n_days == 3 and pc.min(log.events["ts"]).as_py() >= T0
    assert pc.max(log.items["upload_ts"]).as_py() < T0 + 3 * D


def test_log_t0_honours_an_explicit_midnight_start() -> None:
    events = pa.table({"ts": [T0 - D + 5, T0 + 2 * D + 7], "user_id": [1, 1], "item_id": [1, 1],
                       "event": ["expose"] * 2})
    items = pa.table({"item_id": [1], "creator_id": [1], "upload_ts": [T0 - 2 * D], "category": [0]})
    assert Log("x", events, items).t0 == T0 - D and Log("x", events, items).n_days == 4
    log = Log("x", events, items, meta={"start_ts": T0})
    assert log.t0 == T0 and log.n_days == 3
    with pytest.raises(ValueError, match="midnight"):
        Log("x", events, items, meta={"start_ts": T0 + 60}).t0


def test_synthetic_is_seeded_and_has_content_columns() -> None:
    a, b = generate_synthetic(TINY, seed=4), generate_synthetic(TINY, seed=4)
    assert a.events.equals(b.events) and a.items.equals(b.items)
    np.testing.assert_array_equal(a.truth.item_vecs, b.truth.item_vecs)
    np.testing.assert_array_equal(a.truth.user_bias, b.truth.user_bias)
    content = [f"f_content_{j}" for j in range(TINY.latent_dim)]
    assert a.items.column_names == ["item_id", "creator_id", "upload_ts", "category", "f_duration", *content]
    assert not generate_synthetic(TINY, seed=5).events.equals(a.events)
    none = generate_synthetic(TINY.model_copy(update={"content_dim": 0}), seed=4)
    assert none.items.column_names == ["item_id", "creator_id", "upload_ts", "category", "f_duration"]
    assert SyntheticConfig(latent_dim=8, content_dim=12).n_content == 12
    with pytest.raises(ValidationError, match="content_dim"):
        SyntheticConfig(latent_dim=8, content_dim=4)


@pytest.mark.parametrize("high", [3, 1_000, 1 << 40])  # packed into one key, and (2^40 x 3 > 63 bits) row-wise
def test_first_occurrences_are_numpys_row_wise_unique(high):
    from simulator.sources.synthetic import first_occurrences

    rng = np.random.default_rng(high)
    columns = [rng.integers(-5, high, 20_000) for _ in range(3)]
    expected = np.sort(np.unique(np.stack(columns, 1), axis=0, return_index=True)[1])
    got = first_occurrences(*columns)
    assert np.array_equal(got, expected)
    if high == 3:
        assert len(got) < 20_000  # there were duplicates to drop
    assert len(first_occurrences(*(np.empty(0, np.int64),) * 3)) == 0

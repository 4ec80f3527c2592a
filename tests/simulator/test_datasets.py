"""Datasets by name (registry, download with checksums, cache, specs naming them) and the publishers' own layouts.

Downloads use ``file://`` URLs of archives made here from the hand-made fixtures in tests/fixtures: no network.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import tarfile
import zipfile
from dataclasses import replace
from pathlib import Path

import polars as pl
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from simulator.run.cli import app
from simulator.core.schema import EVENT_TYPES, LogValidationError
from simulator.sources import datasets
from simulator.sources.datasets import (
    CACHE_ENV,
    DATASETS,
    MARKER,
    ChecksumMismatch,
    DatasetError,
    DatasetNotCached,
    cache_root,
    fetch,
)
from simulator.sources.movielens import is_movielens, load_movielens
from simulator.sources.spec import KINDS, LogSpec, load_real_log, parse_log_spec
from simulator.sources.table_files import MalformedFileError, read_text_table
from simulator.sources.tabular_options import LAYOUTS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ML = FIXTURES / "movielens"


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty dataset cache that specs use (through $COLDSIM_DATA_DIR)."""
    root = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(root))
    return root


def _zip_dir(src: Path, dest: Path, top: str) -> Path:
    """A zip of ``src``'s files under the folder ``top/`` (as GroupLens's zips are)."""
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(src.iterdir()):
            zf.write(f, f"{top}/{f.name}")
    return dest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _local(monkeypatch: pytest.MonkeyPatch, name: str, archive: Path, sha256: str | None) -> datasets.Dataset:
    """Point registry entry ``name`` at a local archive (same file name as the real one) with ``sha256``."""
    ds = replace(DATASETS[name], url=archive.as_uri(), sha256=sha256, md5=None, size=None)
    monkeypatch.setitem(DATASETS, name, ds)
    return ds


def _ml100k_zip(tmp_path: Path) -> Path:
    return _zip_dir(ML / "ml-100k", tmp_path / "ml-100k.zip", "ml-100k")


# ---------------------------------------------------------------- registry


def test_registry_entries_are_complete() -> None:
    assert {"ml-100k", "ml-latest-small", "ml-1m", "amazon-musical-instruments", "kuairand-pure"} <= set(DATASETS)
    assert DATASETS["ml-100k"].url == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    for name, ds in DATASETS.items():
        assert ds.name == name and ds.url.startswith("https://"), name
        assert ds.logs and all(log.kind in KINDS for log in ds.logs), name
        assert ds.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", ds.sha256), name
        assert ds.md5 is None or re.fullmatch(r"[0-9a-f]{32}", ds.md5), name
        assert ds.checksum_source and ds.license and ds.homepage, name
        for log in ds.logs:
            assert log.options.get("layout", next(iter(LAYOUTS))) in LAYOUTS
    assert DATASETS["ml-1m"].archive == "zip" and DATASETS["kuairand-pure"].archive == "tar"
    assert DATASETS["amazon-musical-instruments"].archive == "file"


def test_cache_root_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(CACHE_ENV, raising=False)
    assert cache_root() == Path("~/.cache/coldsim/datasets").expanduser()
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"


# ---------------------------------------------------------------- download, verify, unpack, resolve


def test_fetch_zip_verifies_unpacks_and_a_spec_name_uses_the_cache(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _ml100k_zip(tmp_path)
    _local(monkeypatch, "ml-100k", archive, _sha256(archive))
    seen: list[int] = []
    got = fetch("ml-100k", progress=lambda done, total: seen.append(done))
    assert got.verified == ("sha256",) and got.sha256 == _sha256(archive) and not got.already_cached
    assert got.directory == cache / "ml-100k" and (cache / "ml-100k" / MARKER).is_file()
    assert (cache / "ml-100k" / "ml-100k" / "u.data").is_file() and seen[-1] == archive.stat().st_size
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no partial download left
    assert fetch("ml-100k").already_cached
    assert not fetch("ml-100k", force=True).already_cached

    spec = parse_log_spec("movielens:ml-100k?creator_group_size=2")
    assert spec == LogSpec("movielens", str(cache / "ml-100k" / "ml-100k"), {"creator_group_size": "2"})
    assert parse_log_spec("ml-100k").kind == "movielens"  # a bare name: the dataset's default kind
    log = load_real_log(spec)
    assert log.name == "movielens:ml-100k"
    assert log.events.equals(load_movielens(ML / "ml-100k").events)


def test_checksum_mismatch_is_an_error_and_caches_nothing(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _ml100k_zip(tmp_path)
    _local(monkeypatch, "ml-100k", archive, "0" * 64)
    with pytest.raises(ChecksumMismatch) as exc:
        fetch("ml-100k")
    msg = str(exc.value)
    assert "sha256 mismatch" in msg and "0" * 64 in msg and _sha256(archive) in msg and archive.as_uri() in msg
    assert f"--sha256 {_sha256(archive)}" in msg
    assert not (cache / "ml-100k").exists() and not list(cache.iterdir())
    # the registry's size and md5 are checked too; --sha256 replaces them all
    monkeypatch.setitem(DATASETS, "ml-100k", replace(DATASETS["ml-100k"], sha256=None, size=123))
    with pytest.raises(ChecksumMismatch, match="size mismatch"):
        fetch("ml-100k")
    monkeypatch.setitem(DATASETS, "ml-100k", replace(DATASETS["ml-100k"], size=None, md5="f" * 32))
    with pytest.raises(ChecksumMismatch, match="md5 mismatch"):
        fetch("ml-100k")
    assert fetch("ml-100k", sha256=_sha256(archive).upper()).verified == ("sha256",)


def test_unknown_checksum_downloads_unverified(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _ml100k_zip(tmp_path)
    _local(monkeypatch, "ml-100k", archive, None)
    got = fetch("ml-100k")
    assert got.verified == () and got.sha256 == _sha256(archive)


def test_url_override_and_download_errors(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _ml100k_zip(tmp_path)
    _local(monkeypatch, "ml-100k", (tmp_path / "elsewhere" / "ml-100k.zip"), None)
    with pytest.raises(DatasetError, match="cannot download"):
        fetch("ml-100k")
    assert fetch("ml-100k", url=archive.as_uri()).directory == cache / "ml-100k"
    bad = tmp_path / "bad" / "ml-100k.zip"
    bad.parent.mkdir()
    bad.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="cannot unpack"):
        fetch("ml-100k", url=bad.as_uri(), force=True)
    assert (cache / "ml-100k" / MARKER).is_file()  # a failed refresh leaves the old copy alone
    evil = tmp_path / "evil" / "ml-100k.zip"
    evil.parent.mkdir()
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escape.txt", "x")
    with pytest.raises(DatasetError, match="outside"):
        fetch("ml-100k", url=evil.as_uri(), force=True)
    assert not (cache / "escape.txt").exists()
    with pytest.raises(DatasetError, match="unknown dataset 'ml-5m'"):
        fetch("ml-5m")


def test_spec_naming_an_uncached_dataset_says_what_to_run(cache: Path) -> None:
    with pytest.raises(DatasetNotCached, match=r"simulate data get ml-latest-small"):
        parse_log_spec("movielens:ml-latest-small")
    with pytest.raises(DatasetNotCached, match=r"simulate data get ml-1m"):
        parse_log_spec("ml-1m")
    with pytest.raises(DatasetError, match="no movielens log"):
        parse_log_spec("movielens:kuairand-pure")
    with pytest.raises(ValueError, match="nor is it a dataset name"):
        parse_log_spec("movielens:ml-2k")


def test_existing_path_wins_over_a_dataset_name(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "ml-1m"
    local.mkdir()
    for f in (ML / "ml-1m").iterdir():
        (local / f.name).write_bytes(f.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert parse_log_spec("ml-1m") == LogSpec("movielens", "ml-1m", {})


def test_tar_dataset_gives_a_catalogue_and_a_replayable_log(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = tmp_path / "KuaiRand-Pure.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for f in sorted((FIXTURES / "kuairand").iterdir()):
            tf.add(f, f"KuaiRand-Pure/data/{f.name}")
    _local(monkeypatch, "kuairand-pure", archive, _sha256(archive))
    fetch("kuairand-pure")
    data = cache / "kuairand-pure" / "KuaiRand-Pure" / "data"
    assert parse_log_spec("kuairand-pure") == LogSpec("kuairand", str(data), {})
    spec = parse_log_spec("tabular:kuairand-pure")
    assert spec.path == str(data / "log_standard_4_08_to_4_21_pure.csv") and spec.options == {"layout": "kuairand-log"}
    log = load_real_log(spec)
    assert log.events.num_rows == 11 and log.users is not None and log.users.num_rows == 3


def test_plain_file_dataset_with_a_layout(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "Musical_Instruments_5.json.gz"
    archive.write_bytes(gzip.compress((FIXTURES / "amazon" / "Musical_Instruments_5.json").read_bytes()))
    _local(monkeypatch, "amazon-musical-instruments", archive, _sha256(archive))
    fetch("amazon-musical-instruments")
    assert (cache / "amazon-musical-instruments" / "Musical_Instruments_5.json.gz").is_file()
    log = load_real_log(parse_log_spec("amazon-musical-instruments?creator_group_size=2"))
    assert log.meta["duplicate_events_dropped"] == 2 and log.events.num_rows == 11  # the repeated review: expose + like
    assert sorted(set(log.items["creator_id"].to_pylist())) == [0, 1]  # 3 items in creators of 2


# ---------------------------------------------------------------- the `simulate data` command


def test_cli_data_list_and_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    cache_dir = tmp_path / "c"
    res = runner.invoke(app, ["data", "list", "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    assert all(name in res.output for name in DATASETS) and "not downloaded" in res.output

    archive = _ml100k_zip(tmp_path)
    ds = _local(monkeypatch, "ml-100k", archive, None)
    res = runner.invoke(app, ["data", "get", "ml-100k", "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0, res.output
    assert "not verified" in res.output and _sha256(archive) in res.output and "--log movielens:ml-100k" in res.output
    res = runner.invoke(app, ["data", "get", "ml-100k", "--cache-dir", str(cache_dir)])
    assert res.exit_code == 0 and "already cached" in res.output

    monkeypatch.setitem(DATASETS, "ml-100k", replace(ds, sha256="0" * 64))
    res = runner.invoke(app, ["data", "get", "ml-100k", "--cache-dir", str(tmp_path / "c2")])
    assert res.exit_code == 2 and "mismatch" in res.output
    res = runner.invoke(app, ["data", "get", "ml-100k", "--cache-dir", str(tmp_path / "c2"), "--sha256", _sha256(archive)])
    assert res.exit_code == 0 and "verified: sha256" in res.output
    res = runner.invoke(app, ["data", "get", "nope"])
    assert res.exit_code == 2 and "unknown dataset 'nope'" in res.output


# ---------------------------------------------------------------- the publishers' layouts


def test_grouplens_csv_layout() -> None:
    log = load_movielens(ML / "ml-latest-small")
    assert log.name == "movielens:ml-latest-small" and log.meta["layout"] == "grouplens-csv"
    ev = log.events
    likes = sorted(zip(*(ev.filter(pc.equal(ev["event"], "like"))[c].to_pylist() for c in ("user_id", "item_id"))))
    assert likes == [(1, 1), (1, 3), (2, 50), (3, 193609)]  # half stars: 4.0 and 4.5 like, 3.5 not
    items = pl.from_arrow(log.items)
    assert items["item_id"].to_list() == [1, 3, 6, 50, 193609]  # the unrated movie is not an item
    # genres sorted: Action=0 Adventure=1 ... Crime=5 ...; "(no genres listed)" is no genre -> 0
    assert items["category"].to_list() == [1, 4, 0, 5, 0]
    assert "f_g_no_genres_listed" not in items.columns and items["f_g_crime"].to_list() == [0, 0, 1, 1, 0]
    assert items["f_year"].to_list()[4] == 0.0  # 1991 is the earliest year (from the title)
    assert log.users is None


def test_grouplens_dat_layout() -> None:
    log = load_movielens(ML / "ml-1m" / "ratings.dat")
    assert log.meta["layout"] == "grouplens-dat" and log.events.num_rows == 9
    assert "Musical" in log.meta["genres"] and log.meta["items_in_item_file"] == 5  # Latin-1 titles read
    users = pl.from_arrow(log.users)
    assert users.columns == ["user_id", "gender", "age", "occupation", "zip_code"]
    assert users["gender"].to_list() == [0, 1, 1]


def test_grouplens_100k_layout_reads_the_flags() -> None:
    log = load_movielens(ML / "ml-100k" / "u.data", creator_group_size=2)
    assert log.meta["layout"] == "grouplens-100k" and log.meta["genres"] == ["Action", "Comedy", "Drama"]
    assert log.items["category"].to_pylist() == [1, 1, 0, 0, 1, 0]
    assert pl.from_arrow(log.users)["occupation"].to_list() == [1, 0, 2]


def test_movielens_detection_and_layout_errors(tmp_path: Path) -> None:
    assert all(is_movielens(ML / d) for d in ("ml-100k", "ml-latest-small", "ml-1m"))
    assert is_movielens(ML / "ml-latest-small" / "ratings.csv")
    other = tmp_path / "ratings.csv"
    other.write_text("user,item,score\n1,2,3\n")
    assert not is_movielens(other) and parse_log_spec(str(other)).kind == "tabular"
    assert parse_log_spec(str(ML / "ml-1m")).kind == "movielens"
    bad = tmp_path / "ml" / "ratings.dat"
    bad.parent.mkdir()
    bad.write_text("1::10::5::978300760\n1::11::978300761\n")
    with pytest.raises(MalformedFileError, match=r"ratings\.dat line 2: expected 4 fields separated by '::', got 3"):
        load_movielens(bad.parent)
    text = tmp_path / "ml2" / "ratings.csv"
    text.parent.mkdir()
    text.write_text("userId,movieId,rating,timestamp\n1,10,four,978300760\n")
    with pytest.raises(LogValidationError) as exc:
        load_movielens(text.parent)
    assert "'rating'" in str(exc.value) and "four" in str(exc.value)


def test_read_text_table_lines_and_empty_fields(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("a|b|c\n\n1||3\n4|5|6\n")
    df = read_text_table(path, "|")
    assert df.columns == ["a", "b", "c"] and df["b"].to_list() == [None, "5"]
    path.write_text("a|b|c\n\n1||3\n4|5\n")
    with pytest.raises(MalformedFileError, match=r"t\.txt line 4: expected 3 fields"):
        read_text_table(path, "|")


def test_amazon_layouts_json_and_csv() -> None:
    json_log = load_real_log(parse_log_spec(f"tabular:{FIXTURES / 'amazon' / 'Musical_Instruments_5.json'}?layout=amazon-json"))
    csv_log = load_real_log(parse_log_spec(f"tabular:{FIXTURES / 'amazon' / 'Musical_Instruments.csv'}?layout=amazon-csv"))
    ev = json_log.events
    assert json_log.meta["duplicate_events_dropped"] == 2 and json_log.meta["ids"] == "codes"
    assert int(pc.sum(pc.equal(ev["event"], "expose")).as_py()) == 7
    assert int(pc.sum(pc.equal(ev["event"], "like")).as_py()) == 4  # overall 5.0, 4.0, 5.0, 4.0
    assert sorted(set(ev["user_id"].to_pylist())) == [0, 1, 2]  # reviewerIDs numbered in sorted order
    assert json_log.items["creator_id"].to_pylist() == [0, 0, 0]  # one made-up creator per 16 items
    assert csv_log.events.num_rows == 8 and set(csv_log.events["event"].to_pylist()) <= set(EVENT_TYPES)


def test_kuairand_layout_events_from_flags() -> None:
    events = FIXTURES / "kuairand" / "log_standard_4_08_to_4_21_pure.csv"
    log = load_real_log(parse_log_spec(f"tabular:{events}?layout=kuairand-log"))
    rows = sorted(zip(*(log.events[c].to_pylist() for c in ("user_id", "item_id", "event"))))
    assert rows == sorted([
        (3, 1071, "expose"), (3, 1071, "view"), (3, 2, "expose"),
        (5, 1071, "expose"), (5, 1071, "like"), (5, 1071, "follow"), (5, 1071, "view"),
        (5, 2, "expose"), (5, 2, "comment"), (5, 2, "share"), (8, 7, "expose"),
    ])
    assert log.events["ts"].to_pylist()[0] == 1649408076  # time_ms floored to seconds
    # authors from the catalogue; upload time = first event (the catalogue's upload_dt is after some events)
    assert sorted(zip(log.items["item_id"].to_pylist(), log.items["creator_id"].to_pylist())) == [
        (2, 2103883), (7, 7349781), (1071, 7349781)]
    assert log.meta["items_without_events_dropped"] == 1

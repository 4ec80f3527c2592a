"""MovieLens in RecBole atomic files as a coldsim log: every rating an exposure, 4+ stars also a like."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from simulator.schema import Log, LogValidationError, validate_events, validate_items, validate_log, validate_users
from simulator.sources.tabular import NUMBER_PATTERN, encode_attributes

LIKE_MIN_RATING = 4.0
"""A rating at or above this is also a ``like`` (every rating is an ``expose``)."""

GENRE_FIELDS: tuple[str, ...] = ("class", "genre")
"""``.item`` field holding the space-separated genres (RecBole: ``class`` in ml-100k, ``genre`` in ml-1m+)."""

YEAR_FIELDS: tuple[str, ...] = ("release_year", "year")
"""``.item`` field holding the release year; values that are not four digits count as unknown."""

_INT_TOKEN = r"^[+-]?\d+$"


def load_movielens(path: str | Path, creator_group_size: int = 16) -> Log:
    """Load a MovieLens dataset in RecBole atomic-file layout (``path``: its directory or its ``.inter`` file).

    * events: every rating is an ``expose`` at its timestamp; a rating >= :data:`LIKE_MIN_RATING`
      also gives a ``like`` at the same timestamp;
    * items (the rated ones): ``upload_ts`` = first rating time (MovieLens has no upload time);
      ``category`` = index of the first genre in the sorted list of all genres of the ``.item``
      file (0 when unknown); ``creator_id`` by the rule of :func:`movielens_creators`; with an
      ``.item`` file also ``f_year`` (release year scaled to [0, 1], unknown -> median year) and
      one multi-hot ``f_g_<genre>`` column per genre;
    * users (with a ``.user`` file): ``user_id`` plus every other field as a number
      (numeric tokens parsed, other tokens as category codes, ``token_seq`` fields dropped).

    Ids must be numeric tokens; anything else raises :class:`LogValidationError` naming the file.
    """
    if creator_group_size < 1:
        raise ValueError(f"creator_group_size must be >= 1, got {creator_group_size}")
    inter_path = _inter_file(Path(path))
    stem = inter_path.with_suffix("")
    item_path, user_path = stem.with_suffix(".item"), stem.with_suffix(".user")

    src = str(inter_path)
    inter, _ = _read_atomic(inter_path)
    ratings = pl.DataFrame(
        [
            _int_tokens(_field(inter, "user_id", src), src, "user_id"),
            _int_tokens(_field(inter, "item_id", src), src, "item_id"),
            _numbers(_field(inter, "rating", src), src, "rating"),
            _numbers(_field(inter, "timestamp", src), src, "timestamp").floor().cast(pl.Int64).alias("ts"),
        ]
    )
    keys = ["ts", "user_id", "item_id"]
    events = pl.concat(
        [
            ratings.select(*keys, event=pl.lit("expose")),
            ratings.filter(pl.col("rating") >= LIKE_MIN_RATING).select(*keys, event=pl.lit("like")),
        ]
    )
    events_tbl = validate_events(events.to_arrow(), src)

    items = ratings.group_by("item_id").agg(upload_ts=pl.col("ts").min())
    genres: list[str] = []
    n_items_file: int | None = None
    if item_path.is_file():
        meta_items = _item_meta(item_path)
        n_items_file = meta_items.height
        genres = sorted(set(meta_items["genres"].explode().drop_nulls().to_list()))
        items = items.join(meta_items, on="item_id", how="left")
    else:
        items = items.with_columns(year=pl.lit(None, pl.Int64), genres=pl.lit(None, pl.List(pl.String)))
    items = movielens_creators(items, genres, creator_group_size)
    items = items.with_columns(category=pl.col("genre_rank").clip(lower_bound=0))
    items = items.with_columns(_content_features(items, genres) if genres else [])
    items_tbl = validate_items(items.to_arrow(), str(item_path if item_path.is_file() else inter_path))

    users_tbl = None
    if user_path.is_file():
        users_raw, types = _read_atomic(user_path)
        uid = _int_tokens(_field(users_raw, "user_id", str(user_path)), str(user_path), "user_id")
        attrs = users_raw.select([c for c in users_raw.columns if c != "user_id" and types[c] != "token_seq"])
        users_tbl = validate_users(encode_attributes(attrs.with_columns(uid), "user_id").to_arrow(), str(user_path))

    log = Log(
        name=f"movielens:{inter_path.parent.name}",
        events=events_tbl,
        items=items_tbl,
        users=users_tbl,
        meta={
            "inter_path": src,
            "n_ratings": ratings.height,
            "like_min_rating": LIKE_MIN_RATING,
            "creator_group_size": creator_group_size,
            "genres": genres,
            "items_in_item_file": n_items_file,
        },
    )
    return validate_log(log)


def movielens_creators(items: pl.DataFrame, genres: list[str], group_size: int) -> pl.DataFrame:
    """Assign synthetic creators to MovieLens items (which have none), deterministically.

    Items are grouped by (first genre, release decade), each group is ordered by item id and
    cut into consecutive chunks of at most ``group_size`` items; each chunk is one creator.
    Creator ids are 0..C-1 in sorted (genre, decade, chunk) order, where genres sort by name
    and an unknown genre or decade sorts first. ``items`` needs ``item_id``, ``year`` (nullable
    int) and ``genres`` (nullable list of str); adds ``genre_rank`` (index of the first genre in
    ``genres``, -1 if unknown), ``decade`` (-1 if unknown) and ``creator_id``.
    """
    rank = {g: i for i, g in enumerate(genres)}
    keyed = items.with_columns(
        genre_rank=pl.col("genres").list.first().replace_strict(rank, default=-1, return_dtype=pl.Int64).fill_null(-1),
        decade=((pl.col("year") // 10) * 10).fill_null(-1).cast(pl.Int64),
    ).sort(["genre_rank", "decade", "item_id"])
    chunk = pl.int_range(pl.len(), dtype=pl.Int64).over(["genre_rank", "decade"]) // group_size
    keyed = keyed.with_columns(chunk=chunk)
    new_creator = pl.any_horizontal(pl.col(c) != pl.col(c).shift(1) for c in ("genre_rank", "decade", "chunk"))
    return keyed.with_columns(creator_id=new_creator.fill_null(True).cast(pl.Int64).cum_sum() - 1).drop("chunk")


def genre_column(genre: str) -> str:
    """Feature column of a genre: ``f_g_`` + lower-cased name, non-alphanumerics as ``_`` (``Sci-Fi``: ``f_g_sci_fi``)."""
    return "f_g_" + (re.sub(r"[^0-9a-z]+", "_", genre.lower()).strip("_") or "unnamed")


def _content_features(items: pl.DataFrame, genres: list[str]) -> list[pl.Expr]:
    """``f_year`` (min-max scaled release year, unknown -> median) and multi-hot ``f_g_<genre>`` (float32)."""
    years = items["year"].drop_nulls()
    lo, hi = (years.min(), years.max()) if len(years) else (0, 0)
    median = years.median() if len(years) else 0.0
    span = float(hi - lo) if hi != lo else 1.0
    exprs = [((pl.col("year").cast(pl.Float64).fill_null(median) - lo) / span).cast(pl.Float32).alias("f_year")]
    names = [genre_column(g) for g in genres]
    if len(set(names)) != len(names):
        raise ValueError(f"genres {genres} give clashing feature column names {names}")
    for g, name in zip(genres, names):
        exprs.append(pl.col("genres").list.contains(g).fill_null(False).cast(pl.Float32).alias(name))
    return exprs


def _item_meta(item_path: Path) -> pl.DataFrame:
    """``item_id``, ``year`` (null if unknown) and ``genres`` (list of str) from a ``.item`` file."""
    src = str(item_path)
    raw, _ = _read_atomic(item_path)
    item_id = _int_tokens(_field(raw, "item_id", src), src, "item_id")
    year_f = next((f for f in YEAR_FIELDS if f in raw.columns), None)
    genre_f = next((f for f in GENRE_FIELDS if f in raw.columns), None)
    year = (
        raw[year_f].str.strip_chars().str.extract(r"^(\d{4})$").cast(pl.Int64)
        if year_f
        else pl.Series([None] * raw.height, dtype=pl.Int64)
    )
    genres = (
        raw[genre_f].str.extract_all(r"\S+")
        if genre_f
        else pl.Series([None] * raw.height, dtype=pl.List(pl.String))
    )
    meta = pl.DataFrame([item_id, year.alias("year"), genres.alias("genres")])
    n_dup = meta.height - meta["item_id"].n_unique()
    if n_dup:
        raise LogValidationError(src, "item_id", n_dup, "duplicated item ids")
    return meta


def _inter_file(path: Path) -> Path:
    """The ``.inter`` file of a dataset given as its directory or the file itself."""
    if path.is_file() and path.suffix == ".inter":
        return path
    if path.is_dir():
        found = sorted(path.glob("*.inter"))
        if len(found) == 1:
            return found[0]
        raise ValueError(f"{path}: expected exactly one *.inter file, found {[p.name for p in found]}")
    raise ValueError(f"{path}: not a MovieLens directory or .inter file")


def _read_atomic(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """A RecBole atomic file as all-string columns named without their ``:type`` suffix, and {name: type}."""
    df = pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)
    fields = [h.partition(":") for h in df.columns]
    if len({name for name, _, _ in fields}) != len(fields):
        raise LogValidationError(str(path), None, df.height, f"header has repeated field names {df.columns}")
    return df.rename({h: name for h, (name, _, _) in zip(df.columns, fields)}), {
        name: (ftype or "token") for name, _, ftype in fields
    }


def _field(df: pl.DataFrame, name: str, source: str) -> pl.Series:
    """Field ``name`` of an atomic file; a missing field raises :class:`LogValidationError`."""
    if name not in df.columns:
        raise LogValidationError(source, name, df.height, f"missing field (have {df.columns})")
    return df[name]


def _int_tokens(s: pl.Series, source: str, column: str) -> pl.Series:
    """Integer ids from id tokens; non-numeric or missing tokens raise :class:`LogValidationError`."""
    t = s.str.strip_chars()
    bad = ~t.str.contains(_INT_TOKEN).fill_null(False)
    n_bad = int(bad.sum())
    if n_bad:
        examples = t.filter(bad).unique(maintain_order=True).head(3).to_list()
        raise LogValidationError(
            source, column, n_bad, f"id tokens that are not integers (e.g. {examples}); MovieLens ids must be numeric"
        )
    return t.cast(pl.Int64).alias(column)


def _numbers(s: pl.Series, source: str, column: str) -> pl.Series:
    """Float64 from number tokens; missing or non-numeric tokens raise :class:`LogValidationError`."""
    t = s.str.strip_chars()
    bad = ~t.str.contains(NUMBER_PATTERN).fill_null(False)
    n_bad = int(bad.sum())
    if n_bad:
        examples = t.filter(bad).unique(maintain_order=True).head(3).to_list()
        raise LogValidationError(source, column, n_bad, f"values that are not numbers (e.g. {examples})")
    return t.cast(pl.Float64).alias(column)

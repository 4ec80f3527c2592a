"""MovieLens (RecBole atomic files or GroupLens's own layouts) as a coldsim log: every rating an exposure, 4+ stars a like."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from simulator.core.schema import Log, LogValidationError, validate_events, validate_items, validate_log, validate_users
from simulator.sources.table_files import read_csv_text, read_text_table
from simulator.sources.tabular import encode_attributes
from simulator.sources.tabular_options import NUMBER_PATTERN

LIKE_MIN_RATING = 4.0
"""A rating at or above this is also a ``like`` (every rating is an ``expose``)."""

GENRE_FIELDS: tuple[str, ...] = ("class", "genre")
"""``.item`` field holding the space-separated genres (RecBole: ``class`` in ml-100k, ``genre`` in ml-1m+)."""

YEAR_FIELDS: tuple[str, ...] = ("release_year", "year")
"""``.item`` field holding the release year; values that are not four digits count as unknown."""

ML_100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
"""The 19 genre flags of ml-100k's ``u.item``, in order (used when there is no ``u.genre`` file)."""

NO_GENRE = "(no genres listed)"
"""GroupLens's placeholder for a movie without genres (``movies.csv``): no genre, not a genre."""

_INT_TOKEN = r"^[+-]?\d+$"
_TITLE_YEAR = r"\((\d{4})\)\s*$"


@dataclass(frozen=True)
class MovieLensFiles:
    """One MovieLens release read from its files: ``ratings`` (``user_id, item_id, rating, ts``), optional
    ``movies`` (``item_id``, ``year`` nullable, ``genres`` nullable list) and ``users`` (``user_id`` plus
    attribute columns as text), each with the file it came from."""

    layout: str
    ratings: pl.DataFrame
    ratings_source: str
    movies: pl.DataFrame | None = None
    movies_source: str | None = None
    users: pl.DataFrame | None = None
    users_source: str | None = None


def load_movielens(path: str | Path, creator_group_size: int = 16) -> Log:
    """Load a MovieLens dataset (``path``: its directory or its ratings file) in any layout of :data:`LAYOUTS`:
    RecBole atomic files (``*.inter``), GroupLens ``ratings.csv`` (ml-latest*, ml-20m+), ``u.data`` (ml-100k)
    or ``ratings.dat`` (ml-1m, ml-10m), each with its movie and user files when present.

    * events: every rating is an ``expose`` at its timestamp; a rating >= :data:`LIKE_MIN_RATING`
      also gives a ``like`` at the same timestamp;
    * items (the rated ones): ``upload_ts`` = first rating time (MovieLens has no upload time);
      ``category`` = index of the first genre in the sorted list of all genres of the movie
      file (0 when unknown); ``creator_id`` by the rule of :func:`movielens_creators`; with a
      movie file also ``f_year`` (release year scaled to [0, 1], unknown -> median year) and
      one multi-hot ``f_g_<genre>`` column per genre;
    * users (with a user file): ``user_id`` plus every other field as a number
      (numeric tokens parsed, other tokens as category codes, ``token_seq`` fields dropped).

    Ids must be numeric tokens; anything else raises :class:`LogValidationError` naming the file.
    """
    if creator_group_size < 1:
        raise ValueError(f"creator_group_size must be >= 1, got {creator_group_size}")
    layout, ratings_path = ratings_file(Path(path))
    files = LAYOUTS[layout][1](ratings_path)
    ratings = files.ratings
    src = files.ratings_source

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
    if files.movies is not None:
        n_dup = files.movies.height - files.movies["item_id"].n_unique()
        if n_dup:
            raise LogValidationError(str(files.movies_source), "item_id", n_dup, "duplicated item ids")
        n_items_file = files.movies.height
        genres = sorted(set(files.movies["genres"].explode().drop_nulls().to_list()))
        items = items.join(files.movies, on="item_id", how="left")
    else:
        items = items.with_columns(year=pl.lit(None, pl.Int64), genres=pl.lit(None, pl.List(pl.String)))
    items = movielens_creators(items, genres, creator_group_size)
    items = items.with_columns(category=pl.col("genre_rank").clip(lower_bound=0))
    items = items.with_columns(_content_features(items, genres) if genres else [])
    items_tbl = validate_items(items.to_arrow(), files.movies_source or src)

    users_tbl = None
    if files.users is not None:
        users_tbl = validate_users(encode_attributes(files.users, "user_id").to_arrow(), str(files.users_source))

    meta = {
        "layout": layout,
        "ratings_path": src,
        "n_ratings": ratings.height,
        "like_min_rating": LIKE_MIN_RATING,
        "creator_group_size": creator_group_size,
        "genres": genres,
        "items_in_item_file": n_items_file,
    }
    if layout == "recbole":
        meta["inter_path"] = src
    log = Log(
        name=f"movielens:{ratings_path.parent.name}",
        events=events_tbl,
        items=items_tbl,
        users=users_tbl,
        meta=meta,
    )
    return validate_log(log)


def ratings_file(path: Path) -> tuple[str, Path]:
    """(layout, ratings file) of a MovieLens dataset given as its directory or its ratings file."""
    if path.is_file():
        for layout, (pattern, _) in LAYOUTS.items():
            if path.match(pattern):
                return layout, path
        raise ValueError(f"{path}: not a MovieLens ratings file (expected one of {[p for p, _ in LAYOUTS.values()]})")
    if path.is_dir():
        for layout, (pattern, _) in LAYOUTS.items():
            found = sorted(path.glob(pattern))
            if len(found) == 1:
                return layout, found[0]
            if found:
                raise ValueError(f"{path}: expected exactly one {pattern} file, found {[p.name for p in found]}")
    raise ValueError(
        f"{path}: not a MovieLens directory or ratings file: expected a RecBole *.inter, or GroupLens's "
        "ratings.csv (+ movies.csv), u.data (+ u.item, u.user) or ratings.dat (+ movies.dat, users.dat)"
    )


def is_movielens(path: Path) -> bool:
    """Whether ``path`` is a MovieLens directory or ratings file in one of :data:`LAYOUTS` (a ``ratings.csv``
    only with GroupLens's header ``userId,movieId,rating,timestamp``)."""
    try:
        layout, file = ratings_file(path)
    except ValueError:
        return False
    if layout != "grouplens-csv":
        return True
    with open(file, encoding="utf-8", errors="replace") as f:
        return f.readline().strip().replace('"', "") == "userId,movieId,rating,timestamp"


RATING_FIELDS: tuple[str, ...] = ("user_id", "item_id", "rating", "timestamp")
"""Field names given to the ratings files without a header (``u.data``, ``ratings.dat``)."""


def _ratings(df: pl.DataFrame, source: str, user: str, item: str, rating: str, ts: str) -> pl.DataFrame:
    """``user_id, item_id, rating, ts`` from a ratings file's fields (errors name the file's field names)."""
    return pl.DataFrame(
        [
            _int_tokens(_field(df, user, source), source, user).alias("user_id"),
            _int_tokens(_field(df, item, source), source, item).alias("item_id"),
            _numbers(_field(df, rating, source), source, rating).alias("rating"),
            _numbers(_field(df, ts, source), source, ts).floor().cast(pl.Int64).alias("ts"),
        ]
    )


def _movies(item_id: pl.Series, year: pl.Series, genres: pl.Series) -> pl.DataFrame:
    """``item_id``, ``year`` (four digits, else null) and ``genres`` (list of str)."""
    year = year.str.strip_chars().str.extract(r"(\d{4})$").cast(pl.Int64)
    return pl.DataFrame([item_id, year.alias("year"), genres.alias("genres")])


def _read_recbole(inter_path: Path) -> MovieLensFiles:
    """RecBole atomic files: ``<name>.inter`` with ``<name>.item`` and ``<name>.user`` next to it."""
    stem = inter_path.with_suffix("")
    item_path, user_path = stem.with_suffix(".item"), stem.with_suffix(".user")
    src = str(inter_path)
    inter, _ = _read_atomic(inter_path)
    ratings = _ratings(inter, src, "user_id", "item_id", "rating", "timestamp")
    movies = _item_meta(item_path) if item_path.is_file() else None
    users = None
    if user_path.is_file():
        users_raw, types = _read_atomic(user_path)
        uid = _int_tokens(_field(users_raw, "user_id", str(user_path)), str(user_path), "user_id")
        attrs = users_raw.select([c for c in users_raw.columns if c != "user_id" and types[c] != "token_seq"])
        users = attrs.with_columns(uid).select("user_id", *attrs.columns)
    return MovieLensFiles("recbole", ratings, src, movies, str(item_path) if movies is not None else None,
                          users, str(user_path) if users is not None else None)


def _read_grouplens_csv(ratings_path: Path) -> MovieLensFiles:
    """GroupLens csv releases (ml-latest-small, ml-latest, ml-20m, ml-25m, ml-32m): ``ratings.csv``
    (``userId,movieId,rating,timestamp``) and ``movies.csv`` (``movieId,title,genres``: genres
    ``|``-separated, the year in the title's last parentheses); no user file."""
    src = str(ratings_path)
    ratings = _ratings(read_csv_text(ratings_path), src, "userId", "movieId", "rating", "timestamp")
    movies_path = ratings_path.with_name("movies.csv")
    movies = None
    if movies_path.is_file():
        msrc = str(movies_path)
        raw = read_csv_text(movies_path)
        genres = _field(raw, "genres", msrc).str.split("|").list.eval(pl.element().filter(pl.element() != NO_GENRE))
        title_year = _field(raw, "title", msrc).str.extract(_TITLE_YEAR)
        movies = _movies(_int_tokens(_field(raw, "movieId", msrc), msrc, "item_id"), title_year.fill_null(""), genres)
    return MovieLensFiles("grouplens-csv", ratings, src, movies, str(movies_path) if movies is not None else None)


def _read_grouplens_100k(data_path: Path) -> MovieLensFiles:
    """ml-100k as GroupLens ships it: ``u.data`` (tab: user, item, rating, timestamp), ``u.item`` (``|``,
    Latin-1: id, title, release date, video release date, URL, 19 genre flags), ``u.genre`` (the flags'
    names) and ``u.user`` (``|``: id, age, gender, occupation, zip code)."""
    src = str(data_path)
    ratings = _ratings(read_text_table(data_path, "\t", RATING_FIELDS), src, *RATING_FIELDS)
    genre_path = data_path.with_name("u.genre")
    names = ML_100K_GENRES
    if genre_path.is_file():
        names = tuple(read_text_table(genre_path, "|", ("genre", "index"), encoding="latin-1")["genre"].to_list())
    item_path = data_path.with_name("u.item")
    movies = None
    if item_path.is_file():
        isrc = str(item_path)
        fields = ("item_id", "title", "release_date", "video_release_date", "url", *(f"g{i}" for i in range(len(names))))
        raw = read_text_table(item_path, "|", fields, encoding="latin-1")
        flags = pl.concat_list([pl.when(pl.col(f"g{i}") == "1").then(pl.lit(g)) for i, g in enumerate(names)])
        genres = raw.select(flags.list.drop_nulls().alias("genres"))["genres"]
        movies = _movies(_int_tokens(raw["item_id"], isrc, "item_id"), raw["release_date"].fill_null(""), genres)
    user_path = data_path.with_name("u.user")
    users = _read_users(user_path, "|", ("user_id", "age", "gender", "occupation", "zip_code"))
    return MovieLensFiles("grouplens-100k", ratings, src, movies, str(item_path) if movies is not None else None,
                          users, str(user_path) if users is not None else None)


def _read_users(path: Path, sep: str, fields: tuple[str, ...]) -> pl.DataFrame | None:
    """A GroupLens users file (Latin-1, ``sep``-separated ``fields``, integer ``user_id``), None when absent."""
    if not path.is_file():
        return None
    raw = read_text_table(path, sep, fields, encoding="latin-1")
    return raw.with_columns(_int_tokens(raw["user_id"], str(path), "user_id"))


def _read_grouplens_dat(ratings_path: Path) -> MovieLensFiles:
    """ml-1m / ml-10m: ``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``), ``movies.dat``
    (``MovieID::Title::Genres``, Latin-1, genres ``|``-separated) and ``users.dat``
    (``UserID::Gender::Age::Occupation::Zip-code``, ml-1m only)."""
    src = str(ratings_path)
    ratings = _ratings(read_text_table(ratings_path, "::", RATING_FIELDS, encoding="latin-1"), src, *RATING_FIELDS)
    movies_path = ratings_path.with_name("movies.dat")
    movies = None
    if movies_path.is_file():
        msrc = str(movies_path)
        raw = read_text_table(movies_path, "::", ("item_id", "title", "genres"), encoding="latin-1")
        genres = raw["genres"].str.split("|").list.eval(pl.element().filter(pl.element() != NO_GENRE))
        movies = _movies(_int_tokens(raw["item_id"], msrc, "item_id"),
                         raw["title"].str.extract(_TITLE_YEAR).fill_null(""), genres)
    user_path = ratings_path.with_name("users.dat")
    users = _read_users(user_path, "::", ("user_id", "gender", "age", "occupation", "zip_code"))
    return MovieLensFiles("grouplens-dat", ratings, src, movies, str(movies_path) if movies is not None else None,
                          users, str(user_path) if users is not None else None)


LAYOUTS: dict[str, tuple[str, Callable[[Path], MovieLensFiles]]] = {
    "recbole": ("*.inter", _read_recbole),
    "grouplens-csv": ("ratings.csv", _read_grouplens_csv),
    "grouplens-100k": ("u.data", _read_grouplens_100k),
    "grouplens-dat": ("ratings.dat", _read_grouplens_dat),
}
"""MovieLens layout -> (name pattern of its ratings file, reader); a directory's layout is the first whose
ratings file it holds. The only place that knows these file layouts."""


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
    return pl.DataFrame([item_id, year.alias("year"), genres.alias("genres")])


def _read_atomic(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    """A RecBole atomic file as all-string columns named without their ``:type`` suffix, and {name: type}."""
    df = read_text_table(path, "\t")
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

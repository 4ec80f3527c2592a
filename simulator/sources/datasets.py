"""Public datasets by name: where to download them, their checksums, and the cached copy a log spec resolves to."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

CACHE_ENV = "COLDSIM_DATA_DIR"
"""Environment variable that overrides the default cache directory."""

DEFAULT_CACHE = Path("~/.cache/coldsim/datasets")
"""Where datasets are cached unless ``--cache-dir`` or :data:`CACHE_ENV` says otherwise."""

MARKER = ".coldsim-dataset.json"
"""Written last into a dataset's cache directory: its presence means the copy is complete."""

CHUNK = 1 << 20


class DatasetError(ValueError):
    """A dataset cannot be found, downloaded, verified or unpacked; the message says what to do."""


class ChecksumMismatch(DatasetError):
    """The downloaded bytes are not the ones the registry (or ``--sha256``) expects."""


class DatasetNotCached(DatasetError):
    """A log spec names a dataset that has not been downloaded yet."""


@dataclass(frozen=True)
class DatasetLog:
    """A log a dataset provides: the spec ``kind`` it loads as, the ``path`` of its file or directory
    inside the dataset's cache directory, and preset spec ``options``."""

    kind: str
    path: str
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dataset:
    """A public dataset: its official ``url``, what is known to check the download (``sha256``,
    ``md5``, ``size`` in bytes; ``None`` when unknown) and where that knowledge comes from, and the
    ``logs`` it provides (the first is the default when a spec names the dataset without a kind)."""

    name: str
    url: str
    logs: tuple[DatasetLog, ...]
    description: str
    license: str
    homepage: str
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    checksum_source: str = ""

    @property
    def file_name(self) -> str:
        return PurePosixPath(urlparse(self.url).path).name or self.name

    @property
    def archive(self) -> str:
        """``zip``, ``tar`` (``.tar.gz``, ``.tgz``, ``.tar``) or ``file`` (kept as downloaded)."""
        name = self.file_name.lower()
        if name.endswith(".zip"):
            return "zip"
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            return "tar"
        return "file"

    def log(self, kind: str | None = None) -> DatasetLog:
        """The dataset's log of ``kind`` (``None``: the default one)."""
        if kind is None:
            return self.logs[0]
        for entry in self.logs:
            if entry.kind == kind:
                return entry
        raise DatasetError(f"dataset {self.name!r} has no {kind} log; it provides {[e.kind for e in self.logs]}")


_TFDS = "tensorflow/datasets url_checksums/movielens.txt (not recomputed here)"
_GROUPLENS_MD5 = "GroupLens's published .md5 files"

DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            name="ml-100k",
            url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
            logs=(DatasetLog("movielens", "ml-100k"),),
            description="MovieLens 100K: 100,000 ratings by 943 users on 1,682 movies, 1997-09 to 1998-04",
            license="GroupLens terms: research use, no redistribution",
            homepage="https://grouplens.org/datasets/movielens/100k/",
            sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
            md5="0e33842e24a9c977be4e0107933c0723",
            size=4_924_029,
            checksum_source=f"sha256/size: {_TFDS}; md5: {_GROUPLENS_MD5}",
        ),
        Dataset(
            name="ml-latest-small",
            url="https://files.grouplens.org/datasets/movielens/ml-latest-small.zip",
            logs=(DatasetLog("movielens", "ml-latest-small"),),
            description="MovieLens latest-small: ~100,000 half-star ratings by 610 users on 9,742 movies, 1996 to 2018",
            license="GroupLens terms: research use, no redistribution",
            homepage="https://grouplens.org/datasets/movielens/latest/",
            sha256="696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436",
            size=978_202,
            checksum_source=f"sha256/size: {_TFDS}; GroupLens may regenerate 'latest' files",
        ),
        Dataset(
            name="ml-1m",
            url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
            logs=(DatasetLog("movielens", "ml-1m"),),
            description="MovieLens 1M: 1,000,209 ratings by 6,040 users on 3,706 movies, 2000 to 2003",
            license="GroupLens terms: research use, no redistribution",
            homepage="https://grouplens.org/datasets/movielens/1m/",
            sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
            md5="c4d9eecfca2ab87c1945afe126590906",
            size=5_917_549,
            checksum_source=f"sha256/size: {_TFDS}; md5: {_GROUPLENS_MD5}",
        ),
        Dataset(
            name="amazon-musical-instruments",
            url="https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/categoryFilesSmall/Musical_Instruments_5.json.gz",
            logs=(DatasetLog("tabular", "Musical_Instruments_5.json.gz", {"layout": "amazon-json"}),),
            description="Amazon reviews 2018 (Ni, Li, McAuley), Musical Instruments 5-core: 231,392 reviews, "
                        "every user and item with >= 5",
            license="McAuley lab: for research use",
            homepage="https://cseweb.ucsd.edu/~jmcauley/datasets/amazon_v2/",
            checksum_source="none published",
        ),
        Dataset(
            name="kuairand-pure",
            url="https://zenodo.org/records/10439422/files/KuaiRand-Pure.tar.gz",
            logs=(
                DatasetLog("kuairand", "KuaiRand-Pure/data"),
                DatasetLog("tabular", "KuaiRand-Pure/data/log_standard_4_08_to_4_21_pure.csv", {"layout": "kuairand-log"}),
            ),
            description="KuaiRand-Pure (Kuaishou): 27,285 users, 7,583 videos with their authors, interaction logs "
                        "2022-04-08 to 2022-05-08",
            license="CC BY-SA 4.0",
            homepage="https://kuairand.com/",
            checksum_source="none published",
        ),
    )
}
"""Dataset name -> :class:`Dataset`; the only place that knows these names, URLs and checksums."""


@dataclass(frozen=True)
class Fetched:
    """A dataset in the cache: its ``directory``, the ``sha256`` of the download, which checksums were
    ``verified`` (empty: none was known) and whether it was ``already_cached``."""

    name: str
    directory: Path
    sha256: str
    size: int
    verified: tuple[str, ...]
    already_cached: bool


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir`` if given, else ``$COLDSIM_DATA_DIR``, else ``~/.cache/coldsim/datasets``."""
    chosen = cache_dir or os.environ.get(CACHE_ENV) or DEFAULT_CACHE
    return Path(chosen).expanduser()


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {sorted(DATASETS)} (`simulate data list`)") from None


def cached(name: str, cache_dir: str | Path | None = None) -> Fetched | None:
    """The cached copy of a dataset, or ``None`` if it has not been (completely) downloaded."""
    directory = cache_root(cache_dir) / name
    marker = directory / MARKER
    if not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    return Fetched(name, directory, info["sha256"], info["size"], tuple(info["verified"]), True)


def resolve_log(name: str, kind: str | None = None, cache_dir: str | Path | None = None) -> tuple[str, Path, dict[str, str]]:
    """(kind, path, preset options) of the cached log of dataset ``name``; :class:`DatasetNotCached`
    (telling the command to run) when it is not downloaded."""
    dataset = get_dataset(name)
    entry = dataset.log(kind)
    have = cached(name, cache_dir)
    if have is None:
        raise DatasetNotCached(
            f"dataset {name!r} is not downloaded (looked in {cache_root(cache_dir) / name}): run "
            f"`simulate data get {name}` first (the cache is ${CACHE_ENV}, else {DEFAULT_CACHE})"
        )
    path = have.directory / entry.path
    if not path.exists():
        raise DatasetError(f"dataset {name!r}: {path} is missing from the cache; run `simulate data get {name} --force`")
    return entry.kind, path, dict(entry.options)


def fetch(
    dataset: Dataset | str,
    cache_dir: str | Path | None = None,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Fetched:
    """Download a dataset into the cache, check it and unpack it (zip and tar archives; other files are kept).

    ``url`` replaces the registry's (a mirror or a local ``file://`` copy: the registry's checksums still
    apply) and ``sha256`` replaces the expected SHA-256. Every checksum known (``sha256``, ``md5``,
    ``size``) is verified; a mismatch raises :class:`ChecksumMismatch` and leaves nothing in the cache.
    ``progress(bytes_so_far, total_or_None)`` is called while downloading. An already cached dataset is
    returned as is unless ``force``.
    """
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    root = cache_root(cache_dir)
    target = root / ds.name
    if not force and (have := cached(ds.name, root)) is not None:
        return have
    root.mkdir(parents=True, exist_ok=True)
    work = root / f".{ds.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        source = url or ds.url
        download = work / ds.file_name
        digest, md5, size = _download(source, download, progress)
        verified = _verify(ds, source, digest, md5, size, sha256)
        unpacked = work / "content"
        _unpack(ds.archive, download, unpacked)
        (unpacked / MARKER).write_text(json.dumps(
            {"name": ds.name, "url": source, "sha256": digest, "size": size, "verified": list(verified),
             "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
        if target.exists():
            shutil.rmtree(target)
        unpacked.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Fetched(ds.name, target, digest, size, verified, False)


def _download(url: str, dest: Path, progress: Callable[[int, int | None], None] | None) -> tuple[str, str, int]:
    """Stream ``url`` into ``dest``; returns (sha256, md5, size)."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while chunk := response.read(CHUNK):
                out.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
                size += len(chunk)
                if progress:
                    progress(size, total)
    except OSError as exc:  # URLError, HTTPError, timeouts, a missing file:// path
        raise DatasetError(f"cannot download {url}: {exc}") from None
    return sha.hexdigest(), md5.hexdigest(), size


def _verify(ds: Dataset, url: str, digest: str, md5: str, size: int, sha256: str | None) -> tuple[str, ...]:
    """Check every known checksum; returns the names of those checked."""
    if sha256 is not None:  # the caller vouches for these bytes: only their SHA-256 is checked
        checks = [("sha256", sha256.lower(), digest)]
    else:
        size_known = None if ds.size is None else str(ds.size)
        checks = [("size", size_known, str(size)), ("sha256", ds.sha256, digest), ("md5", ds.md5, md5)]
    done = []
    for what, want, got in checks:
        if want is None:
            continue
        if want != got:
            raise ChecksumMismatch(
                f"{ds.name}: {what} mismatch for {url}: expected {want}, got {got} ({size:,} bytes); the download "
                f"was deleted. If the publisher changed the file, check it and pass --sha256 {digest} to accept it"
            )
        done.append(what)
    return tuple(done)


def _unpack(archive: str, download: Path, dest: Path) -> None:
    """Unpack a zip or tar archive into ``dest`` (members escaping it are refused); move a plain file there."""
    dest.mkdir()
    try:
        if archive == "zip":
            with zipfile.ZipFile(download) as zf:
                for member in zf.namelist():
                    _inside(dest, member)
                zf.extractall(dest)
        elif archive == "tar":
            with tarfile.open(download) as tf:
                tf.extractall(dest, filter="data")
        else:
            download.rename(dest / download.name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"cannot unpack {download.name}: {exc}") from None


def _inside(dest: Path, member: str) -> None:
    target = (dest / member).resolve()
    if not target.is_relative_to(dest.resolve()):
        raise DatasetError(f"archive member {member!r} would be written outside {dest}")

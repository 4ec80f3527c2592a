"""Where a run's files live: a local directory, or any filesystem pyarrow reaches by URI.

``--storage`` (or ``--run-root``) names the root: a local path (the default, ``coldsim_runs``) or a URI such as
``s3://bucket/coldsim``, ``gs://bucket/coldsim``, ``hdfs://namenode/coldsim`` or ``file:///shared/coldsim``
(:func:`pyarrow.fs.FileSystem.from_uri`). Everything a run writes goes through a :class:`Location` under it: the
log partitions Ray Data reads, each day's exposures, the checkpoints, and Ray Train's storage, so a run on a
multi-node cluster needs no shared disk once the root is an object store every node can reach.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class StorageError(OSError):
    """A run's file could not be written: the path, why, and how much space it needed."""


_SPACE_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
                 errno.EACCES: "permission denied", errno.EROFS: "read-only filesystem", errno.EPERM: "not permitted"}


@contextmanager
def _writing(location: "Location", nbytes: int, temporary: "Location | None" = None) -> Iterator[None]:
    """Turn a failed write into a :class:`StorageError` naming the path, the cause, the bytes needed and (locally)
    the bytes free, after removing the partial temporary file: the last complete file stays the latest."""
    try:
        yield
    except OSError as exc:
        if temporary is not None:
            try:
                temporary.delete()
            except OSError:
                pass
        cause = _SPACE_ERRORS.get(exc.errno, exc.strerror or str(exc))
        free = ""
        if location.local:
            try:
                free = f", {shutil.disk_usage(os.path.dirname(location.path) or '/').free:,} bytes free there"
            except OSError:
                pass
        raise StorageError(exc.errno, f"cannot write {location.uri}: {cause} ({nbytes:,} bytes needed{free}); "
                           "free space or choose another --storage, then resume the run (--resume)") from exc


@dataclass(frozen=True)
class Location:
    """A file or directory on a pyarrow filesystem: ``fs`` and the ``path`` on it; ``uri`` names it for other
    tools (Ray Train's ``storage_path``, MLflow tags, messages)."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @classmethod
    def of(cls, where: "str | Path | Location") -> "Location":
        """A local path (made absolute) or a URI with a scheme (``s3://...``, ``file:///...``)."""
        if isinstance(where, Location):
            return where
        text = str(where)
        if "://" in text:
            try:
                fs, path = pafs.FileSystem.from_uri(text)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
                raise ValueError(f"storage '{text}': not a filesystem pyarrow can open ({exc})") from None
            return cls(fs, path.rstrip("/") or "/", text.rstrip("/"))
        path = os.path.abspath(text)
        return cls(pafs.LocalFileSystem(), path, path)

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def __truediv__(self, name: str) -> "Location":
        return Location(self.fs, f"{self.path.rstrip('/')}/{name}", f"{self.uri.rstrip('/')}/{name}")

    def __str__(self) -> str:
        return self.uri

    def as_path(self) -> Path | str:
        """A ``Path`` for a local location, else the URI."""
        return Path(self.path) if self.local else self.uri

    # ---- directories
    def mkdir(self) -> None:
        with _writing(self, 0):
            self.fs.create_dir(self.path, recursive=True)

    def exists(self) -> bool:
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def children(self) -> list["Location"]:
        """The entries directly under this directory, by name (none when it does not exist)."""
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted((self / info.base_name for info in infos), key=lambda child: child.name)

    def delete(self) -> None:
        """Delete this file or directory tree (nothing when it does not exist)."""
        kind = self.fs.get_file_info(self.path).type
        if kind == pafs.FileType.Directory:
            self.fs.delete_dir(self.path)
        elif kind != pafs.FileType.NotFound:
            self.fs.delete_file(self.path)

    def size(self) -> int:
        """Bytes in this file or directory tree."""
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            return info.size
        infos = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True, allow_not_found=True))
        return sum(i.size for i in infos if i.type == pafs.FileType.File)

    # ---- files
    def write_bytes_atomic(self, data: bytes) -> None:
        """Write ``data`` under a temporary name and move it to this name, so a crash never leaves part of it
        under this name (locally flushed to disk before the rename; on an object store the upload completes
        before the move)."""
        temporary = Location(self.fs, self.path + ".tmp", self.uri + ".tmp")
        with _writing(self, len(data), temporary):
            if self.local:
                with open(temporary.path, "wb") as file:
                    file.write(data)
                    file.flush()
                    os.fsync(file.fileno())  # the rename must not reach the disk before the data
                os.replace(temporary.path, self.path)
                return
            with self.fs.open_output_stream(temporary.path) as stream:
                stream.write(data)
            self.fs.move(temporary.path, self.path)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as stream:
            return stream.read()

    def write_table(self, table: pa.Table) -> None:
        """``table`` as one parquet file here (parent directories made), written atomically like
        :meth:`write_bytes_atomic`: a killed run never leaves half a log partition or half a day's exposures."""
        buffer = io.BytesIO()
        pq.write_table(table, buffer)
        with _writing(self, buffer.tell()):
            self.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
        self.write_bytes_atomic(buffer.getvalue())

    def read_table(self, schema: pa.Schema | None = None) -> pa.Table:
        """The parquet file or directory of parquet files here."""
        return pq.read_table(self.path, schema=schema, filesystem=self.fs)

"""Where an experiment's files live: a local folder or a filesystem URI, read and written whole.

Writes are atomic, so a reader during a search always sees whole files: locally through
:func:`tacfn.files.write_atomic` (a temp file in the same folder, fsync, ``os.replace``);
on an object store the file is built in memory and sent as one object, which becomes
visible only once complete. A failed write raises :class:`~tacfn.errors.DataError` and
leaves the previous file in place. A reader must read each file through one open handle
(one GET on an object store): :meth:`Location.read_table` and :func:`read_table` do, as does
``pl.read_parquet`` given an open file, whereas ``pq.read_table(path)`` and
``pl.read_parquet(path)`` open the path more than once and can pair one version's footer
with the next version's pages.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..errors import ConfigError, DataError
from ..files import write_atomic

def is_uri(location: str | Path) -> bool:
    """Whether ``location`` is a filesystem URI (``s3://bucket/prefix``) rather than a local path."""
    return isinstance(location, str) and "://" in location


def absolute_root(root: str | Path) -> Path | str:
    """An experiment folder as the runners hand it to Ray: an absolute local Path, or the URI."""
    location = Location(root).root
    return location.resolve() if isinstance(location, Path) else location


class Location:
    """An experiment folder's files: a local folder, or a folder under a URI that
    ``pyarrow.fs.FileSystem.from_uri`` opens (``s3://``, ``gs://``, ``abfs://``, ...).

    Object stores have no rename. A file is built in memory and sent as one object: on S3 a
    single PUT (a multipart upload for a file above pyarrow's part size), and either way
    readers see the new object only once it is whole. A file is read whole with one GET
    (ranged by the size just read: a read that raced a replacement fails to parse and is
    tried once more). Credentials, region and endpoint come from the environment
    (``AWS_ACCESS_KEY_ID``, ``AWS_REGION``, ``AWS_ENDPOINT_URL_S3``, ...), as for Ray's own
    storage; the URI itself takes no ``?options``.
    """

    def __init__(self, root: str | Path) -> None:
        if is_uri(root) and "?" in str(root):
            raise ConfigError(f"{root}: options in the URI are not supported; set them in the environment (AWS_REGION, ...)")
        self.root: Path | str = str(root).rstrip("/") if is_uri(root) else Path(root)
        self._remote: tuple[pafs.FileSystem, str] | None = None  # opened on first use

    @property
    def name(self) -> str:
        """The folder's last component."""
        return self.root.name if isinstance(self.root, Path) else self.root.rpartition("/")[2]

    def child(self, name: str) -> Path | str:
        """The path or URI of the file ``name`` in the folder (for messages and for Ray)."""
        return self.root / name if isinstance(self.root, Path) else f"{self.root}/{name}"

    def _fs(self) -> tuple[pafs.FileSystem, str]:
        if self._remote is None:
            uri = str(self.root)
            if uri.startswith("s3://"):  # open on the first write: a small file is then one PUT, not a multipart upload
                uri += "?allow_delayed_open=true"
            try:
                self._remote = pafs.FileSystem.from_uri(uri)
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"cannot open {self.root} ({exc})") from exc
        return self._remote

    def exists(self, name: str) -> bool:
        """Whether the file ``name`` exists; something else under that name is a DataError."""
        if isinstance(self.root, Path):
            is_file, present = (self.root / name).is_file(), (self.root / name).exists()
        else:
            fs, path = self._fs()
            try:
                kind = fs.get_file_info(f"{path}/{name}").type
            except (OSError, pa.ArrowException) as exc:
                raise DataError(f"cannot read {self.child(name)} ({exc})") from exc
            is_file, present = kind == pafs.FileType.File, kind != pafs.FileType.NotFound
        if present and not is_file:
            raise DataError(f"{self.child(name)}: not a file")
        return is_file

    def stamp(self, name: str) -> tuple[int, int]:
        """``(modification time in ns, size)`` of the file ``name``, ``(0, 0)`` when it is missing:
        changes whenever the file is replaced (object stores keep whole-second times)."""
        try:
            if isinstance(self.root, Path):
                stat = (self.root / name).stat()
                return stat.st_mtime_ns, stat.st_size
            fs, path = self._fs()
            info = fs.get_file_info(f"{path}/{name}")
        except (OSError, pa.ArrowException, DataError):
            return 0, 0
        return (info.mtime_ns or 0, info.size or 0) if info.type == pafs.FileType.File else (0, 0)

    def read_bytes(self, name: str) -> bytes:
        """The whole file ``name``, read at once; DataError naming it when it cannot be read."""
        try:
            if isinstance(self.root, Path):
                return (self.root / name).read_bytes()
            fs, path = self._fs()
            with fs.open_input_stream(f"{path}/{name}") as f:
                return f.readall()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {self.child(name)} ({exc})") from exc

    def read_table(self, name: str) -> pa.Table:
        """The whole Parquet file ``name``; a missing, truncated or corrupt file raises DataError naming it."""
        where = self.child(name)
        if not self.exists(name):
            raise DataError(f"{where} does not exist")
        try:
            if isinstance(self.root, Path):
                # One open file for footer and pages: pq.read_table(path) opens the path twice, and a
                # writer's os.replace in between pairs the old footer with the new file's pages.
                with pa.OSFile(str(where)) as f:
                    return pq.ParquetFile(f).read()
            try:
                return pq.ParquetFile(pa.BufferReader(self.read_bytes(name))).read()
            except pa.ArrowException:  # the object was replaced between its size and its GET
                return pq.ParquetFile(pa.BufferReader(self.read_bytes(name))).read()
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{where}: not a readable Parquet file ({exc})") from exc

    def makedirs(self, sub: str = "") -> None:
        """Create the folder, or its subfolder ``sub``, with the parents; DataError when that is not possible."""
        try:
            if isinstance(self.root, Path):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            else:
                fs, path = self._fs()
                fs.create_dir(f"{path}/{sub}".rstrip("/"), recursive=True)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot create the experiment folder {self.child(sub) if sub else self.root} ({exc})") from exc

    def list(self, sub: str) -> list[str]:
        """The names of the files in the subfolder ``sub`` (none when it does not exist), sorted."""
        try:
            if isinstance(self.root, Path):
                folder = self.root / sub
                return sorted(entry.name for entry in os.scandir(folder) if entry.is_file()) if folder.is_dir() else []
            fs, path = self._fs()
            found = fs.get_file_info(pafs.FileSelector(f"{path}/{sub}", allow_not_found=True))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot list {self.child(sub)} ({exc})") from exc
        return sorted(info.base_name for info in found if info.type == pafs.FileType.File)

    def delete(self, name: str) -> None:
        """Remove the file ``name`` if it is there; DataError when it cannot be removed."""
        try:
            if isinstance(self.root, Path):
                (self.root / name).unlink(missing_ok=True)
            else:
                fs, path = self._fs()
                with contextlib.suppress(FileNotFoundError):
                    fs.delete_file(f"{path}/{name}")
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot remove {self.child(name)} ({exc})") from exc

    def write(self, name: str, write: Callable[[BinaryIO], Any]) -> None:
        """Replace the file ``name`` atomically with what ``write`` writes to the file object it gets;
        on failure DataError, and the previous version stays."""
        try:
            if isinstance(self.root, Path):
                write_atomic(self.root / name, write)
                return
            # Build the whole file first, so a failing writer never reaches the store, then
            # send it in one upload: the new object appears only once it is complete.
            buffer = pa.BufferOutputStream()
            write(buffer)
            data = buffer.getvalue()
            fs, path = self._fs()
            with fs.open_output_stream(f"{path}/{name}") as f:
                f.write(data)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"could not write {self.child(name)} ({exc}); nothing already written was changed") from exc


def read_table(path: str | Path) -> pa.Table:
    """Read a whole Parquet file (a local path or a URI); a missing, truncated or corrupt file
    raises DataError naming it."""
    if is_uri(path):
        folder, _, name = str(path).rstrip("/").rpartition("/")
        return Location(folder).read_table(name)
    path = Path(path)
    return Location(path.parent).read_table(path.name)

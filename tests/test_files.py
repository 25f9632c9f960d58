"""The one atomic file writer: whole files or the old ones, synced to disk, no temp files left."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from tacfn.files import commit, temp_path, write_atomic, write_bytes_atomic, write_json_atomic


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through Linux's /proc")
def test_write_atomic_replaces_the_file_and_syncs_file_and_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    assert write_atomic(path, lambda f: f.write(b"new")) == path
    assert path.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]
    assert synced == [str(temp_path(path)), str(tmp_path)], "the temp file before the rename, the folder after"


def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    write_json_atomic(path, {"v": 1})

    def fail(f) -> None:
        f.write(b"{half")
        raise RuntimeError("writer broke")

    with pytest.raises(RuntimeError, match="writer broke"):
        write_atomic(path, fail)
    assert json.loads(path.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_rename_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.bin"
    write_bytes_atomic(path, b"old")

    def disk_full(src: str, dst: str) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)
    with pytest.raises(OSError, match="No space left on device"):
        write_bytes_atomic(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_json_that_cannot_be_written_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        write_json_atomic(tmp_path / "a.json", {"x": float("nan")}, allow_nan=False)
    assert list(tmp_path.iterdir()) == []


def test_the_temp_file_is_hidden_beside_the_target_and_names_the_process(tmp_path: Path) -> None:
    assert temp_path(tmp_path / "trials.parquet") == tmp_path / f".trials.parquet.{os.getpid()}.tmp"


def test_commit_moves_a_finished_temp_file_into_place(tmp_path: Path) -> None:
    tmp, path = tmp_path / ".staged", tmp_path / "final"
    path.write_text("old")
    tmp.write_text("new")
    commit(tmp, path)
    assert path.read_text() == "new" and not tmp.exists()


def test_a_folder_that_cannot_be_synced_is_not_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def no_folders(path, flags, *args):
        if Path(path).is_dir():
            raise PermissionError(errno.EACCES, "cannot open a folder here")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_folders)
    write_bytes_atomic(tmp_path / "a.bin", b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"x"

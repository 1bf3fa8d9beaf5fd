"""The filesystem kit: atomic writes, atomic folders, one file lock, JSON-safe values.

- Atomic writes: a temporary file in the same folder, fsynced, then renamed over the target. A
  reader (or a process killed mid-write) sees the old file or the new one, never half of one;
  concurrent writers of the same path each rename a complete file.
- Atomic folders (:func:`atomic_folder`, :func:`replace_folder`): a folder is built beside its
  target and renamed into place whole; an older one is renamed aside first and deleted after.
- :func:`file_lock`: an exclusive ``flock`` between processes, waiting or not.
- :func:`write_errors`: a write the filesystem refuses (disk full, file too large, read-only, quota)
  turned into the caller's one-line error, with :func:`os_error_reason` as its reason.
- :func:`jsonable`: any settings value as plain JSON values.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: locks are no-ops, renames still keep folders whole
    fcntl = None  # type: ignore[assignment]


_WHY = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "read-only file system",
        errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large"}
#: The errnos only a refused write raises: whatever was written when one comes, it is the disk's
#: state (free space, a read-only mount) that the user must change, never a bug to trace.
REFUSED_WRITE = frozenset({errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EDQUOT})


def os_error_reason(exc: OSError) -> str:
    """A short lower-case reason for ``exc`` ("permission denied", "no space left on device", ...)."""
    return _WHY.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


@contextlib.contextmanager
def write_errors(error: Callable[[str], Exception], *,
                 errnos: Collection[int] | None = REFUSED_WRITE) -> Iterator[None]:
    """Raise ``error(reason)`` (:func:`os_error_reason`) from an ``OSError`` of the block whose
    errno is in ``errnos`` (default :data:`REFUSED_WRITE`; ``None``: every ``OSError``); any other
    one is raised as it is."""
    try:
        yield
    except OSError as exc:
        if errnos is not None and exc.errno not in errnos:
            raise
        raise error(os_error_reason(exc)) from exc


def _mode_for(path: Path) -> int:
    """The permission bits the written file should have: the target's own where it exists, else
    what ``open()`` would give (0666 less the umask). ``mkstemp`` makes private (0600) files."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (parent folders are created), keeping its mode."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, _mode_for(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 4 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


_SAMPLE = 1 << 16


def content_fingerprint(path: str | os.PathLike) -> str:
    """A cheap fingerprint of a file's or a folder's contents: for each file (a folder's, by
    relative path) its size and a SHA-256 of its first, middle and last 64 KiB. A weights file
    changed in place changes it (its header, and with it the data offsets, or a sampled block);
    timestamps do not, so a copy on another machine keeps it. A changed byte elsewhere in a large
    file can go unseen: it is a key for reuse, not a checksum."""
    root = Path(path)
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root) if file != root else file.name}\0{size}\0".encode())
        with open(file, "rb") as f:
            for offset in sorted({0, max(0, size // 2 - _SAMPLE // 2), max(0, size - _SAMPLE)}):
                f.seek(offset)
                digest.update(f.read(_SAMPLE))
    return digest.hexdigest()


def replace_folder(src: str | os.PathLike, dst: str | os.PathLike, *, old: str | os.PathLike | None = None,
                   keep_existing: bool = False) -> bool:
    """Put the finished folder ``src`` in place of ``dst``; returns whether it was moved.

    An older ``dst`` is renamed aside (to ``old``, default a fresh hidden sibling), ``src`` renamed
    onto ``dst`` (the old one renamed back if that fails), then the old one deleted: a crash
    leaves the old folder or the new one whole, never a mix. ``keep_existing``: a ``dst`` that is
    already there (a concurrent writer of the same content finished first) is kept, and ``src``
    left to the caller (``False``).
    """
    src, dst = Path(src), Path(dst)
    if keep_existing:
        try:
            os.rename(src, dst)
        except OSError:
            if dst.exists():
                return False
            raise
        return True
    aside = None
    if dst.exists():
        if old is None:
            aside = Path(tempfile.mkdtemp(prefix=f".{dst.name}.old-", dir=dst.parent))
            aside.rmdir()
        else:
            aside = Path(old)
            shutil.rmtree(aside, ignore_errors=True)
        os.rename(dst, aside)
    try:
        os.rename(src, dst)
    except BaseException:
        if aside is not None:
            os.rename(aside, dst)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return True


@contextlib.contextmanager
def atomic_folder(folder: str | os.PathLike, *, stage: str | os.PathLike | None = None,
                  old: str | os.PathLike | None = None) -> Iterator[Path]:
    """Fill a fresh stage folder (yielded; default a hidden sibling of ``folder``), then put it in
    place of ``folder`` (:func:`replace_folder`, ``old`` as there): a crash never leaves half a
    folder where a later run would take it for a finished one. If the block raises, the stage is
    removed and ``folder`` left as it was."""
    folder = Path(folder)
    stage = Path(stage) if stage is not None else \
        folder.with_name(f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}")
    shutil.rmtree(stage, ignore_errors=True)
    try:
        stage.mkdir(parents=True)
        yield stage
        replace_folder(stage, folder, old=old)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


class FileLocked(Exception):
    """:func:`file_lock` did not get the lock in time: another process holds it."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"{path} is locked by another process")
        self.path = path


_LOCK_POLL_S = 0.1


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, *, timeout: float | None = None, remove: bool = False) -> Iterator[None]:
    """Hold an exclusive inter-process lock (POSIX ``flock``) on the file ``path`` (created; its folder must exist).

    ``timeout``: ``None`` waits as long as it takes, else :class:`FileLocked` after that many
    seconds (``0``: one try). ``remove``: the file is deleted on release, so a finished writer
    leaves nothing behind; a waiter that then gets the lock on the deleted file sees it and starts
    over on a fresh one. A no-op where ``fcntl`` does not exist.
    """
    path = Path(path)
    if fcntl is None:  # pragma: no cover
        yield
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if _try_flock(fd, wait=deadline is None) and _is_linked(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
        if deadline is not None and time.monotonic() >= deadline:
            raise FileLocked(path)
        if deadline is not None:
            time.sleep(_LOCK_POLL_S)
    try:
        yield
    finally:
        if remove:  # unlinked while still held (see above)
            path.unlink(missing_ok=True)
        os.close(fd)  # releases the flock


def _try_flock(fd: int, *, wait: bool) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _is_linked(fd: int, path: Path) -> bool:
    """Whether ``fd`` is still the file at ``path`` (a holder with ``remove`` unlinks it on release)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON values: mappings with string keys, lists (a set sorted, so its
    order is stable), numbers, strings, booleans and ``None``; anything else as its ``str``."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)

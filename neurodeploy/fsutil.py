"""Writing files so that a failure leaves nothing half-written.

Every output of the toolkit (graphs, ONNX / netx files, arrays, counters, checkpoints,
model cards, reports, bench folders) is written through :func:`atomic_output`: a
temporary file in the target's folder, flushed to disk and renamed over the target only
when complete. A failure (a full disk, Ctrl-C, SIGTERM, an exception) removes the
temporary file and leaves any previous version of the target as it was. A full disk
becomes one line, ``no space left on ...``.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from .errors import NeurodeployError

NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def no_space(e: BaseException) -> bool:
    """Is ``e`` (or what it was raised from) a full disk / quota?"""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in NO_SPACE:
            return True
        e = e.__cause__ or e.__context__
    return False


def write_error(path: Path, e: OSError, existed: bool) -> NeurodeployError:
    """One line for an OSError while writing ``path``."""
    kept = "; the previous file is unchanged" if existed else ""
    if no_space(e):
        return NeurodeployError(f"no space left on the device holding {path.parent}: {path} was not written{kept}")
    reason = e.strerror or type(e).__name__
    return NeurodeployError(f"cannot write {path}: {reason}{kept}")


@contextlib.contextmanager
def atomic_output(path, suffix: str = ".part"):
    """Yield a temporary path beside ``path``; on success it becomes ``path`` (with the
    usual umask-derived mode, not mkstemp's 0600), on any failure it is removed.

    OSErrors of the file system (a full disk, no permission, a folder where the file
    should go) become one NeurodeployError line naming ``path``."""
    path = Path(path)
    existed = path.exists()
    if path.is_dir():
        raise NeurodeployError(f"cannot write {path}: it is a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f".{path.name}.", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise write_error(path, e, existed) from e
    try:
        yield Path(tmp)
        _fsync(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, Exception) and no_space(e):
            raise write_error(path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), existed) from e
        if isinstance(e, OSError) and str(e.filename) in (tmp, str(path)):
            raise write_error(path, e, existed) from e
        raise


def _fsync(tmp) -> None:
    """The data on disk before the rename, so that a crash cannot leave an empty target."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path, data: bytes, suffix: str = ".part") -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_output(path, suffix=suffix) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
    return Path(path)


def write_text(path, text: str, suffix: str = ".part") -> Path:
    return write_bytes(path, text.encode("utf8"), suffix=suffix)


@contextlib.contextmanager
def memory_output(path, suffix: str = ".part"):
    """Yield a BytesIO; when the block succeeds its bytes are written to ``path`` atomically.
    For writers that misbehave on a full disk (HDF5: h5py raises from destructors, then
    the process segfaults): they write to memory, and only plain bytes meet the disk."""
    import io
    buf = io.BytesIO()
    yield buf
    write_bytes(path, buf.getvalue(), suffix=suffix)


__all__ = ["atomic_output", "memory_output", "write_bytes", "write_text", "no_space", "write_error", "NO_SPACE"]

"""Atomic file writes: a reader sees the old file or the new one, never a cut one, even after ``kill -9``.

Every file a run may resume or build on (checkpoints, exported architectures, splits, cache entries)
is written here: to a temporary file in the same folder, flushed to disk, then renamed over the
target (``os.replace`` is atomic within one file system).

Crash tests set :data:`CRASH_ENV` to make the process kill itself at a chosen point:
``write:NAME:N:BYTES`` after ``BYTES`` bytes of its ``N``-th atomic write of a file named ``NAME``
(see :func:`crash_spec`; ``nni_covid3d.training.resume`` reads a ``batch:`` point too).
"""
from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

__all__ = ["CRASH_ENV", "atomic_write_bytes", "atomic_write_text", "remove_leftovers", "crash_spec", "kill_this_process"]

#: Environment variable naming a point where the process SIGKILLs itself (crash tests only).
CRASH_ENV = "NNI_COVID3D_CRASH_AT"
_writes: Counter[str] = Counter()


def crash_spec(kind: str) -> list[str] | None:
    """The fields after ``kind:`` of :data:`CRASH_ENV` when it names a point of that kind, else ``None``."""
    value = os.environ.get(CRASH_ENV, "")
    head, _, rest = value.partition(":")
    return rest.split(":") if head == kind and rest else None


def kill_this_process() -> None:
    """SIGKILL this process: no handler, no cleanup, no flushing (what a crash test needs)."""
    os.kill(os.getpid(), signal.SIGKILL)


def _crash_after(name: str) -> int | None:
    """Bytes after which this write of ``name`` is to crash, per :data:`CRASH_ENV`."""
    _writes[name] += 1
    spec = crash_spec("write")
    if spec is None or len(spec) != 3 or spec[0] != name or int(spec[1]) != _writes[name]:
        return None
    return int(spec[2])


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete the temporary files in ``folder`` that killed writers left behind; returns them."""
    removed = []
    for leftover in Path(folder).glob(".*.tmp"):
        pid = leftover.suffixes[-2][1:] if len(leftover.suffixes) >= 2 else ""
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
            continue  # its writer is still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        leftover.unlink(missing_ok=True)
        removed.append(leftover)
    return removed


def atomic_write_bytes(path: str | Path, data: bytes | bytearray | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file beside it, fsync, rename); returns the path."""
    path = Path(path)
    temporary = _temporary(path)
    crash_at = _crash_after(path.name)
    try:
        with open(temporary, "wb") as handle:
            if crash_at is not None:
                handle.write(memoryview(data)[:crash_at])
                handle.flush()
                kill_this_process()
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (power loss); not every file system lets a folder be opened
        folder = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return path
    try:
        os.fsync(folder)
    except OSError:
        pass
    finally:
        os.close(folder)
    return path


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))

"""Atomic file writes: write under a temporary name in the same directory, then rename; and
the sha256 that files written this way are checked against when read back."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The temporary name keeps the final suffix (Keras and h5py choose formats by extension).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike, block: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def json_text(obj, sort_keys: bool = True) -> str:
    """How hpctrain stores JSON: indented, one trailing newline, keys sorted unless their
    order means something (a table's rows)."""
    return json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n"


def write_json(path: str | os.PathLike, obj, sort_keys: bool = True) -> None:
    write_text(path, json_text(obj, sort_keys))


def write_jsonl(path: str | os.PathLike, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))

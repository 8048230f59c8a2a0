"""Parts of a markdown file that code renders from stored JSON, never typed by hand: a block
between two marker comments, put in place of the block that was there.

    <!-- ci-timing: begin -->
    | record | command | ... |          <- rendered
    <!-- ci-timing: end -->

    new = replace_block(readme.read_text(), "ci-timing", table)
    sys.exit(write_or_check(readme, new, check, "python3 scripts/slow_machine.py render"))
"""

from __future__ import annotations

import sys
from pathlib import Path

from hpctrain.atomic import write_text


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def replace_block(text: str, name: str, block: str) -> str:
    """`text` with its `name` block's content replaced by `block` (markers kept)."""
    begin, end = markers(name)
    if begin not in text or end not in text or text.index(end) < text.index(begin):
        raise ValueError(f"no {begin} ... {end} block")
    return (text[:text.index(begin)] + "\n".join([begin, block.strip("\n"), end]) +
            text[text.index(end) + len(end):])


def write_or_check(path: Path, text: str, check: bool, remedy: str) -> int:
    """Write `text` to `path` if it differs; with `check`, write nothing and return 1 (saying
    how to render it) when the committed file differs."""
    same = path.is_file() and path.read_text() == text
    if check:
        if not same:
            print(f"{path} differs from what its JSON renders: {remedy}", file=sys.stderr)
        return 0 if same else 1
    if not same:
        write_text(path, text)
    return 0

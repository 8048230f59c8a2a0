#!/usr/bin/env python3
"""What `tensorboard --logdir` shows for a run or a study, as PNG screenshots taken by
headless Chromium (Debian: `apt-get install chromium`), to look at and to commit.

    .venv/bin/python scripts/tensorboard_screenshots.py results/fmnist_cnn/<run-id> \\
        --out results/tensorboard/run
    # -> results/tensorboard/run-scalars-1.png, run-scalars-2.png, run-images.png

Each view is a dashboard and a tag filter (a regular expression): TensorBoard then shows
every matching tag expanded, up to 12 charts a page, so the scalars take two views.

TensorBoard (the package the venv already has) serves the log directory on a free loopback
port for as long as the screenshots take; Chromium renders each dashboard with a virtual
time budget so the charts have loaded their data.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

BIN = Path(sys.executable).parent
VIEWS = ("scalars:^(train|test|learning_rate|images_per_s|epoch_s)",
         "scalars:^(step_time_ms|time_to_accuracy_s)/", "images:.")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"tensorboard_screenshots: TensorBoard did not answer at {url}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("logdir", type=Path)
    p.add_argument("--out", required=True, help="path prefix of the PNG files")
    p.add_argument("--view", action="append", help="DASHBOARD:TAG_REGEX (repeatable; "
                   f"default: {' '.join(VIEWS)})")
    p.add_argument("--size", default="1600,1100", help="window width,height in pixels")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if not chromium:
        print("tensorboard_screenshots: chromium not found (apt-get install chromium)",
              file=sys.stderr)
        return 1
    if not args.logdir.is_dir():
        print(f"tensorboard_screenshots: {args.logdir}: no such directory", file=sys.stderr)
        return 1
    port = free_port()
    board = subprocess.Popen([str(BIN / "tensorboard"), "--logdir", str(args.logdir),
                              "--host", "127.0.0.1", "--port", str(port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/data/runs")
        views = args.view or list(VIEWS)
        for view in views:
            dashboard, _, tags = view.partition(":")
            same = [v for v in views if v.partition(":")[0] == dashboard]
            name = dashboard + (f"-{same.index(view) + 1}" if len(same) > 1 else "")
            out = Path(f"{args.out}-{name}.png").resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            url = (f"{base}/?darkMode=false#{dashboard}&tagFilter={quote(tags or '.')}"
                   "&_ignoreYOutliers=false&_smoothingWeight=0")
            subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", f"--window-size={args.size}",
                            "--virtual-time-budget=30000", f"--screenshot={out}", url],
                           check=True, capture_output=True, timeout=300)
            print(f"{view}: {out}")
    finally:
        board.terminate()
        board.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())

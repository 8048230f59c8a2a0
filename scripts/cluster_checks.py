#!/usr/bin/env python3
"""What `hpctrain profile init` and `hpctrain doctor` print on the embedded cluster, healthy
and broken on purpose, kept as a record and shown in docs/clusters.md from it.

    make cluster-up && .venv/bin/python scripts/cluster_checks.py run     # ~1 min
    .venv/bin/python scripts/cluster_checks.py render    # docs/clusters.md from the record; --check

`run` runs each command as a user would, in a scratch directory (the broken profile is
written there), and stores command, exit code and output in
results/cluster_checks/transcripts.json with the commit, date and CPU. `render` puts them
between the `cluster-checks` markers of docs/clusters.md; nothing in that block is typed by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECORD = REPO / "results" / "cluster_checks" / "transcripts.json"
PAGE = REPO / "docs" / "clusters.md"  # where the block is shown
BLOCK = "cluster-checks"  # the rendered block of docs/clusters.md (hpctrain.report.rendered)
BIN = Path(sys.executable).parent

# A profile a newcomer might copy from another site: a partition this cluster lacks, more
# GPUs than its nodes have, and module lines for a machine without Lmod.
BROKEN = """\
description: copied from another site
partition: gpu
node_gpus: 4
gpus_per_node: 4
ntasks_per_node: 4
env_setup:
  - module load cuda/12.3 openmpi/4.1
"""

# (title, argv after `hpctrain`, expected exit code)
CASES = [
    ("a profile from the live cluster", ["profile", "init", "mysite", "--print", "--yes"], 0),
    ("a partition it does not have", ["profile", "init", "mysite", "--partition", "gpu",
                                      "--print", "--yes"], 2),
    ("healthy: will a job run?", ["doctor", "--config", "jobs/configs/fmnist_cnn.yaml"], 0),
    ("broken on purpose: a profile from another site",
     ["doctor", "--profile", "{tmp}/othersite.yaml", "--config",
      "jobs/configs/fmnist_cnn.yaml"], 1),
]


def run(_: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from hpctrain.atomic import write_json
    from hpctrain.machine import cpu

    records = []
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "othersite.yaml").write_text(BROKEN)
        for title, argv, expected in CASES:
            argv = [a.replace("{tmp}", tmp) for a in argv]
            res = subprocess.run([str(BIN / "hpctrain"), *argv], cwd=REPO, text=True,
                                 capture_output=True, timeout=600,
                                 env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
            output = (res.stdout + res.stderr).replace(tmp, "/tmp/x")
            print(f"$ hpctrain {shlex.join(argv)}  -> exit {res.returncode}\n{output}")
            if res.returncode != expected:
                print(f"cluster_checks: {title!r} exited {res.returncode}, expected {expected}",
                      file=sys.stderr)
                return 1
            records.append({"title": title, "command": "hpctrain " + shlex.join(argv)
                            .replace(tmp, "/tmp/x"), "exit_code": res.returncode,
                            "output": output})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                            capture_output=True).stdout.strip()
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    write_json(RECORD, {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                        "commit": commit, "cpu": cpu(), "cases": records}, sort_keys=False)
    print(f"cluster_checks: {len(records)} transcripts -> {RECORD.relative_to(REPO)}")
    return 0


def render_block(record: dict) -> str:
    lines = [f"Real output on the embedded cluster (commit {record['commit']}, "
             f"{record['date']}; [record](../results/cluster_checks/transcripts.json), "
             "`scripts/cluster_checks.py`):", ""]
    for case in record["cases"]:
        lines += [f"*{case['title']}* (exit {case['exit_code']}):", "", "```text",
                  f"$ {case['command']}", *case["output"].rstrip().splitlines(), "```", ""]
    return "\n".join(lines[:-1])


def render(args: argparse.Namespace) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from hpctrain.report.rendered import replace_block, write_or_check

    new = replace_block(PAGE.read_text(), BLOCK, render_block(json.loads(RECORD.read_text())))
    return write_or_check(PAGE, new, args.check, "scripts/cluster_checks.py render")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("run", help="run the commands on the embedded cluster, store the record")
    r = sub.add_parser("render", help="the block of docs/clusters.md from the record")
    r.add_argument("--check", action="store_true", help="exit 1 if docs/clusters.md differs")
    args = p.parse_args(argv)
    return {"run": run, "render": render}[args.action](args)


if __name__ == "__main__":
    sys.exit(main())

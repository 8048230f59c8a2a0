"""`hpctrain postmortem`: after a launcher failed, name the rank that failed and why.

The job script calls it when srun, mpirun or horovodrun exits with an error. A rank killed
by a signal cannot say so itself; its launcher can, in the job's log:

    srun:       "srun: error: node2: task 1: Killed"  (and `--label` prefixes "1: " to output)
    mpirun:     "mpirun noticed that process rank 1 with PID 123 on node node2 exited on
                 signal 9 (Killed)."  (and `--tag-output` prefixes "[1,1]<stderr>:")
    horovodrun: "Process 1 exit with status code 137." (--gloo; "[1]<stderr>:" on output)

`parse_failures` (pure) reads the log of the job's last segment; `record` writes the result
into report.json / report.md (keeping what rank 0 recorded, if it got that far).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from hpctrain.atomic import write_json, write_text

_SRUN = re.compile(r"srun: error: (?P<node>\S+): tasks? (?P<ranks>[\d,\-]+): (?P<why>.+)$")
_MPIRUN = re.compile(r"process rank (?P<rank>\d+) with PID \d+ on node (?P<node>\S+) "
                     r"exited on signal (?P<sig>\d+)(?: \((?P<name>[^)]+)\))?")
_MPIRUN_EXIT = re.compile(r"Process name: \[\[\d+,\d+\],(?P<rank>\d+)\]")
_GLOO = re.compile(r"^Process (?P<rank>\d+) exit with status code (?P<code>-?\d+)\.")
_EXIT_CODE = re.compile(r"Exit code:\s+(?P<code>\d+)")
_LABEL = (re.compile(r"^\s*(?P<rank>\d+): (?P<text>.*)$"),  # srun --label
          re.compile(r"^\[\d+,(?P<rank>\d+)\]<std(?:out|err)>:(?P<text>.*)$"),  # mpirun
          re.compile(r"^\[(?P<rank>\d+)\]<std(?:out|err)>:(?P<text>.*)$"))  # horovodrun gloo
_ERROR = re.compile(r"(Error|Exception|error:|Killed|Aborted|Segmentation fault)")
SEGMENT_START = "hpctrain: job "


def _ranks(spec: str) -> list[int]:
    out: list[int] = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def last_segment(log: str) -> list[str]:
    """The lines of the job's last run (a requeued job appends to the same log)."""
    lines = log.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(SEGMENT_START)]
    return lines[starts[-1]:] if starts else lines


def parse_failures(lines: list[str]) -> list[dict]:
    """[{rank, node, reason, detail}] for each rank the launcher reported as failed, in the
    order reported: the first is the cause, later ones were usually killed because of it
    (srun --kill-on-bad-exit: "task 0: Terminated")."""
    found: dict[int, dict] = {}
    for i, line in enumerate(lines):
        if m := _SRUN.search(line):
            for rank in _ranks(m["ranks"]):
                found.setdefault(rank, {"rank": rank, "node": m["node"],
                                        "reason": m["why"].strip()})
        elif m := _MPIRUN.search(line):
            why = f"signal {m['sig']}" + (f" ({m['name']})" if m["name"] else "")
            found.setdefault(int(m["rank"]), {"rank": int(m["rank"]), "node": m["node"],
                                              "reason": f"exited on {why}"})
        elif m := _GLOO.search(line):
            code = int(m["code"])
            why = f"exit status {code}" + (f" (signal {code - 128})" if code > 128 else "")
            found.setdefault(int(m["rank"]), {"rank": int(m["rank"]), "node": None,
                                              "reason": why})
        elif m := _MPIRUN_EXIT.search(line):
            exit_code = next((c["code"] for c in map(_EXIT_CODE.search, lines[i + 1:i + 3])
                              if c), "?")
            found.setdefault(int(m["rank"]), {"rank": int(m["rank"]), "node": None,
                                              "reason": f"exited with code {exit_code}"})
    for failure in found.values():
        failure["detail"] = last_error(lines, failure["rank"])
    return list(found.values())


def last_error(lines: list[str], rank: int) -> str | None:
    """The last error-looking line the rank itself printed (a traceback's last line)."""
    for line in reversed(lines):
        for pattern in _LABEL:
            m = pattern.match(line)
            if m and int(m["rank"]) == rank and _ERROR.search(m["text"]):
                return m["text"].strip()[:300]
    return None


def summary(failures: list[dict], exit_code: int) -> str:
    if not failures:
        return f"launcher exited with code {exit_code}; no failed rank named in the log"
    return "first failed: " + "; then ".join(
        f"rank {f['rank']}" + (f" on {f['node']}" if f["node"] else "") + f": {f['reason']}"
        + (f" ({f['detail']})" if f["detail"] else "") for f in failures)


def record(run_dir: Path, exit_code: int, log: Path | None) -> dict:
    """Add the failure to the run's report (creating a minimal one if rank 0 wrote none)."""
    text = log.read_text(errors="replace") if log and log.is_file() else ""
    failures = parse_failures(last_segment(text))
    failure = {"exit_code": exit_code, "failed_ranks": failures,
               "first_failed_rank": failures[0]["rank"] if failures else None,
               "summary": summary(failures, exit_code), "log": str(log) if log else None,
               "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    path = run_dir / "report.json"
    report = json.loads(path.read_text()) if path.is_file() else {}
    # "failed" even if rank 0 had written "completed": the launcher failed after that
    report.update(status="failed", failure=failure,
                  error=report.get("error") or failure["summary"])
    report.setdefault("run_dir", str(run_dir))
    write_json(path, report)
    md = run_dir / "report.md"
    before = md.read_text() if md.is_file() else f"# {run_dir.name}\n\n- status: **failed**\n"
    write_text(md, before.rstrip("\n") + f"\n- failure (launcher exit {exit_code}): "
               f"{failure['summary']}\n")
    return failure

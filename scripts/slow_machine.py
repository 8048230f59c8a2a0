#!/usr/bin/env python3
"""Run a command as if on a slower machine of this kind, and keep what it measured.

Machines of one kind differ by more than 6x. To know how long the suite takes on a slow one,
run it here under a CPU quota (a cgroup: v2 `cpu.max`, or v1 `cpu.cfs_quota_us`), with every
process it starts inside the same quota (the embedded cluster's daemons and the ranks they
launch included), and store the timing as JSON under results/ci/:

    # as root; the quota that makes `make demo`'s 2-rank job run at ~600 images/s:
    sudo python3 scripts/slow_machine.py run --cores 0.35 --name demo -- make demo
    # a clean clone's CI inside that quota:
    git clone . /tmp/c && cd /tmp/c && \\
      sudo python3 scripts/slow_machine.py run --cores 0.35 --name ci --out-dir \\
      /work/main/results/ci -- bash .ci/run
    # the README's Development section from the stored records:
    python3 scripts/slow_machine.py render          # --check: exit 1 if the README differs

Standard library only: it runs before the venv exists. Needs root (cgroups).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PERIOD_US = 100_000
V2, V1 = Path("/sys/fs/cgroup"), Path("/sys/fs/cgroup/cpu")
BLOCK = "ci-timing"  # the README's rendered block (hpctrain.report.rendered)
# The suite's budget on a slow machine of this kind (the demo job at ~600 images/s)
TEST_BUDGET_S, CI_BUDGET_S = 25 * 60, 35 * 60
BUDGET_DEMO_IPS, DEMO_TOLERANCE = 600, 0.10  # "~600": within 10 %
SESSION_H = 2.0  # hours: a demo this close to a CI record ran under the same host load
DATE_FORMAT = "%Y-%m-%d %H:%M UTC"

# Lines of the command's output worth keeping, by what they say.
PATTERNS = {
    "install_s": re.compile(r"^ci: install took (\d+) s$"),
    "total_s": re.compile(r"^ci: total (\d+) s$"),
    "tests": re.compile(r"^=+ (?P<summary>(?:\d+ \w+(?:, )?)+) in (?P<s>[\d.]+)s"),
    "report": re.compile(r"^report: (\S+report\.json)$"),
    "duration": re.compile(r"^(?P<s>[\d.]+)s (?P<when>call|setup|teardown)\s+(?P<test>\S+)$"),
    # tests/conftest.py's table of the CPU time each test took, all processes included
    "cpu": re.compile(r"^(?P<s>[\d.]+) cpu-s (?P<test>\S+)$"),
}


def _from_source() -> None:
    """hpctrain's own modules from src/ (the ones used here need only the standard library):
    this script runs before the venv exists."""
    if str(REPO / "src") not in sys.path:
        sys.path.insert(0, str(REPO / "src"))


def cpu_model() -> dict:
    _from_source()
    from hpctrain.machine import cpu

    return cpu()


class Quota:
    """A cgroup whose processes share `cores` CPUs' worth of time."""

    def __init__(self, cores: float, name: str, period_us: int = PERIOD_US):
        self.period_us = period_us
        self.quota_us = max(1000, round(cores * period_us))
        if "cpu" in _read(V2 / "cgroup.controllers").split():
            self.version, self.path = 2, V2 / name
            subtree = V2 / "cgroup.subtree_control"
            if "cpu" not in _read(subtree).split():
                subtree.write_text("+cpu")
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{self.quota_us} {period_us}")
        elif (V1 / "cpu.cfs_quota_us").exists():
            self.version, self.path = 1, V1 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(period_us))
            (self.path / "cpu.cfs_quota_us").write_text(str(self.quota_us))
        else:
            raise SystemExit("slow_machine: no cgroup cpu controller (v2 cpu.max or v1 "
                             "cpu.cfs_quota_us) on this machine")

    def enter(self) -> None:
        """In the child before exec: it and all it starts run under the quota."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def stats(self) -> dict:
        text = _read(self.path / "cpu.stat")
        stat = dict(line.split() for line in text.splitlines() if line.strip())
        if self.version == 2:
            return {"cpu_s": int(stat.get("usage_usec", 0)) / 1e6,
                    "throttled_s": int(stat.get("throttled_usec", 0)) / 1e6}
        usage = _read(self.path / "cpuacct.usage").strip()  # where cpuacct is co-mounted
        return {**({"cpu_s": int(usage) / 1e9} if usage.isdigit() else {}),
                "throttled_s": int(stat.get("throttled_time", 0)) / 1e9}

    def remove(self) -> list[int]:
        """Remove the group; returns the PIDs still in it (left running by the command)."""
        left = [int(p) for p in _read(self.path / "cgroup.procs").split()]
        if not left:
            self.path.rmdir()
        return left


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def write_json(path: Path, data: dict) -> None:
    """Temporary name, fsync, rename: never a half-written record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def parse_output(lines: list[str]) -> dict:
    found: dict = {"durations": [], "cpu_s": []}
    for line in lines:
        line = line.rstrip("\n")
        for key, pattern in PATTERNS.items():
            m = pattern.match(line)
            if not m:
                continue
            if key == "duration":
                found["durations"].append({"s": float(m["s"]), "when": m["when"],
                                           "test": m["test"]})
            elif key == "cpu":
                found["cpu_s"].append({"s": float(m["s"]), "test": m["test"]})
            elif key == "tests":
                counts = dict(reversed(part.split()) for part in m["summary"].split(", "))
                found["tests"] = {**{k: int(v) for k, v in counts.items()},
                                  "seconds": float(m["s"])}
            elif key == "report":
                found["report"] = m.group(1)
            else:
                found[key] = int(m.group(1))
    if "report" in found:  # a training run's own throughput (make demo)
        try:
            report = json.loads(Path(found["report"]).read_text())
            found["images_per_s"] = report["images_per_s"]["mean"]
            found["test_accuracy"] = report.get("test_accuracy")
        except (OSError, KeyError, ValueError):
            pass
    return found


def git_commit(cwd: Path) -> str | None:
    """The checkout's commit, with "+changes" when its tracked files differ from it."""
    res = subprocess.run(["git", "rev-parse", "--short=7", "HEAD"], cwd=cwd,
                         capture_output=True, text=True)
    if not res.stdout.strip():
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                           capture_output=True, text=True).stdout.strip()
    return res.stdout.strip() + ("+changes" if dirty else "")


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise SystemExit("slow_machine: run needs root (it creates a cgroup)")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise SystemExit("slow_machine: no command after --")
    quota = Quota(args.cores, f"hpctrain-slow-{os.getpid()}", args.period_us) \
        if args.cores else None
    out_dir = Path(args.out_dir)
    log_path = out_dir / f"{args.name}.log"
    out_dir.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []
    commit = git_commit(Path.cwd())  # what runs is what was checked out when it started
    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, preexec_fn=quota.enter if quota else None)
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            log.write(line)
            lines.append(line)
        code = proc.wait()
    seconds = time.monotonic() - start
    record = {
        "name": args.name, "command": shlex.join(command), "cwd": os.getcwd(),
        "commit": commit, "date": time.strftime(DATE_FORMAT, time.gmtime()),
        "cpu": cpu_model(), "exit_code": code, "seconds": round(seconds, 1),
        "cap": None if quota is None else {
            "cores": args.cores, "quota_us": quota.quota_us, "period_us": quota.period_us,
            "cgroup": f"v{quota.version}", **quota.stats()},
        **parse_output(lines),
    }
    if quota is not None:
        left = quota.remove()
        if left:
            record["cap"]["left_running"] = left
            print(f"slow_machine: {len(left)} process(es) still in {quota.path}: {left}",
                  file=sys.stderr)
    write_json(out_dir / f"{args.name}.json", record)
    print(f"slow_machine: {args.name}: exit {code} after {seconds:.0f} s -> "
          f"{out_dir / (args.name + '.json')}", file=sys.stderr)
    return code


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def render_block(records: dict[str, dict], only: list[str] | None = None) -> str:
    """The table and the budget lines of the records named in `only` (default: all), every
    number from the records."""
    shown = only if only is not None else list(records)
    rows = []
    for name, r in ((n, records[n]) for n in shown):
        cap = r.get("cap")
        cap_text = (f"{cap['cores']:g} of {r['cpu']['cpus']} cores (cgroup {cap['cgroup']} "
                    f"quota {cap['quota_us']} µs per {cap['period_us']} µs)") if cap \
            else f"none ({r['cpu']['cpus']} cores)"
        what = []
        if "images_per_s" in r:
            what.append(f"demo job {r['images_per_s']:,.0f} images/s")
        if "tests" in r:
            t = r["tests"]
            what.append(f"{t.get('passed', 0)} passed, {t.get('failed', 0)} failed; "
                        f"tests {_minutes(t['seconds'])}")
        if "install_s" in r:
            what.append(f"install {_minutes(r['install_s'])}")
        what.append(f"all {_minutes(r['seconds'])}, exit {r['exit_code']}")
        rows.append(f"| {name} | `{r['command']}` at {r['commit']} | {r['cpu']['model']}"
                    f"{'' if r['cpu']['avx512f'] else ' (no AVX-512)'} | {cap_text} | "
                    f"{'; '.join(what)} | {r['date']} |")
    head = ("| record | command | CPU | CPU cap | measured | date |\n"
            "|---|---|---|---|---|---|")
    return "\n".join([head, *rows, "", *budget_lines(records, shown)])


def _verdict(seconds: float, budget: int) -> str:
    return f"{_minutes(seconds)}, {'within' if seconds <= budget else 'over'} its " \
        f"{budget // 60} minutes"


def cpu_kind(record: dict) -> tuple:
    """What makes two records' CPUs comparable: model name, AVX-512 or not, CPU count."""
    cpu = record.get("cpu", {})
    return cpu.get("model"), bool(cpu.get("avx512f")), cpu.get("cpus")


def _hours_apart(a: dict, b: dict) -> float:
    parse = time.strptime
    return abs(time.mktime(parse(a["date"], DATE_FORMAT)) -
               time.mktime(parse(b["date"], DATE_FORMAT))) / 3600


def _demo_for(record: dict, records: dict[str, dict]) -> tuple[str, dict, bool] | None:
    """The demo record that says what machine `record`'s quota emulated: (name, record,
    under the same quota). On the same kind of CPU only (model and vector units: an AVX-512
    host runs the demo's convolutions far faster than an AVX2 one of the same model name, so
    its quota for a given rate is much smaller), preferring the same session (the rate
    a quota gives drifts with the host's load): the same quota within SESSION_H hours, else
    the nearest other quota within them, else the same quota at any time, else any."""
    cap, kind = record["cap"], cpu_kind(record)
    same_cpu = {name: r for name, r in records.items() if "images_per_s" in r and r.get("cap")
                and cpu_kind(r) == kind and r["cap"]["cores"]}

    def same(r: dict) -> bool:
        return (r["cap"]["cores"], r["cap"]["period_us"]) == (cap["cores"], cap["period_us"])

    def near(r: dict) -> bool:
        return _hours_apart(r, record) <= SESSION_H

    for pool, quota in ((lambda r: same(r) and near(r), True), (near, False), (same, True),
                        (lambda r: True, False)):
        found = {name: r for name, r in same_cpu.items() if pool(r)}
        if found:
            name, demo = min(found.items(), key=lambda kv: (
                abs(kv[1]["cap"]["cores"] - cap["cores"]), _hours_apart(kv[1], record)))
            return name, demo, quota and same(demo)
    return None


def calibration(record: dict, records: dict[str, dict]) -> str:
    """What machine a capped record emulated (`_demo_for`); another quota's rate is scaled
    by the quota, and said to be an estimate (the rate is not quite proportional to the
    quota). Demos on other CPU models say nothing about it. When the demo ran more than
    DEMO_TOLERANCE off the budget's rate, the record's times scaled to that rate, as an
    estimate."""
    model = record.get("cpu", {}).get("model")
    found = _demo_for(record, records)
    if found is None:
        return (f"no demo record on this kind of CPU ({model}): the machine it emulates is "
                "unknown")
    name, demo, same = found
    ips = demo["images_per_s"] * (1 if same else record["cap"]["cores"] / demo["cap"]["cores"])
    side = ""
    if abs(ips / BUDGET_DEMO_IPS - 1) > DEMO_TOLERANCE:
        k = ips / BUDGET_DEMO_IPS
        tests, total = record["tests"]["seconds"], record.get("total_s", record["seconds"])
        side = (f", a {'faster' if ips > BUDGET_DEMO_IPS else 'slower'} machine than the "
                f"budget's ~{BUDGET_DEMO_IPS}: scaled to it, `make test` ~{_minutes(tests * k)} "
                f"and `.ci/run` ~{_minutes(total * k)}, an estimate")
    how = "under the same quota" if same else (
        f"estimated: {demo['images_per_s']:,.0f} images/s at {demo['cap']['cores']:g} cores "
        "scaled by the quota")
    return (f"the demo job at {ips:,.0f} images/s {how} ({name}, "
            f"{_hours_apart(demo, record):.1f} h apart{side})")


def budget_lines(records: dict[str, dict], shown: list[str] | None = None) -> list[str]:
    """Each capped CI record of `shown` (default: all) against the budget: `make test` and
    the whole `.ci/run`, and the demo rate that says what machine the quota emulated."""
    lines = []
    for name, r in ((n, records[n]) for n in (list(records) if shown is None else shown)):
        if not r.get("cap") or "tests" not in r or "install_s" not in r:
            continue
        tests, total = r["tests"]["seconds"], r.get("total_s", r["seconds"])
        cpu = f"; {sum(c['s'] for c in r['cpu_s']):,.0f} CPU-s in the {len(r['cpu_s'])} " \
            "costliest tests" if r.get("cpu_s") else ""
        lines.append(f"- {name} (at {r['commit']}): `make test` {_verdict(tests, TEST_BUDGET_S)};"
                     f" `.ci/run` {_verdict(total, CI_BUDGET_S)}, exit {r['exit_code']}{cpu}; "
                     f"{calibration(r, records)}." + (f" {r['note']}" if r.get("note") else ""))
    return lines


def render(args: argparse.Namespace) -> int:
    ci_dir = REPO / "results" / "ci"
    loaded = {p.stem: json.loads(p.read_text()) for p in ci_dir.glob("*.json")}
    records = dict(sorted(loaded.items(), key=lambda kv: (kv[1]["date"], kv[0])))  # by time
    _from_source()
    from hpctrain.report.rendered import replace_block, write_or_check

    pages = {REPO / "README.md": latest(records), REPO / "docs" / "testing.md": None}
    status = 0
    for page, only in pages.items():
        try:
            new = replace_block(page.read_text(), BLOCK, render_block(records, only))
        except ValueError as e:
            raise SystemExit(f"slow_machine: {page}: {e}") from None
        status |= write_or_check(page, new, args.check, "python3 scripts/slow_machine.py render")
    return status


def latest(records: dict[str, dict]) -> list[str]:
    """The README's rows: the newest capped CI record and the demo that calibrated it (the
    whole history is in docs/testing.md)."""
    ci = [name for name, r in records.items() if r.get("cap") and "install_s" in r]
    if not ci:
        return []
    found = _demo_for(records[ci[-1]], records)
    return [found[0], ci[-1]] if found else [ci[-1]]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="run a command under a CPU quota and store its timing")
    r.add_argument("--cores", type=float, default=0.0,
                   help="CPUs' worth of time the command may use (0: no cap, just measure)")
    r.add_argument("--period-us", type=int, default=PERIOD_US,
                   help=f"the quota's period in µs ({PERIOD_US}); the quota is cores x period")
    r.add_argument("--name", required=True, help="record name: results/ci/NAME.json")
    r.add_argument("--out-dir", default=str(REPO / "results" / "ci"))
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- command ...")
    g = sub.add_parser("render", help="README's Development section from results/ci/*.json")
    g.add_argument("--check", action="store_true", help="exit 1 if the README differs")
    args = p.parse_args(argv)
    return run(args) if args.what == "run" else render(args)


if __name__ == "__main__":
    sys.exit(main())

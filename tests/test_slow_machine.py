"""scripts/slow_machine.py: what it keeps from a run's output, and the README's CI figures
rendered from results/ci/*.json (never typed by hand)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from conftest import REPO

spec = importlib.util.spec_from_file_location("slow_machine", REPO / "scripts" /
                                              "slow_machine.py")
assert spec and spec.loader
slow_machine = importlib.util.module_from_spec(spec)
spec.loader.exec_module(slow_machine)


def test_parse_output_keeps_ci_times_test_counts_and_durations(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"images_per_s": {"mean": 612.5}, "test_accuracy": 0.9}))
    lines = ["ci: install took 95 s", "============ slowest 25 durations ============",
             "301.52s call     tests/test_slurm_jobs.py::test_preemption_signal_to_ranks",
             "12.00s setup    tests/test_e2e_slurm.py::test_dry_run_submits_nothing",
             "==== most CPU, all processes on the machine (s) ====",
             "88.5 cpu-s tests/test_recipe.py::test_killed_run_resumes_exactly",
             "900 cpu-s in 240 tests",
             "==== 1 failed, 150 passed, 2 skipped in 1234.56s (0:20:34) ====",
             f"report: {report}", "ci: total 1400 s"]
    found = slow_machine.parse_output([line + "\n" for line in lines])
    assert found["install_s"] == 95 and found["total_s"] == 1400
    assert found["tests"] == {"failed": 1, "passed": 150, "skipped": 2, "seconds": 1234.56}
    assert found["durations"][0] == {
        "s": 301.52, "when": "call",
        "test": "tests/test_slurm_jobs.py::test_preemption_signal_to_ranks"}
    assert len(found["durations"]) == 2
    assert found["cpu_s"] == [{"s": 88.5,
                               "test": "tests/test_recipe.py::test_killed_run_resumes_exactly"}]
    assert found["images_per_s"] == 612.5 and found["test_accuracy"] == 0.9


def test_render_block_takes_every_figure_from_the_record():
    record = {"command": "bash .ci/run", "commit": "abc1234", "date": "2026-12-01 22:00 UTC",
              "cpu": {"model": "AMD EPYC", "cpus": 2, "avx512f": False, "avx2": True},
              "exit_code": 0, "seconds": 1990.0, "install_s": 300,
              "tests": {"passed": 150, "seconds": 1500.0},
              "cap": {"cores": 0.35, "quota_us": 35000, "period_us": 100000, "cgroup": "v1"}}
    block = slow_machine.render_block({"ci-capped": record})
    row = block.splitlines()[2]
    assert row.startswith("| ci-capped | `bash .ci/run` at abc1234 | AMD EPYC (no AVX-512) |")
    assert "0.35 of 2 cores (cgroup v1 quota 35000 µs per 100000 µs)" in row
    assert "150 passed, 0 failed; tests 25m00s; install 5m00s; all 33m10s, exit 0" in row
    assert block.splitlines()[4] == (
        "- ci-capped (at abc1234): `make test` 25m00s, within its 25 minutes; `.ci/run` "
        "33m10s, within its 35 minutes, exit 0; no demo record on this kind of CPU (AMD EPYC): "
        "the machine it emulates is unknown.")
    slower = {**record, "total_s": 2200, "cpu_s": [{"s": 500.0, "test": "t"}]}
    # the demo under the same quota nearest in time says what machine the quota emulated
    demo = {**record, "command": "make demo", "images_per_s": 700.4, "date":
            "2026-12-01 23:30 UTC"}
    del demo["tests"], demo["install_s"]
    other = {**demo, "images_per_s": 590.0, "date": "2026-12-02 05:00 UTC"}
    elsewhere = {**demo, "images_per_s": 610.0, "date": "2026-12-01 22:10 UTC",
                 "cap": {**record["cap"], "cores": 0.4}}
    assert slow_machine.budget_lines({"x": slower, "d1": demo, "d2": other,
                                      "d3": elsewhere}) == [
        "- x (at abc1234): `make test` 25m00s, within its 25 minutes; `.ci/run` 36m40s, over "
        "its 35 minutes, exit 0; 500 CPU-s in the 1 costliest tests; the demo job at 700 "
        "images/s under the same quota (d1, 1.5 h apart, a faster machine than the budget's "
        "~600: scaled to it, `make test` ~29m11s and `.ci/run` ~42m48s, an estimate)."]
    assert slow_machine.calibration(slower, {"d2": other}) == (
        "the demo job at 590 images/s under the same quota (d2, 7.0 h apart)")
    # only another quota on this CPU: its rate scaled by the quota, said to be an estimate
    estimate = ("the demo job at 534 images/s estimated: 610 images/s at 0.4 cores scaled by "
                "the quota (d3, 0.2 h apart, a slower machine than the budget's ~600: scaled "
                "to it, `make test` ~22m14s and `.ci/run` ~32m37s, an estimate)")
    assert slow_machine.calibration(slower, {"d3": elsewhere}) == estimate
    # the same session beats the same quota: the host's load moves what a quota gives
    assert slow_machine.calibration(slower, {"d2": other, "d3": elsewhere}) == estimate
    # the README shows the newest capped CI run and the demo that says what it emulated
    records = {"d1": demo, "x": slower, "d2": other}
    assert slow_machine.latest(records) == ["d1", "x"]
    assert slow_machine.latest({"d1": demo}) == []
    shown = slow_machine.render_block(records, slow_machine.latest(records))
    assert "| d1 |" in shown and "| x |" in shown and "| d2 |" not in shown
    noted = {**slower, "note": "Shared the cores for a while."}
    assert slow_machine.budget_lines({"x": noted, "d1": demo})[0].endswith(
        "an estimate). Shared the cores for a while.")
    # a demo on another CPU model says nothing about this one
    intel = {**demo, "cpu": {**record["cpu"], "model": "Intel(R) Xeon(R) Processor"}}
    assert slow_machine.calibration(slower, {"i": intel}).startswith("no demo record on this")
    # nor does one on the same model name with AVX-512 (its convolutions are far faster)
    avx512 = {**demo, "cpu": {**record["cpu"], "avx512f": True}}
    assert slow_machine.calibration(slower, {"a": avx512}).startswith("no demo record on this")


def test_readme_ci_timing_matches_results_ci():
    res = subprocess.run([sys.executable, str(REPO / "scripts" / "slow_machine.py"), "render",
                          "--check"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr

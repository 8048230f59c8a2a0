"""The sbatch renderer against golden files, quoting of hostile values, and sbatch itself
parsing a rendered script with a hostile path (real Slurm, job held and cancelled)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from conftest import VENV_BIN
from hpctrain.slurm.script import JobSpec, JobSpecError, make_spec, render_sbatch, sbatch_quote

GOLDEN = Path(__file__).parent / "golden"
WEIRD = "/scratch/we ird'dir \"q\";touch INJECTED; #x %j $HOME"


def _spec(**kw) -> JobSpec:
    base = dict(job_name="hpctrain-fmnist_cnn", config="/home/u/hpctrain/jobs/configs/a.yaml",
                run_dir="/home/u/hpctrain/results/a/20260101-000000-abcd",
                workdir="/home/u/hpctrain", nodes=2, ntasks_per_node=1, cpus_per_task=1,
                env_setup=("source /home/u/hpctrain/.venv/bin/activate",))
    base.update(kw)
    return make_spec(**base)


CASES = {
    "train_basic": _spec(),
    "train_gpu_cluster": _spec(nodes=4, ntasks_per_node=4, cpus_per_task=8, gpus_per_node=4,
                               time="1-00:00:00", partition="gpu", account="proj42",
                               env_setup=("module load tensorflow/2.21 openmpi/4.1",
                                          "source $HOME/venvs/hpctrain/bin/activate"),
                               extra_args=("epochs=90", "batch_size=256")),
    "train_weird": _spec(job_name="x\"; rm -rf / #", config=f"{WEIRD}/c.yaml:short",
                         run_dir=f"{WEIRD}/run", workdir=WEIRD, partition="p q",
                         extra_args=("data=/d/$(reboot)/x y.h5",), allow_run_as_root=True),
    "train_profile_mpirun": _spec(nodes=2, ntasks_per_node=4, cpus_per_task=16,
                                  gpus_per_node=4, gres_name="gpu", qos="high",
                                  constraint="a100|h100", account="proj42", partition="gpu",
                                  launcher="mpirun", signal_seconds=300, max_restarts=5,
                                  scratch="$TMPDIR", data=f"{WEIRD}/shards $(x)",
                                  extra_sbatch=("--exclusive", "--mem=0",
                                                '--comment=a "b" #c'),
                                  env_setup=("module load cuda/12.3 openmpi/4.1",)),
    "train_horovodrun": _spec(launcher="horovodrun", signal_seconds=0),
    "sweep_weird": _spec(template="sweep.sbatch", run_dir=f"{WEIRD}/sweep", array="0-3%2",
                         extra_args=("epochs=1",),
                         array_args=(("learning_rate=0.1", "tag=$(reboot)"),
                                     ("learning_rate=0.2", "tag=a b"),
                                     ("learning_rate=0.1", "tag='q'"),
                                     ("learning_rate=0.2", "tag=;touch INJECTED"))),
    "stage_weird": _spec(template="stage.sbatch", nodes=1, run_dir=f"{WEIRD}/run",
                         stage_dataset="fashion-mnist", stage_source=f"{WEIRD}/idx",
                         data=f"{WEIRD}/data.h5"),
    "stage_imagefolder_weird": _spec(template="stage.sbatch", nodes=2, cpus_per_task=8,
                                     run_dir=f"{WEIRD}/run", stage_dataset="imagefolder",
                                     stage_source=f"{WEIRD}/tree", data=f"{WEIRD}/staged",
                                     stage_args=("--size", "256", "--resize", "center-crop",
                                                 "--max-unreadable", "$(reboot)")),
    "report_basic": _spec(template="report.sbatch", nodes=1, time="00:10:00"),
    "allreduce_weird": _spec(template="allreduce.sbatch", config="", nodes=4,
                             run_dir=f"{WEIRD}/net", launcher="mpirun",
                             extra_args=("--nodes", "1,2,4", "--max-bytes", "$(reboot)")),
}


@pytest.mark.parametrize("name", CASES)
def test_golden(name):
    text = render_sbatch(CASES[name])
    golden = GOLDEN / f"{name}.sbatch"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
        pytest.skip("golden file rewritten: review the diff")
    assert text == golden.read_text()


def test_rendered_script_shape():
    text = render_sbatch(CASES["train_basic"])
    assert text.startswith("#!/bin/bash\n#SBATCH")
    assert "set -euo pipefail" in text
    assert re.search(r"^srun --mpi=pmix .*\\\n  hpctrain train --config ", text, re.M)
    assert "#SBATCH --signal=B:USR1@120" in text and "#SBATCH --requeue" in text
    assert "scontrol requeue" in text and "--kill-on-bad-exit=1" in text
    assert len(text.splitlines()) < 60  # thin, like a hand-written script


def _bash_words(text: str, *expressions: str) -> list[str]:
    """What bash makes of the script's `run_dir=` and `args=(...)` lines: the words of
    `expressions` (e.g. '"${args[@]}"'), one per line."""
    lines = [ln for ln in text.splitlines() if ln.startswith(("run_dir=", "args=("))]
    program = "\n".join(lines) + "\nprintf '%s\\n' " + " ".join(expressions)
    return subprocess.run(["bash", "-c", program], capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_weird_values_parse_back_in_bash(tmp_path):
    """bash must see the hostile values as single words, never as commands."""
    text = render_sbatch(CASES["train_weird"])
    train = text[text.index("hpctrain train"):].split("\n")[0]
    config = train.split("--config ", 1)[1].split(" --run-dir", 1)[0]
    assert shlex.split(config) == [f"{WEIRD}/c.yaml:short"]
    assert _bash_words(text, '"$run_dir"', '"${args[@]}"') == [
        f"{WEIRD}/run", "data=/d/$(reboot)/x y.h5"]
    sweep = render_sbatch(CASES["sweep_weird"])
    case = sweep[sweep.index('case "${SLURM_ARRAY_TASK_ID}" in'):sweep.index("esac") + 4]
    for task, want in enumerate(CASES["sweep_weird"].array_args):
        out = subprocess.run(["bash", "-c", f"SLURM_ARRAY_TASK_ID={task}\n{case}\n"
                              "printf '%s\\n' \"${args[@]}\""], capture_output=True,
                             text=True, check=True, cwd=tmp_path).stdout.splitlines()
        assert out == ["epochs=1", *want]
    assert not (tmp_path / "INJECTED").exists()


def test_typed_gres():
    assert "#SBATCH --gres=gpu:a100:4\n" in render_sbatch(_spec(gres_name="gpu:a100",
                                                               gpus_per_node=4))


def test_sbatch_quote():
    assert sbatch_quote('a "b" #c \\d') == '"a \\"b\\" \\#c \\\\d"'


@pytest.mark.parametrize("change, message", [
    (dict(nodes=0), "--nodes must be >= 1"),
    (dict(ntasks_per_node=0), "--ntasks-per-node must be >= 1"),
    (dict(gpus_per_node=-1), "--gpus-per-node"),
    (dict(time="soon"), "not a Slurm time"),
    (dict(job_name="a\n#SBATCH --account=other"), "newline"),
    (dict(run_dir="/x\n/y"), "newline"),
    (dict(launcher="ssh"), "--launcher 'ssh' unknown"),
    (dict(extra_sbatch=("exclusive",)), "must start with --"),
    (dict(scratch='/x"; reboot; "'), "without"),
    (dict(array_args=(("a=1\n#SBATCH --x",),)), "newline"),
    (dict(gres_name="gpu:a100:4"), "a name, or name:type"),
    (dict(gres_name="gpu;reboot"), "a name, or name:type"),
])
def test_impossible_requests(change, message):
    with pytest.raises(JobSpecError, match=re.escape(message)):
        render_sbatch(_spec(**change))


@pytest.mark.slurm
def test_sbatch_parses_weird_paths(slurm_cluster, weird_tmp_path):
    """Real sbatch reads the quoted #SBATCH values back exactly (job name, working directory,
    output file with a literal `%`), and nothing in them is executed."""
    run_dir = weird_tmp_path / "run %x"
    run_dir.mkdir()
    spec = _spec(job_name='we"ird; name #1', run_dir=str(run_dir), workdir=str(weird_tmp_path),
                 config=str(weird_tmp_path / "missing.yaml"), nodes=1,
                 env_setup=(f"source {shlex.quote(str(VENV_BIN / 'activate'))}",))
    script = weird_tmp_path / "job.sbatch"
    script.write_text(render_sbatch(spec))
    env = slurm_cluster.env()
    res = subprocess.run(["sbatch", "--parsable", "--wait", str(script)], env=env,
                         capture_output=True, text=True, timeout=120)
    job_id = res.stdout.strip()
    assert job_id.isdigit(), res.stderr
    show = subprocess.run(["scontrol", "show", "job", job_id], env=env, capture_output=True,
                          text=True, check=True).stdout  # (slurmdbd turns `"` into a backtick)
    assert 'JobName=we"ird; name #1\n' in show
    assert f"WorkDir={weird_tmp_path}\n" in show
    log = run_dir / f"slurm-{job_id}.out"  # `%x` stayed literal: no job-name substitution
    assert log.is_file(), sorted(p.name for p in weird_tmp_path.rglob("*"))
    text = log.read_text()
    assert f"hpctrain: job {job_id}" in text
    assert "config file" in text and "missing.yaml not found" in text  # train ran, refused
    assert not (weird_tmp_path / "INJECTED").exists()
    assert not Path("INJECTED").exists()

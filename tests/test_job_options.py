"""The job options, declared once (slurm/job_options.py): every command that sends jobs has the
same flags, profiles and job specs take the same defaults and checks; and the submission core
(slurm/queue.py): a chain's specs, queueing with rollback, one deadline for the waits."""

from __future__ import annotations

import pytest

from hpctrain.cli import build_parser
from hpctrain.slurm.client import SlurmError
from hpctrain.slurm.job_options import JOB_KEYS, JobOptions, JobSettings, flag
from hpctrain.slurm.profiles import Profile, ProfileError
from hpctrain.slurm.queue import Stage, chain_specs, queue_in_order, wait_each
from hpctrain.slurm.script import JobSpec, JobSpecError, make_spec
from hpctrain.validation import parse

JOB_COMMANDS = {"submit": [], "sweep": ["--param", "epochs=1,2"], "study": ["--nodes", "1,2"],
                "interactive": []}


def _flags(command: str) -> dict[str, object]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    parser = sub.choices[command]  # type: ignore[attr-defined]
    return {s: a for a in parser._actions for s in a.option_strings}


@pytest.mark.parametrize("command", JOB_COMMANDS)
def test_every_job_command_has_every_job_option_under_one_name(command):
    flags = _flags(command)
    expected = {flag(k) for k in JOB_KEYS} - ({"--nodes"} if command == "study" else set())
    assert expected <= set(flags), expected - set(flags)
    for name in expected:
        action = flags[name]
        assert action.default is None  # unset: the profile's value
        assert action.help == _flags("submit")[name].help  # the same words everywhere


def test_study_takes_every_job_option_to_its_points_and_its_command():
    argv = ["study", "--config", "c.yaml", "--nodes", "1,2", "--ntasks-per-node", "2",
            "--cpus-per-task", "3", "--launcher", "mpirun", "--signal-seconds", "60"]
    args = build_parser().parse_args(argv)
    job = JobOptions.taken_from(args, exclude=("nodes",))
    assert job.given == {"ntasks_per_node": 2, "cpus_per_task": 3, "launcher": "mpirun",
                         "signal_seconds": 60}
    # the flag studies had before keeps working
    old = build_parser().parse_args(["study", "--config", "c.yaml", "--nodes", "1",
                                     "--tasks-per-node", "4"])
    assert old.ntasks_per_node == 4


def test_profiles_and_specs_share_the_job_defaults_and_checks():
    for key in JOB_KEYS:
        default = JobSettings.model_fields[key].default
        assert Profile.model_fields[key].default == default
        assert JobSpec.model_fields[key].default == default
    with pytest.raises(ProfileError, match="--time 'soon' is not a Slurm time"):
        parse(Profile, {"time": "soon"}, "profile x", ProfileError)
    with pytest.raises(JobSpecError, match="--cpus-per-task must be >= 1, got 0"):
        make_spec(job_name="j", config="c", run_dir="r", workdir="w", cpus_per_task=0)
    opts = JobOptions(nodes=2, partition=None)
    assert opts.given == {"nodes": 2} and opts.replace(nodes=3).get("nodes") == 3
    assert opts.settings(Profile(nodes=4, partition="gpu"))["partition"] == "gpu"
    with pytest.raises(TypeError, match="unknown job option"):
        JobOptions(ntasks=2)


def _spec(**kw) -> JobSpec:
    return make_spec(job_name="hpctrain-x", config="/c.yaml", run_dir="/r", workdir="/w",
                     nodes=2, ntasks_per_node=4, cpus_per_task=3, gpus_per_node=4,
                     time="02:00:00", **kw)


def test_a_chain_is_derived_from_the_training_job():
    train = _spec()
    tree = chain_specs(train, ("stage", "train", "report"),
                       Stage("imagefolder", "/tree", ("--size", "64")))
    assert list(tree) == ["stage", "train", "report"] and tree["train"] is train
    stage = tree["stage"]  # one rank per node of the training job, all its CPUs as workers
    assert (stage.nodes, stage.ntasks_per_node, stage.cpus_per_task, stage.gpus_per_node) == \
        (2, 1, 12, 0)
    assert stage.template == "stage.sbatch" and stage.stage_args == ("--size", "64")
    report = tree["report"]
    assert (report.nodes, report.ntasks_per_node, report.time, report.job_name) == \
        (1, 1, "00:10:00", "hpctrain-x-report")
    idx = chain_specs(train, ("stage", "train"), Stage("mnist", "/idx"))["stage"]
    assert (idx.nodes, idx.ntasks_per_node, idx.cpus_per_task) == (1, 1, 1)


class FakeQueue:
    """A stand-in for SlurmClient's sbatch / scancel / wait (unit tests of the core only:
    the end-to-end tests queue on the real embedded cluster)."""

    def __init__(self, fail_at: int | None = None, states: dict[str, str] | None = None):
        self.fail_at, self.states = fail_at, states or {}
        self.sbatched: list[tuple[str, ...]] = []
        self.cancelled: list[str] = []

    def sbatch(self, path, *options):
        if len(self.sbatched) == self.fail_at:
            raise SlurmError("sbatch: error: Batch job submission failed")
        self.sbatched.append((str(path), *options))
        return str(100 + len(self.sbatched))

    def scancel(self, *job_ids):
        self.cancelled += job_ids

    def wait(self, job_id, timeout):
        assert timeout >= 1.0
        return self.states[job_id]


def test_jobs_queue_in_order_after_each_other_or_not_at_all(tmp_path):
    files = [tmp_path / f"{i}.sbatch" for i in range(3)]
    q = FakeQueue()
    seen = []
    ids = queue_in_order(q, files, dependency="afterok",  # type: ignore[arg-type]
                         on_queued=lambda f, j: seen.append((f.name, j)))
    assert ids == ["101", "102", "103"] and seen[0] == ("0.sbatch", "101")
    assert q.sbatched[0] == (str(files[0]),)
    assert q.sbatched[2] == (str(files[2]), "--dependency=afterok:102",
                             "--kill-on-invalid-dep=yes")
    q = FakeQueue()
    queue_in_order(q, files[:2], dependency="afterany", after="99")  # type: ignore[arg-type]
    assert q.sbatched == [(str(files[0]), "--dependency=afterany:99"),
                          (str(files[1]), "--dependency=afterany:101")]
    q = FakeQueue(fail_at=2)  # the third sbatch fails: the two queued are cancelled
    with pytest.raises(SlurmError):
        queue_in_order(q, files)  # type: ignore[arg-type]
    assert q.cancelled == ["101", "102"]


def test_waits_share_one_deadline_and_count_the_failures():
    q = FakeQueue(states={"1": "COMPLETED", "2": "FAILED", "3": "COMPLETED"})
    judged = []

    def judge(i, job_id, state):
        judged.append((i, job_id, state))
        return state == "COMPLETED"

    assert wait_each(q, ["1", "2", "3"], 60.0, judge) == 1  # type: ignore[arg-type]
    assert judged == [(0, "1", "COMPLETED"), (1, "2", "FAILED"), (2, "3", "COMPLETED")]

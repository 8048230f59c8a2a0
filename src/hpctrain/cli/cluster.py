"""`hpctrain cluster`, `doctor` and `profile init`: the embedded cluster, and a real one
checked and described."""

from __future__ import annotations

import argparse
import shlex
import sys


def _cluster(args) -> int:
    from hpctrain.cluster.embedded import ClusterError, EmbeddedCluster

    c = EmbeddedCluster(root=args.dir) if args.dir else EmbeddedCluster()
    try:
        if args.action == "up":
            c.up(timeout=args.timeout)
            print(f"embedded cluster {c.cluster_name} up: {c.nodes} nodes; "
                  f"export SLURM_CONF={c.slurm_conf}")
        elif args.action == "down":
            stopped = c.down()
            print(f"stopped {len(stopped)} daemon(s)" + (f": {' '.join(stopped)}"
                                                        if stopped else ""))
        else:
            for name, pid in c.running().items():
                print(f"{name:16s} {'pid ' + str(pid) if pid else 'not running'}")
            if not c.is_up():
                print("embedded cluster is not (fully) up: hpctrain cluster up")
                return 1
            print(c.sinfo(), end="")
            print(f"export SLURM_CONF={c.slurm_conf}")
    except ClusterError as e:
        print(f"hpctrain cluster: error: {e}", file=sys.stderr)
        return 1
    return 0


def _doctor(args) -> int:
    from importlib.metadata import PackageNotFoundError, version

    from hpctrain import doctor

    def installed(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    checks = doctor.diagnose(args.profile, args.config, args.here, installed)
    print("\n".join(c.line() for c in checks), flush=True)
    blockers = sum(c.ok is False for c in checks)
    if args.on_node and not args.here and not blockers:
        from hpctrain.slurm.profiles import load_profile

        res = doctor.on_node(load_profile(args.profile), [
            *(["--profile", args.profile] if args.profile else []),
            *(["--config", args.config] if args.config else [])])
        print("on a compute node:\n" + res.stdout.rstrip())
        if res.returncode != 0:
            blockers += max(1, sum(line.startswith("FAIL") for line in res.stdout.splitlines()))
            if "FAIL" not in res.stdout:
                print(f"FAIL node: srun failed: {' '.join(res.stderr.split())[-300:]}")
    if args.here:
        return 1 if blockers else 0
    print("doctor: a job would run" if not blockers else
          f"doctor: {blockers} blocker(s): fix the FAIL lines above")
    return 1 if blockers else 0


def _profile_init(args) -> int:
    from hpctrain.slurm import profile_init as pi
    from hpctrain.slurm.client import slurm_env

    env = slurm_env()
    sv = pi.survey(env)
    asked = {"account": args.account, "scratch": args.scratch,
             "env_setup": tuple(args.env_line) if args.env_line else None}
    if sys.stdin.isatty() and not args.yes:  # ask only what Slurm cannot tell
        if asked["account"] is None:
            asked["account"] = input(f"account to charge [{sv.default_account or 'none'}]: "
                                     ).strip() or None
        if asked["env_setup"] is None:
            print("shell lines that prepare a job (module load ..., source .../activate); "
                  "an empty line ends:")
            lines = iter(lambda: input("  > ").strip(), "")
            asked["env_setup"] = tuple(lines) or None
        if asked["scratch"] is None:
            asked["scratch"] = input("node-local scratch directory, e.g. $TMPDIR "
                                     f"[none{'; TmpFS ' + sv.tmpfs if sv.tmpfs else ''}]: "
                                     ).strip() or None
    answers = pi.Answers(partition=args.partition, constraint=args.constraint, **asked)
    flags = [f"--{k.replace('_', '-')}={v}" for k in ("partition", "constraint")
             if (v := getattr(args, k))]
    text = pi.render(args.name, pi.draft(args.name, sv, answers),
                     shlex.join(["hpctrain", "profile", "init", args.name, *flags]))
    profile, verdict = pi.check(args.name, text, args.config, env)
    if args.print:
        sys.stdout.write(text)
    else:
        path = pi.output_path(args.name, args.out)
        pi.write(path, text, args.force)
        print(f"wrote {path}")
    print(f"profile {profile.name}: checked; sbatch --test-only: {verdict}")
    print(f"next: hpctrain doctor --profile {args.out or args.name}")
    return 0


def _default_config() -> str | None:
    from hpctrain.resources import checkout_root

    root = checkout_root()
    path = root / "jobs" / "configs" / "fmnist_cnn.yaml" if root else None
    return str(path) if path and path.is_file() else None


def add(sub) -> None:
    c = sub.add_parser("cluster", help="the embedded Slurm test cluster on this host",
                       epilog="example: hpctrain cluster up && hpctrain cluster status")
    c.add_argument("action", choices=["up", "down", "status"])
    c.add_argument("--dir", help="state directory (default .cluster/ of the checkout, or "
                   "$HPCTRAIN_CLUSTER_DIR)")
    c.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for idle nodes")
    c.set_defaults(func=_cluster)

    d = sub.add_parser(
        "doctor", help="check that jobs can run here: a checklist with the fix for each failure",
        description="Check everything a job needs, on this login node and (--on-node) on a "
        "compute node\nthrough srun: one line per check, with the fix for each failure. Exit 0 "
        "when a job\nwould run, 1 when not.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: hpctrain doctor --profile mysite --config jobs/configs/"
        "fmnist_cnn.yaml --on-node")
    d.add_argument("--profile", help="cluster profile (default $HPCTRAIN_PROFILE, else "
                   "embedded)")
    d.add_argument("--config", help="an experiment config: its data is checked too")
    d.add_argument("--on-node", action="store_true", help="also run the node checks (GPUs, "
                   "scratch) on a compute node of the profile's partition, through srun")
    d.add_argument("--here", action="store_true", help="run only the node checks, on this "
                   "host (what --on-node runs on the node)")
    d.set_defaults(func=_doctor)

    pr = sub.add_parser("profile", help="cluster profiles: `profile init NAME` writes one "
                        "from the live cluster")
    pra = pr.add_subparsers(dest="action", required=True, metavar="ACTION")
    pi = pra.add_parser(
        "init", help="write a cluster profile from what Slurm reports",
        description="Write a cluster profile from the live cluster: partitions (MaxTime, "
        "nodes),\nCPUs, memory, GPUs and their gres type, node features, srun's PMIx, your "
        "default\naccount and TmpFS. Asks (or takes flags) only for what Slurm cannot tell; "
        "values\nchosen for you are marked `# guess:`. Checked as any profile and with "
        "sbatch --test-only.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: hpctrain profile init mysite --partition gpu --account proj42 "
        "--env-line 'module load cuda openmpi' --scratch '$TMPDIR'")
    pi.add_argument("name", help="the profile's name (its file: NAME.yaml)")
    pi.add_argument("--partition", help="default: Slurm's default partition")
    pi.add_argument("--account", help="account to charge (default: yours in Slurm's "
                    "accounting, if any)")
    pi.add_argument("--constraint", help="a node feature: only nodes with it are described")
    pi.add_argument("--env-line", action="append", metavar="LINE", help="shell line that "
                    "prepares a job (repeatable), e.g. 'module load cuda/12.3'")
    pi.add_argument("--scratch", help="node-local directory the data is copied to, e.g. "
                    "'$TMPDIR'")
    pi.add_argument("--config", help="an experiment config whose job script sbatch "
                    "--test-only checks (default: the workshop CNN's)",
                    default=_default_config())
    pi.add_argument("--out", help="where to write it (default: the first profile directory: "
                    "$HPCTRAIN_PROFILES_DIR, else ~/.config/hpctrain/clusters/)")
    pi.add_argument("--force", action="store_true", help="replace an existing profile")
    pi.add_argument("--print", action="store_true", help="print it instead of writing it")
    pi.add_argument("--yes", action="store_true", help="ask nothing (also when stdin is not "
                    "a terminal)")
    pi.set_defaults(func=_profile_init)

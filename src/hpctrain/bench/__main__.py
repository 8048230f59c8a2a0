"""`make bench`: every benchmark side by side on this machine, each writing
results/benchmarks/<name>.json (its samples and settings, `inputs`, and what they give), then
results/benchmarks/README.md from all of them. `make docs` (`--render`) runs nothing: it
renders every figure again from the stored JSON.

    python -m hpctrain.bench                          # all, as committed
    python -m hpctrain.bench --only trainer_overhead --rounds 2 --train-limit 6000
    python -m hpctrain.bench --render                 # markdown from results/benchmarks/*.json
    python -m hpctrain.bench --only trainer_overhead --machine amd-epyc-avx2   # a 2nd machine

A figure from one machine is a claim about that machine only: `--machine NAME` stores a run
under results/benchmarks/machines/NAME/ (its JSON and README.md) beside the main figures,
and the main README lists every machine's verdicts side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

from hpctrain import machine
from hpctrain.atomic import json_text, write_json
from hpctrain.bench import (
    determinism,
    horovod_overhead,
    input_pipeline,
    job_overhead,
    staging,
    startup,
    time_to_accuracy,
    trainer_overhead,
)
from hpctrain.report.rendered import replace_block, write_or_check

# name -> (title, module): each module's run() measures, its summarize(**inputs) renders
BENCHMARKS: dict[str, tuple[str, ModuleType]] = {
    "trainer_overhead": ("1. Trainer overhead", trainer_overhead),
    "input_pipeline": ("2. Input pipeline", input_pipeline),
    "horovod_overhead": ("3. Horovod overhead", horovod_overhead),
    "time_to_accuracy": ("4. Time to accuracy", time_to_accuracy),
    "job_overhead": ("5. Job overhead", job_overhead),
    "startup": ("6. Startup", startup),
    "determinism": ("7. Op determinism", determinism),
    "staging": ("8. Staging", staging),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hpctrain.bench",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--only", action="append", choices=list(BENCHMARKS),
                   help="run only this benchmark (repeatable); the README keeps the others'")
    p.add_argument("--data", default="data/fashion-mnist.h5", help="staged Fashion-MNIST")
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds per benchmark")
    p.add_argument("--processes", type=int, default=1,
                   help="input pipeline: fresh processes one after the other, --rounds "
                        "rounds each; the goals' intervals are then over processes")
    p.add_argument("--train-limit", type=int, default=24000,
                   help="training images per run (fewer: faster, noisier)")
    p.add_argument("--images", default="data/bench-256",
                   help="input pipeline: an image tree staged at 256 (hpctrain stage "
                        "imagefolder); its 224 and 256 cases are skipped if missing")
    p.add_argument("--images-lzf", default="data/bench-256-lzf",
                   help="input pipeline: the same tree staged with --compression lzf")
    p.add_argument("--jpeg-tree", default="data/bench-jpeg-tree",
                   help="staging: an image tree of ImageNet-sized JPEGs (make "
                        "data/bench-jpeg-tree)")
    p.add_argument("--out", default=OUT,
                   help="where <name>.json and README.md are written")
    p.add_argument("--machine", metavar="NAME",
                   help="store this run as another machine's, in OUT/machines/NAME/ (a "
                        "short name for the host: CPU model and vector units, e.g. "
                        "amd-epyc-avx2); the main figures and the project README's table "
                        "stay as they are")
    p.add_argument("--render", action="store_true",
                   help="run nothing: render every JSON's markdown and README.md again from "
                        "the stored samples (make docs)")
    p.add_argument("--readme",
                   help="the project README whose headline table is rewritten (default: "
                        "README.md, and only when --out is the default: a run written "
                        "elsewhere leaves the project's figures alone)")
    p.add_argument("--check", action="store_true",
                   help="with --render: write nothing, exit 1 if a committed file differs")
    return p.parse_args(argv)


def git_commit() -> str:
    """The commit measured, `-dirty` when the checkout has uncommitted changes (outside
    results/ and README.md, whose figures the benchmarks themselves rewrite)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                            ".", ":!results", ":!README.md"],
                           capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + ("-dirty" if dirty else "")


OUT = "results/benchmarks"  # the committed figures; the project README renders from them
MACHINES = "machines"  # OUT/machines/NAME/: other machines' runs (--machine NAME)
ABOUT = "ABOUT.md"  # machines/NAME/ABOUT.md: what that run is, in words (optional)


def readme(results: dict[str, dict], others: dict[str, dict[str, dict]] | None = None,
           abouts: dict[str, str] | None = None) -> str:
    """results/benchmarks/README.md from each benchmark's result, by name, and the verdicts
    measured on other machines (machines/NAME/), side by side; `abouts`: what a machine's
    run is, by NAME (its ABOUT.md, words only: figures come from the JSON)."""
    abouts = abouts or {}
    parts = ["# Benchmarks", "",
             "Written by `make bench` (`python -m hpctrain.bench`); every number is a ratio "
             "of variants run side by side, alternating, in one invocation on one machine "
             "(absolute images/s are context only: machines of this kind differ by 4x and "
             "drift within a session). Medians with min-max over rounds. The verdict rule, "
             "for every goal: **met** when the 95 % interval of the per-round paired ratio "
             "lies on the goal's side, **missed** when it lies on the other side, **not "
             "resolved** when it straddles the goal. Rendered from the JSON next to this "
             "file (`make docs`).", ""]
    for name, (title, _) in BENCHMARKS.items():
        if name not in results:
            parts += [f"## {title}", "", "Not run yet.", ""]
            continue
        r = results[name]
        parts += [f"## {title}", "", r["markdown"], "",
                  f"Measured at {r['commit']} on {r['date']} in {r['seconds']:.0f} s on "
                  f"{measured_on(r)}: `{r['command']}`", ""]
    if others:
        parts += ["## The same goals on other machines", "",
                  "A verdict holds for the machine it was measured on. These runs were made "
                  "on other hosts of this kind, or on this one with other code or in another "
                  "process (`--machine NAME`; the name and the notes below the table say "
                  "which); each one's samples, settings and full tables are in "
                  "machines/NAME/.", "",
                  "| machine | benchmark | result: median (min-max over rounds) | verdict | "
                  "measured on |", "|---|---|---|---|---|"]
        # the main machine's rows of the same benchmarks first, for the comparison
        mains = {b: r for b, r in results.items()
                 if any(b in other for other in others.values())}
        parts += _rows(mains, "this page")
        for name in others:
            parts += _rows(others[name], f"[{name}]({MACHINES}/{name}/README.md)")
        parts.append("")
        if notes := [f"- {name}: {abouts[name]}" for name in others if name in abouts]:
            parts += [*notes, ""]
    return "\n".join(parts)


HEADLINES = "bench-headlines"  # the project README's rendered block


def measured_on(result: dict) -> str:
    m = result.get("machine")
    return machine.one_line(m) if m else "a machine not recorded (stored before machines were)"


def _rows(results: dict[str, dict], where: str | None = None) -> list[str]:
    """A table row per result: headline, result, verdict, machine (after `where`, a column
    naming the page, when given)."""
    first = f" {where} |" if where else ""
    return [f"|{first} {r['headline']['benchmark']} | {r['headline']['result']} | "
            f"{r['headline']['verdict']} | {measured_on(r)}, {r['date']}, {r['commit']} |"
            for r in results.values()]


def headlines(results: dict[str, dict]) -> str:
    """The README's table: every benchmark's headline, result and verdict, from its JSON."""
    return "\n".join(["| benchmark | result: median (min-max over rounds) | verdict | "
                      "measured on |", "|---|---|---|---|", *_rows(results)])


def _load(out: Path, files: dict[Path, str]) -> dict[str, dict]:
    """The results stored in `out`, as their summarize(**inputs) renders them now (each
    JSON's new text into `files`)."""
    results: dict[str, dict] = {}
    for name, (_, module) in BENCHMARKS.items():
        path = out / f"{name}.json"
        if not path.is_file():
            continue
        stored = json.loads(path.read_text())
        results[name] = {**stored, **module.summarize(**stored["inputs"])}
        files[path] = json_text(results[name], sort_keys=False)  # variants in the order run
    return results


def rendered(out: Path, readme_path: Path | None = None) -> dict[Path, str]:
    """Every file `--render` writes, from the stored JSON: each benchmark's JSON with what
    its summarize(**inputs) gives now, and README.md; the same for every other machine's
    directory (machines/NAME/)."""
    files: dict[Path, str] = {}
    results = _load(out, files)
    others: dict[str, dict[str, dict]] = {}
    abouts: dict[str, str] = {}
    for where in sorted((out / MACHINES).glob("*/")) if (out / MACHINES).is_dir() else []:
        if (about := where / ABOUT).is_file():
            abouts[where.name] = " ".join(about.read_text().split())
        if (found := _load(where, files)):
            others[where.name] = found
            files[where / "README.md"] = readme(found)
    # README.md, and the headline table of the project's README, from the results as rendered
    files[out / "README.md"] = readme(results, others, abouts)
    if readme_path is not None and readme_path.is_file():
        with contextlib.suppress(ValueError):  # a README without the block: left alone
            files[readme_path] = replace_block(readme_path.read_text(), HEADLINES,
                                               headlines(results))
    return files


def render(out: Path, check: bool, readme_path: Path | None = None) -> int:
    return max((write_or_check(path, text, check, "make docs")
                for path, text in rendered(out, readme_path).items()), default=0)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    out = Path(args.out)
    readme_path = Path(args.readme) if args.readme else \
        Path("README.md") if out.resolve() == Path(OUT).resolve() else None
    if args.render:
        return render(out, args.check, readme_path)
    if args.machine and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{0,40}", args.machine):
        print(f"bench: error: --machine {args.machine!r}: lower-case letters, digits, '.' "
              "and '-' only (a directory name)", file=sys.stderr)
        return 2
    where = out / MACHINES / args.machine if args.machine else out
    where.mkdir(parents=True, exist_ok=True)
    if not Path(args.data).is_file():
        print(f"bench: error: {args.data} missing: make data (hpctrain stage fashion-mnist)",
              file=sys.stderr)
        return 2
    for name in args.only or list(BENCHMARKS):
        title, module = BENCHMARKS[name]
        print(f"== {title}", file=sys.stderr, flush=True)
        start = time.time()
        # each run() takes the options it names
        options = {k: v for k, v in vars(args).items()
                   if k in inspect.signature(module.run).parameters}
        if "images" in options and not Path(options["images"]).is_dir():
            options["images"] = options["images_lzf"] = None  # the 28x28 case only
        elif options.get("images_lzf") and not Path(options["images_lzf"]).is_dir():
            options["images_lzf"] = None
        result = module.run(**options)
        result |= {"commit": git_commit(), "date": time.strftime("%Y-%m-%d"),
                   "machine": machine.describe(), "seconds": time.time() - start,
                   "command": shlex.join(["python", "-m", "hpctrain.bench", "--only", name,
                                          *(f"--{k.replace('_', '-')}={v}"
                                            for k, v in options.items() if v is not None)])}
        write_json(where / f"{name}.json", result, sort_keys=False)  # variants in order
        print(result["markdown"], flush=True)
    return render(out, check=False, readme_path=readme_path)


if __name__ == "__main__":
    sys.exit(main())

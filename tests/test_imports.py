"""Imports follow the pipeline: each stage of src/hpctrain/ (data -> slurm -> train -> report
-> scaling -> bench) may import the stages before it and the shared base modules, never a
later stage; the base imports no stage; the commands on top (cli/, doctor.py) import
anything and nothing imports them. Imports inside functions count as much as those at the
top. The arrows that still run against the pipeline are listed below, file by file, to be
removed: the test fails on any arrow not listed, and on a listed one that is gone, so the
list only shrinks."""

from __future__ import annotations

import ast
from collections import defaultdict

from conftest import REPO

PACKAGE = REPO / "src" / "hpctrain"
STAGES = ["data", "slurm", "train", "report", "scaling", "bench"]
BASE = {"atomic", "validation", "resources", "environment", "progress", "machine", "cluster",
        "experiment",
        "__init__"}
TOP = {"cli", "doctor"}
AGAINST = {  # (from, to): the files that still import a later stage
    ("slurm", "train"): {"slurm/sweep.py"},  # its submitit task runs `hpctrain train`
    ("train", "report"): {"train/predictions.py", "train/trainer.py"},  # report writing
}


def _part(module: str) -> str:
    """The top-level part of src/hpctrain/ a dotted module name lives in."""
    name = module.split(".")[1] if module.count(".") else "__init__"
    return name if name in {*STAGES, *BASE, *TOP} else "__init__"  # an attribute of hpctrain


def arrows() -> dict[tuple[str, str], set[str]]:
    """(from part, to part) -> files, for every hpctrain import between two parts."""
    found: dict[tuple[str, str], set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        here = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [f"{node.module}.{a.name}" if node.module == "hpctrain" else
                         node.module for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("hpctrain.") and (there := _part(name)) != here:
                    found[(here, there)].add(rel.as_posix())
    return found


def against_the_pipeline(found: dict[tuple[str, str], set[str]]) -> dict:
    wrong = {}
    for (here, there), files in found.items():
        if here in TOP:
            ok = True
        elif there in TOP:
            ok = False
        elif here in BASE:
            ok = there in BASE
        else:
            ok = there in BASE or STAGES.index(there) < STAGES.index(here)
        if not ok:
            wrong[(here, there)] = files
    return wrong


def test_imports_follow_the_pipeline():
    wrong = against_the_pipeline(arrows())
    new = {k: sorted(v - AGAINST.get(k, set())) for k, v in wrong.items()
           if v - AGAINST.get(k, set())}
    assert not new, f"imports against the pipeline: {new}"
    gone = {k: sorted(v - wrong.get(k, set())) for k, v in AGAINST.items()
            if v - wrong.get(k, set())}
    assert not gone, f"no longer against the pipeline, remove from AGAINST: {gone}"


def test_the_checker_sees_an_upward_arrow_and_a_base_importing_a_stage():
    found = {("data", "train"): {"data/x.py"}, ("train", "data"): {"train/y.py"},
             ("atomic", "report"): {"atomic.py"}, ("cli", "bench"): {"cli.py"},
             ("bench", "doctor"): {"bench/z.py"}, ("report", "validation"): {"report/w.py"}}
    assert set(against_the_pipeline(found)) == {("data", "train"), ("atomic", "report"),
                                                ("bench", "doctor")}
    assert _part("hpctrain.train.trainer") == "train" and _part("hpctrain") == "__init__"
    assert _part("hpctrain.experiment") == "experiment"
    assert _part("hpctrain.__version__") == "__init__"

"""Imports follow the pipeline: each stage of src/hpctrain/ (data -> slurm -> train -> report
-> scaling -> bench) may import the stages before it and the shared base modules, never a
later stage; the base imports no stage; the commands on top (cli/, doctor.py) import
anything and nothing imports them. Imports inside functions count as much as those at the
top. No two parts import each other, directly or round a longer cycle (the base modules
included). Where a stage needs something a later one provides (the trainer writing its
report), the command on top hands it over (train/trainer.py's `reporter`)."""

from __future__ import annotations

import ast
from collections import defaultdict

from conftest import REPO

PACKAGE = REPO / "src" / "hpctrain"
STAGES = ["data", "slurm", "train", "report", "scaling", "bench"]
BASE = {"atomic", "validation", "resources", "environment", "progress", "machine", "cluster",
        "experiment", "__init__"}
TOP = {"cli", "doctor"}


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


def cycles(found: dict[tuple[str, str], set[str]]) -> list[list[str]]:
    """Every cycle of parts importing each other, each as the path that closes it."""
    graph: dict[str, set[str]] = defaultdict(set)
    for here, there in found:
        graph[here].add(there)
    seen: list[list[str]] = []

    def walk(path: list[str]) -> None:
        for nxt in sorted(graph[path[-1]]):
            if nxt == path[0]:
                if min(path) == path[0]:  # each cycle once, from its smallest part
                    seen.append([*path, nxt])
            elif nxt not in path:
                walk([*path, nxt])

    for start in sorted(graph):
        walk([start])
    return seen


def test_imports_follow_the_pipeline():
    found = arrows()
    wrong = {k: sorted(v) for k, v in against_the_pipeline(found).items()}
    assert not wrong, f"imports against the pipeline (from, to): files: {wrong}"
    assert not cycles(found), f"parts that import each other: {cycles(found)}"


def test_the_checker_sees_an_upward_arrow_and_a_base_importing_a_stage():
    found = {("data", "train"): {"data/x.py"}, ("train", "data"): {"train/y.py"},
             ("atomic", "report"): {"atomic.py"}, ("cli", "bench"): {"cli.py"},
             ("bench", "doctor"): {"bench/z.py"}, ("report", "validation"): {"report/w.py"}}
    assert set(against_the_pipeline(found)) == {("data", "train"), ("atomic", "report"),
                                                ("bench", "doctor")}
    assert _part("hpctrain.train.trainer") == "train" and _part("hpctrain") == "__init__"
    assert _part("hpctrain.experiment") == "experiment"
    assert _part("hpctrain.__version__") == "__init__"
    assert cycles({("atomic", "validation"): {"a"}, ("validation", "progress"): {"b"},
                   ("progress", "atomic"): {"c"}, ("data", "atomic"): {"d"}}) == [
        ["atomic", "validation", "progress", "atomic"]]
    assert cycles({("slurm", "data"): {"a"}, ("train", "slurm"): {"b"}}) == []

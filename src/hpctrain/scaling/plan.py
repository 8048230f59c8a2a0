"""A study's plan: its points (node counts, ranks, global batches, variants) from the config
and the command's options, and whether a new plan only adds points to an old one (a study is
resumed or extended by running the same command again)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hpctrain.experiment import ConfigError, TrainConfig, load_config, split_spec

MODES = ("strong", "weak", "batch", "variants")
BASE = "base"  # --variants: the config file's own keys, no variant


@dataclass(frozen=True)
class Point:
    nodes: int
    ranks: int
    batch_size: int  # per rank
    learning_rate: float  # per rank (the trainer multiplies by ranks)
    accumulate_steps: int = 1
    warmup_epochs: float | None = None  # None: the config's
    in_grid: bool = False  # a batch point of a nodes x global-batch grid: nodes in its name
    variant: str = ""  # --mode variants: the config variant trained (BASE: none)
    global_batch: int = 0  # --mode batch with --variants: the variant at this global batch

    def overrides(self) -> tuple[str, ...]:
        if self.variant:  # the variant's own batch, rate, scaling rule and warm-up
            return (f"accumulate_steps={self.accumulate_steps}",) if self.global_batch else ()
        extra = () if self.accumulate_steps == 1 and self.warmup_epochs is None else (
            f"accumulate_steps={self.accumulate_steps}", f"warmup_epochs={self.warmup_epochs}")
        return (f"batch_size={self.batch_size}", f"learning_rate={self.learning_rate!r}",
                *extra)

    @property
    def name(self) -> str:
        if self.global_batch:
            return f"{self.variant}-g{self.global_batch}"
        if self.variant:
            return self.variant
        if self.warmup_epochs is None:
            return f"n{self.nodes}-r{self.ranks}"
        global_batch = self.batch_size * self.ranks * self.accumulate_steps
        where = f"n{self.nodes}-" if self.in_grid else ""
        return f"{where}g{global_batch}-warmup{self.warmup_epochs:g}"


def batch_points(cfg: TrainConfig, nodes: tuple[int, ...], tasks_per_node: int,
                 global_batches: tuple[int, ...], variants: tuple[str, ...] = (),
                 config: str = "", overrides: tuple[str, ...] = (),
                 base_alone: bool = False) -> list[Point]:
    """Each global batch on each node count (a grid when there are several), by gradient
    accumulation, with and without warm-up. The global batch is what the learning rate
    follows; the nodes change only how fast an update is made. With `variants` (of the
    config file `config`, each with the command's `overrides`), each variant at each global
    batch with its own warm-up; with `base_alone`, the first variant only at the smallest
    global batch (the base) and the others only above it."""
    if base_alone and (not variants or len(global_batches) < 2):
        raise ConfigError("--base-alone: with --mode batch --variants and at least two "
                          "--global-batches (the base alone at the smallest)")
    if variants:
        if len(nodes) != 1:
            raise ConfigError("--mode batch --variants: one --nodes value")
        check_variants(config, variants, "--mode batch")
    warmups = (cfg.warmup_epochs, 0.0) if cfg.warmup_epochs else (0.0,)
    points, unreachable = [], []
    for n in nodes:
        ranks = n * tasks_per_node
        for v in variants or ("",):
            vcfg = cfg if v in ("", BASE) else load_config(f"{config}:{v}", list(overrides))
            per_update = vcfg.batch_size * ranks
            for g in global_batches:
                if base_alone and (v == variants[0]) != (g == min(global_batches)):
                    continue
                if g % per_update:
                    unreachable.append(f"{g} on {n} node(s) ({v + ': ' if v else ''}batch_size "
                                       f"{vcfg.batch_size} x {ranks} ranks = {per_update} per "
                                       "accumulated batch)")
                elif v:
                    points.append(Point(n, ranks, vcfg.batch_size, vcfg.learning_rate,
                                        g // per_update, variant=v, global_batch=g))
                else:
                    points += [Point(n, ranks, cfg.batch_size, cfg.learning_rate,
                                     g // per_update, float(w), in_grid=len(nodes) > 1)
                               for w in warmups]
    if unreachable:
        raise ConfigError("--global-batches: each must be a multiple of batch_size x ranks "
                          "at every node count; not: " + "; ".join(unreachable))
    return points


def variant_points(config: str, nodes: tuple[int, ...], tasks_per_node: int,
                   variants: tuple[str, ...], other: tuple[int, ...] = ()) -> list[Point]:
    """One point per config variant (BASE: the file's own keys), on one node count."""
    if len(nodes) != 1 or other:
        raise ConfigError("--mode variants: one --nodes value, no --global-batches or "
                          "--within-node")
    check_variants(config, variants, "--mode variants")
    ranks = nodes[0] * tasks_per_node
    return [Point(nodes[0], ranks, 0, 0.0, variant=v) for v in variants]


def check_variants(config: str, variants: tuple[str, ...], mode: str) -> None:
    """The config file alone, at least two different variants, each one in the file."""
    if split_spec(config)[1] is not None:
        raise ConfigError(f"{mode}: --config {config}: the file alone (the variants come from "
                          "--variants)")
    if len(variants) < 2 or len(set(variants)) != len(variants):
        raise ConfigError(f"{mode}: --variants with at least two different names, the first "
                          f"the reference, e.g. {BASE},no_weight_decay")
    for v in variants:
        if v != BASE:
            load_config(f"{config}:{v}")  # a missing variant is named now


def variant_changes(config: str, variants: list[str]) -> dict[str, str]:
    """What each variant sets, in words ("key=value, ..."), from the config file."""
    import yaml

    raw = (yaml.safe_load(Path(config).read_text()) or {}).get("variants") or {}
    return {v: ", ".join(f"{k}={json.dumps(x)}" for k, x in (raw.get(v) or {}).items())
            or "the config as written" for v in variants}


def parse_nodes(value: str, flag: str = "--nodes") -> tuple[int, ...]:
    """"1,2,4" -> (1, 2, 4): positive integers, sorted, without repeats."""
    try:
        nodes = tuple(sorted({int(v) for v in value.split(",") if v.strip()}))
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: a comma-separated list, e.g. 1,2,4") from None
    if not nodes or nodes[0] < 1:
        raise ConfigError(f"{flag} {value!r}: values must be >= 1")
    return nodes


def geometry(nodes: tuple[int, ...], tasks_per_node: int,
             within_node: tuple[int, ...] = ()) -> list[tuple[int, int]]:
    """(nodes, ranks) of every point: the ranks within one node first, then the nodes."""
    inside = [r for r in within_node if r < tasks_per_node]
    if len(inside) != len(within_node):
        raise ConfigError(f"--within-node {','.join(map(str, within_node))}: rank counts "
                          f"within one node below --ntasks-per-node {tasks_per_node}")
    if within_node and nodes[0] != 1:
        raise ConfigError("--within-node: the node counts must start at 1 (the within-node "
                          "points lead up to one full node)")
    return [(1, r) for r in inside] + [(n, n * tasks_per_node) for n in nodes]


def plan_points(cfg: TrainConfig, nodes: tuple[int, ...], tasks_per_node: int,
                mode: str, within_node: tuple[int, ...] = ()) -> list[Point]:
    """The study's points; strong scaling keeps the smallest point's global batch and rate."""
    if mode not in MODES[:2]:
        raise ConfigError(f"--mode {mode!r}: choose from {', '.join(MODES)}")
    shape = geometry(nodes, tasks_per_node, within_node)
    base_ranks = shape[0][1]
    points = []
    for n, ranks in shape:
        if mode == "weak":
            points.append(Point(n, ranks, cfg.batch_size, cfg.learning_rate))
            continue
        global_batch = cfg.batch_size * base_ranks
        if global_batch % ranks:
            raise ConfigError(f"strong scaling: the global batch {global_batch} (batch_size "
                              f"{cfg.batch_size} x {base_ranks} ranks) does not divide "
                              f"over {ranks} ranks; choose a batch_size that does")
        points.append(Point(n, ranks, global_batch // ranks,
                            cfg.learning_rate * base_ranks / ranks))
    return points


def extends(old: dict, new: dict) -> bool:
    """Whether plan `new` is plan `old` with points added, never removed or changed: the same
    config, overrides, mode and job options, every old point still planned, and in strong
    mode the same smallest point (it sets the global batch of every point)."""
    fixed = ("config", "overrides", "tasks_per_node", "mode", "profile", "base_alone")
    if any(old.get(k) != new.get(k) for k in fixed) or old.get("job", {}) != new.get("job", {}):
        return False
    if old["mode"] == "batch" and (len(old["nodes"]) > 1) != (len(new["nodes"]) > 1):
        return False  # one node count to a grid would rename every point (n<N>-g...)
    if not set(old["nodes"]) <= set(new["nodes"]) or \
            not set(old.get("global_batches", [])) <= set(new.get("global_batches", [])) or \
            not set(old.get("within_node", [])) <= set(new.get("within_node", [])) or \
            not set(old.get("variants", [])) <= set(new.get("variants", [])) or \
            old.get("variants", [None])[0] != new.get("variants", [None])[0]:
        return False
    return new["mode"] != "strong" or _base_ranks(old) == _base_ranks(new)


def looks_after(old: dict, repeats: int, done_repeats: int) -> list[int]:
    """The seed counts at which a study's verdicts have been read, this run's included: the
    study's plan keeps them (`looks`), and every verdict's interval widens for their number
    (report.statistics.confidence_for_looks). A study run again with more --repeats than its
    last look, after `done_repeats` repeats of every point had completed (whose report could
    be read), is a new look; the same or fewer repeats resume or re-render it. `old`: the plan
    as it was ({} for a new study; one from before looks were kept counts its completed
    repeats as its one look)."""
    looks = list(old.get("looks") or ([done_repeats] if old and done_repeats else []))
    if not looks or repeats > looks[-1]:
        looks.append(repeats)
    return looks


def _base_ranks(plan: dict) -> int:
    """The ranks of a plan's smallest point: its first within-node count, else one full
    node of its smallest node count."""
    return min(plan.get("within_node") or [min(plan["nodes"]) * plan["tasks_per_node"]])

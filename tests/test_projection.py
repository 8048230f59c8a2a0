"""The scaling model against published figures: the split declared before fitting, a fit
that finds the constants its figures were made with, and the committed table
(results/projection/) reproduced from its JSON and from a fresh fit."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conftest import REPO
from hpctrain.scaling import figures, published

RESULTS = REPO / "results" / "projection"
COMMAND = "hpctrain project --published --out results/projection"


def test_the_split_is_the_declared_one_and_covers_what_it_must():
    roles = {f.key: f.role for f in figures.FIGURES}
    assert sorted(k for k, r in roles.items() if r == figures.CALIBRATION) == [
        "dle-a100-tf32", "dle-v100-fp32", "horovod128-inception3", "horovod16-resnet101",
        "horovod16tcp-resnet101", "horovod64-inception3"]
    held = [f for f in figures.FIGURES if f.role == figures.HELD_OUT]
    assert len(held) == 16 and len(roles) == len(figures.FIGURES)  # keys are unique
    # residual nets, a model of large dense layers, one NVLink node, RDMA and TCP networks
    assert {"resnet50", "resnet101", "vgg16", "inception_v3"} <= {f.model for f in held}
    assert {"nvlink", "rdma", "tcp"} == {f.transport for f in held}
    assert len({f.source for f in figures.FIGURES}) >= 4  # NVIDIA, Horovod (2), users
    # the second held-out set, declared after the first check: 9 figures from 3 sources the
    # model had not been checked on, none of them a calibration figure's source
    second = [f for f in figures.FIGURES if f.role == figures.HELD_OUT_2]
    assert sorted(f.key for f in second) == [
        "hvd416-16", "hvd416-4", "hvd889-4", "mx-a100-amp", "mx-a100-tf32", "mx-dgx1-amp",
        "mx-dgx1-fp32", "mx-dgx2-amp", "mx-dgx2-fp32"]
    earlier = {f.source for f in figures.FIGURES if f.role not in (figures.HELD_OUT_2,
                                                                     figures.HELD_OUT_3)}
    assert len({f.source for f in second}) == 3 and not {f.source for f in second} & earlier
    # the third, declared after the second with the model unchanged: every figure of one new
    # source's tables (TensorFlow and MXNet, 4 to 32 GPUs, within a node and over InfiniBand)
    third = [f for f in figures.FIGURES if f.role == figures.HELD_OUT_3]
    assert len(third) == 26 and len({f.source for f in third}) == 1
    assert not {f.source for f in third} & {f.source for f in figures.FIGURES
                                            if f.role != figures.HELD_OUT_3}
    assert {f.gpus for f in third} == {4, 8, 16, 32}
    assert {f.transport for f in third} == {"nvlink", "rdma"}


@pytest.mark.slow(reason="fits the model's three constants on synthetic calibration figures")
def test_the_fit_finds_the_constants_its_figures_were_made_with():
    """Every figure replaced by what the model gives at known constants: the fit on the
    calibration figures finds them, and then predicts the held-out ones."""
    truth = published.Constants(0.02, 0.1, {"rdma": published.RDMA_SHARE, "tcp": 0.4})
    made = tuple(dataclasses.replace(f, published_efficiency=published.projected(f, truth)[
        "efficiency"]) for f in figures.FIGURES)
    got = published.calibrate(made)
    assert got.jitter == pytest.approx(0.02, abs=0.002)
    assert got.contention == pytest.approx(0.1, abs=0.01)
    assert got.share == pytest.approx({"rdma": 1.0, "tcp": 0.4}, abs=0.01)
    assert max(abs(published.projected(f, got)["efficiency"] - f.published_efficiency)
               for f in made) < 0.005


def test_the_committed_table_is_rendered_from_its_json():
    stored = json.loads((RESULTS / "published.json").read_text())
    c = published.Constants(**stored["constants"])
    assert published.render(stored["rows"], c, COMMAND) == (RESULTS / "README.md").read_text()
    assert published.calibrated() == c  # what `hpctrain project` uses
    # the verdict follows the rows: every held-out figure within the goal, else missed
    held = [r for r in stored["rows"] if r["role"] == figures.HELD_OUT]
    met = all(abs(r["difference_pp"]) <= published.GOAL_PP for r in held) and not any(
        o["wrong"] for o in published.ordering(stored["rows"]))
    assert ("**met**" if met else "**missed**") in (RESULTS / "README.md").read_text()


def test_the_committed_rows_follow_from_the_committed_constants_at_the_fits_minimum():
    """The rows are what the model gives with the committed constants, and those are the
    least-squares minimum on the calibration figures: any step away fits them worse."""
    stored = json.loads((RESULTS / "published.json").read_text())
    c = published.Constants(**stored["constants"])
    rows = published.check(c)
    assert [r["key"] for r in rows] == [r["key"] for r in stored["rows"]]
    for new, old in zip(rows, stored["rows"], strict=True):
        assert new["projected"] == pytest.approx(old["projected"], abs=1e-9), new["key"]
    cal = [f for f in figures.FIGURES if f.role == figures.CALIBRATION]
    best = published._squared(cal, c)
    for jitter, contention, tcp in ((0.002, 0, 0), (-0.002, 0, 0), (0, 0.02, 0),
                                    (0, -0.02, 0), (0, 0, 0.02), (0, 0, -0.02)):
        near = published.Constants(c.jitter + jitter, c.contention + contention,
                                   {**c.share, "tcp": c.share["tcp"] + tcp})
        assert published._squared(cal, near) > best


def test_ordering_counts_only_models_apart_by_more_than_the_goal():
    def row(model: str, pub: float, proj: float) -> dict:
        return {"hardware": "h", "gpus": 8, "network": "n", "role": figures.HELD_OUT,
                "model": model, "published": pub, "projected": proj}

    rows = [row("a", 0.90, 0.80), row("b", 0.88, 0.85), row("c", 0.70, 0.82)]
    (o,) = published.ordering(rows)
    # a-c and b-c are apart by more than 5 points; a-b is a tie. a is projected below c
    assert o["pairs"] == 2 and o["wrong"] == [("a", "c")]
    assert o["published"] == "a > b > c" and o["projected"] == "b > c > a"
    # one model shown twice in a setting (two sources) has no order to check
    assert published.ordering([row("a", 0.90, 0.80), row("a", 0.70, 0.82)]) == []

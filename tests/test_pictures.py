"""The report's pictures and the test-set predictions behind them, on known inputs: the
confusion counts, the most confident mistakes first, correct examples spread over the
classes, the same choice however the test set is split over ranks, and PNGs that open."""

from __future__ import annotations

import numpy as np
import pytest

from hpctrain.report import pictures
from hpctrain.train import predictions

PNG = b"\x89PNG"


def _predict_fixed(table: dict[int, np.ndarray]):
    """A 'model' that returns the stored probabilities of each image (its first pixel)."""
    return lambda images: np.stack([table[int(im.flat[0])] for im in images])


def _data(n: int = 40, classes: int = 4, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = np.zeros((n, 6, 6, 1), np.uint8)
    images[:, 0, 0, 0] = np.arange(n)  # the image's id
    table = {}
    for i in range(n):
        p = rng.dirichlet(np.ones(classes))
        table[i] = p
    return images, labels, table


def _batches(images, labels, size):
    for start in range(0, len(images), size):
        yield images[start:start + size], labels[start:start + size]


def test_counts_mistakes_and_correct_examples_on_known_inputs():
    images, labels, table = _data()
    part = predictions.predict_share(_predict_fixed(table), _batches(images, labels, 7), 4,
                                     keep=5)
    probs = np.stack([table[i] for i in range(len(images))])
    pred = probs.argmax(1)
    assert part["counts"].sum() == len(images)
    assert np.trace(part["counts"]) == (pred == labels).sum()
    assert part["counts"][labels[0], pred[0]] >= 1
    merged = predictions.merge([part], keep=5)
    wrong = np.flatnonzero(pred != labels)
    expect = sorted(probs[wrong].max(1), reverse=True)[:5]
    assert merged["mistakes"]["conf"].tolist() == pytest.approx(expect)  # most confident first
    assert (merged["mistakes"]["pred"] != merged["mistakes"]["true"]).all()
    good = merged["correct"]
    assert (good["pred"] == good["true"]).all() and len(good["true"]) == 5
    # round-robin over the classes: every class that has a correct image shows up early
    classes_right = sorted(set(labels[pred == labels]))
    assert sorted(set(good["true"][:len(classes_right)])) == classes_right


def test_same_pictures_however_the_test_set_is_split_over_ranks():
    images, labels, table = _data(n=60, classes=5, seed=3)
    predict = _predict_fixed(table)
    whole = predictions.merge([predictions.predict_share(predict, _batches(images, labels, 9),
                                                         5)])
    parts = [predictions.predict_share(predict, _batches(images[r::3], labels[r::3], 9), 5)
             for r in range(3)]
    # what the trainer does: metadata to all, the same choice everywhere, chosen images only
    metas = [predictions.metadata(p) for p in parts]
    choice = predictions.select(metas)
    sent = [predictions.chosen_images(p, choice, r) for r, p in enumerate(parts)]
    assert sum(len(v) for s in sent for v in s.values()) <= 2 * predictions.KEEP
    split = predictions.assemble(metas, choice, sent)
    assert (split["counts"] == whole["counts"]).all()
    assert split["mistakes"]["conf"].tolist() == pytest.approx(whole["mistakes"]["conf"])
    ids = split["mistakes"]["images"][:, 0, 0, 0]  # each image travelled with its labels
    for k, i in enumerate(ids):
        assert split["mistakes"]["true"][k] == labels[i]


def test_pictures_are_pngs(tmp_path):
    rows = [{"epoch": e, "accuracy": 0.5 + 0.1 * e, "val_accuracy": 0.55 + 0.1 * e,
             "loss": 1.0 / e, "val_loss": 1.1 / e, "lr": 0.01, "first_in_segment": e == 3}
            for e in (1, 2, 3, 4)]
    images, labels, table = _data(n=30, classes=3)
    merged = predictions.merge([predictions.predict_share(_predict_fixed(table),
                                                          _batches(images, labels, 8), 3)])
    made = pictures.write_pictures(tmp_path, rows, merged, ["cat", "dog", "bird"], "t")
    assert set(made) == {"curves", "confusion", "mistakes", "correct"}
    for name in made.values():
        assert (tmp_path / name).read_bytes()[:4] == PNG
    assert not list(tmp_path.glob(".*tmp*"))  # written under a temporary name, renamed
    # no test set (synthetic data): curves only
    (tmp_path / "synthetic").mkdir()
    only = pictures.write_pictures(tmp_path / "synthetic", rows, None, [], "t")
    assert set(only) == {"curves"}


def test_confusion_counts():
    counts = predictions.confusion_counts(np.array([0, 0, 1, 2, 2, 2]),
                                          np.array([0, 1, 1, 2, 2, 0]), 3)
    assert counts.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_picture_lines_inline_in_report_md_one_line_on_a_terminal():
    from hpctrain.report.run_report import picture_lines

    pics = {"files": {"curves": "curves.png", "confusion": "confusion.png"}, "error": None}
    md = picture_lines(pics)
    assert "![curves](curves.png)" in md and "![confusion](confusion.png)" in md
    assert picture_lines(pics, inline=False) == [
        "- pictures: curves.png, confusion.png (report.md shows them)"]
    assert picture_lines({"files": {}, "error": "no test set"}, inline=False) == [
        "- pictures not drawn: no test set"]
    assert picture_lines(None) == [] == picture_lines(None, inline=False)

"""`hpctrain predict` (classify images with a run's final checkpoint) and the redrawing of a
run's pictures that `hpctrain report RUN_DIR` does when they are missing."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hpctrain.validation import InputError


def add_commands(sub) -> None:
    p = sub.add_parser(
        "predict", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="classify images with a run's final checkpoint",
        description="Classify PNG/JPEG images and/or images of a staged HDF5 file with the "
        "newest\ncheckpoint of a run, prepared as the run's data was staged: converted to "
        "its colour mode,\nresized with its policy, centre-cropped to the trained size.",
        epilog="examples:\n  hpctrain predict --run results/fmnist_cnn/RUN shoe.png "
        "bag.jpg\n  hpctrain predict --run results/fmnist_cnn/RUN --h5 "
        "data/fashion-mnist.h5 --index 0 1 2\n\n"
        "Staged images are printed first, then the files; put files before --index.")
    p.add_argument("--run", required=True, metavar="RUN_DIR", help="a run directory")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="image files (PNG, JPEG, ...)")
    p.add_argument("--h5", metavar="FILE", help="a staged HDF5 file (hpctrain stage)")
    p.add_argument("--index", type=int, nargs="+", metavar="I",
                   help="--h5: the images' indices in the split")
    p.add_argument("--split", default="test", choices=("test", "train"), help="--h5 split")
    p.add_argument("--top", type=int, default=3, metavar="K", help="classes to print (3)")
    p.set_defaults(func=predict)


def predict(args) -> int:
    import numpy as np

    from hpctrain.train import inference

    if not (args.h5 or args.images) or bool(args.h5) != (args.index is not None):
        raise InputError("give IMAGE files and/or --h5 FILE --index I [I ...]")
    if args.top < 1:
        raise InputError("--top must be >= 1")
    run = inference.describe_run(args.run)  # everything checked before TensorFlow loads
    names: list[str] = []
    images: list[np.ndarray] = []
    truth: list[int | None] = []
    for index in args.index or []:
        image, label = inference.staged_image(args.h5, index, args.split)
        if image.shape != run.staged_shape:
            raise InputError(f"{args.h5}: images of shape {image.shape}, the run trained on "
                             f"{run.staged_shape}")
        names.append(f"{args.h5}[{args.split} {index}]")
        images.append(image)
        truth.append(label)
    for path in args.images:  # every file read and checked before TensorFlow loads
        images.append(inference.prepare_image(path, run))
        names.append(path)
        truth.append(None)
    batch = np.stack(images)
    probs = inference.load_run(args.run).probabilities(batch)
    for name, p, true in zip(names, probs, truth, strict=True):
        top = np.argsort(-p)[:args.top]
        ranked = "  ".join(f"{k + 1}. {run.name(int(c))} {p[c]:.4f}" for k, c in enumerate(top))
        print(f"{name}: {ranked}" + (f"  (true: {run.name(true)})" if true is not None
                                     else ""))
    return 0


def pictures_missing(run_dir: Path, report: dict) -> bool:
    cfg = json.loads((run_dir / "config.json").read_text()) \
        if (run_dir / "config.json").is_file() else {}
    if not cfg.get("pictures", True) or report.get("status") != "completed":
        return False
    files = (report.get("pictures") or {}).get("files") or {}
    return not files or not all((run_dir / f).is_file() for f in files.values())


def redraw(run_dir: Path, report: dict) -> dict:
    """The run's pictures again: learning curves from metrics.jsonl; the confusion matrix
    and the example grids from the newest checkpoint on the run's test set, when both are
    here. Returns the report's `pictures` entry (written into report.json / report.md)."""
    import time

    from hpctrain.report.run_report import write_report
    from hpctrain.train import predictions

    t0 = time.time()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()] if (run_dir / "metrics.jsonl").is_file() else []
    merged, note, names = None, None, list((report.get("dataset") or {}).get("class_names")
                                          or [])
    try:
        merged, names = _test_predictions(run_dir)
    except InputError as e:
        note = f"curves only: {e}"
    files = predictions.write_pictures(run_dir, rows, merged, names,
                                       f"{report['experiment']}: {report['model']}")
    report["pictures"] = {"files": files, "seconds": round(time.time() - t0, 2),
                          "error": note, "redrawn": True,
                          "confusion": None if merged is None else merged["counts"].tolist()}
    write_report(run_dir, report)
    return report["pictures"]


def _test_predictions(run_dir: Path) -> tuple[dict, list[str]]:
    from hpctrain.train import inference, predictions
    from hpctrain.train.data_feed import DataFeed

    run = inference.load_run(run_dir)
    if run.cfg.synthetic:
        raise InputError("synthetic data has no test set")
    if not Path(run.cfg.data).exists():
        raise InputError(f"the run's data {run.cfg.data} is not here")
    tf = inference.import_tensorflow()
    feed = DataFeed.open(tf, run.cfg, 0, 1)
    part = predictions.predict_share(run.probabilities, feed.test_batches(), feed.num_classes)
    return predictions.merge([part]), run.class_names

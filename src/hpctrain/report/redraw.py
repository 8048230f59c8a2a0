"""A run's pictures drawn again when they are missing (`hpctrain report RUN_DIR`): learning
curves from metrics.jsonl, the confusion matrix and example grids from the newest
checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

from hpctrain.validation import InputError


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

    from hpctrain.report.pictures import write_pictures
    from hpctrain.report.run_report import write_report

    t0 = time.time()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if line.strip()] if (run_dir / "metrics.jsonl").is_file() else []
    merged, note, names = None, None, list((report.get("dataset") or {}).get("class_names")
                                          or [])
    try:
        merged, names = _test_predictions(run_dir)
    except InputError as e:
        note = f"curves only: {e}"
    files = write_pictures(run_dir, rows, merged, names,
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

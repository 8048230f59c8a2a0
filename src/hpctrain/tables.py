"""The accuracy table: run reports side by side with the workshops' MNIST figures and the
published Fashion-MNIST baselines. Pure: reports in, Markdown out.

    hpctrain report --table results/accuracy/README.md results/accuracy/runs/*/*
"""

from __future__ import annotations

from collections import defaultdict

# What the workshop material reports on MNIST (60k train / 10k test), by (model, activation).
WORKSHOP_MNIST = {
    ("softmax", None): 0.917,
    ("mlp5", "sigmoid"): 0.9735,
    ("mlp5", "tanh"): 0.9806,
    ("mlp5", "relu"): 0.9807,
    ("mlp5_dropout", None): 0.9826,
    ("cnn", None): 0.9923,
    ("cnn_notebook", None): 0.9910,
}

# Published Fashion-MNIST test accuracies for each model family (zalandoresearch benchmark).
FASHION_BASELINE = {
    "softmax": "linear ~0.84",
    "mlp5": "MLP ~0.88",
    "mlp5_dropout": "MLP ~0.88",
    "cnn": "2 conv + pool 0.876-0.916",
    "cnn_notebook": "2 conv + pool 0.876-0.916",
    "lenet5": "2 conv + pool 0.876-0.916",
}


def _label(r: dict) -> str:
    act = r.get("training", {}).get("activation")
    return f"{r['model']} ({act})" if r["model"].startswith("mlp5") else r["model"]


def _workshop(r: dict) -> float | None:
    act = r.get("training", {}).get("activation")
    return WORKSHOP_MNIST.get((r["model"], act), WORKSHOP_MNIST.get((r["model"], None)))


def _pct(x: float | None, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def accuracy_table(reports: list[dict], title: str = "Accuracy of the model zoo") -> str:
    """One row per run, grouped by experiment, 1-rank row first; the gap of each multi-rank
    run to the 1-rank run of the same experiment and epochs, in percentage points."""
    by_exp: dict[str, list[dict]] = defaultdict(list)
    for r in reports:
        by_exp[r["experiment"]].append(r)
    rows = [
        "| experiment | model | dataset | ranks × nodes | epochs | global batch | optimizer "
        "| test accuracy | vs 1 rank | expected | training time | images/s | workshop MNIST "
        "| published Fashion-MNIST |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    problems = []
    for exp in sorted(by_exp):
        runs = sorted(by_exp[exp], key=lambda r: (r["ranks"], r["run_dir"]))
        single = {r["epochs_completed"]: r for r in runs if r["ranks"] == 1}
        for r in runs:
            ref = single.get(r["epochs_completed"]) if r["ranks"] > 1 else None
            gap = None if ref is None or r["test_accuracy"] is None else \
                100 * (r["test_accuracy"] - ref["test_accuracy"])
            exp_acc = r.get("expected_accuracy")
            expected = "–" if not exp_acc else (
                f"≥ {exp_acc['expected']:.2f} " + ("met" if exp_acc["met"] else "**not met**"))
            if exp_acc and not exp_acc["met"]:
                problems.append(f"{exp} on {r['ranks']} rank(s): {r['test_accuracy']:.4f} < "
                                f"{exp_acc['expected']}")
            if gap is not None and abs(gap) > 0.5:
                problems.append(f"{exp}: {r['ranks']} ranks {gap:+.2f} pp from 1 rank")
            if not (r.get("ranks_in_sync") or {}).get("ok"):
                problems.append(f"{exp} on {r['ranks']} rank(s): ranks not in sync")
            ips = r["images_per_s"]["mean"]
            t = r.get("training", {})
            sched = t.get("lr_schedule", "constant")
            optim = f"{t.get('optimizer', '?')} {t.get('learning_rate', 0):g}" + (
                f" {sched}" if sched != "constant" else "")
            rows.append(
                f"| {exp} | {_label(r)} | {r['dataset']['dataset']} | {r['ranks']} × "
                f"{r['nodes']} | {r['epochs_completed']} | {r['global_batch_size']} | "
                f"{optim} | **{_pct(r['test_accuracy'])}** | "
                f"{'–' if gap is None else f'{gap:+.2f} pp'} | {expected} | "
                f"{r.get('train_s_all_segments', r['train_s']):.0f} s | "
                f"{'–' if ips is None else f'{ips:,.0f}'} | {_pct(_workshop(r))} | "
                f"{FASHION_BASELINE.get(r['model'], '–')} |")
    lines = [f"# {title}", "", *rows, ""]
    lines += ["Problems: " + "; ".join(problems) if problems else
              "Every run met its expected accuracy, every multi-rank run is within 0.5 pp of "
              "its 1-rank run, and all ranks ended in sync.", ""]
    return "\n".join(lines)

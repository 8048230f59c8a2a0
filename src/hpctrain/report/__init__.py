"""Reports, step 4 of the pipeline: what a run measured, for people and for scripts.

    run_report.py      report.json (everything, with units) and report.md of one run
    statistics.py      throughput and its interval, time to accuracy
    accuracy_table.py  several runs side by side with the workshops' figures
    step_times.py      per-rank step times: stragglers and slow nodes named
    pictures.py        learning curves, confusion matrix, example grids (matplotlib)
    commands.py        `hpctrain predict`; missing pictures drawn again
    rendered.py        markdown blocks rendered from stored JSON, never typed by hand
"""

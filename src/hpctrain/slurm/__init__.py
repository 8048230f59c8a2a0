"""Slurm jobs, step 2 of the pipeline: a request becomes a job script, then a job.

    request.py       profile + experiment config + overrides -> one checked request
    profiles.py      cluster profiles (what a cluster offers, how jobs run there)
    script.py        JobSpec and the pure renderer of the sbatch templates (job_templates/)
    client.py        the one Slurm client: sbatch, scancel, sacct, squeue, waiting
    submit.py        `hpctrain submit` (and chains stage -> train -> report)
    sweep.py         `hpctrain sweep`: a job array (or submitit) over a parameter grid
    status.py        `hpctrain status`: runs and what became of their jobs
    interactive.py   `hpctrain interactive`: salloc / srun --pty lines
    postmortem.py    which rank failed and why, from the launcher's lines
"""

"""The runs of a job on disk: which one is finished, which ones are left over from a stop.

OmniSafe's logger puts a run in ``<exp_dir>/<Algo>-{<env_id>}/seed-XXX-<time>/``. A run is
finished when its last epoch is logged and saved: ``progress.csv`` has one row per epoch of
``config.json``'s ``train_cfgs.epochs`` and ``torch_save/epoch-<epochs>.pt`` exists (OmniSafe saves
the policy after the last epoch's row, so the two together mean the run ran to its end). Anything
else under the job's name is an interrupted run. The newest one that holds the plug-in's resume
checkpoint (``checkpoints/last.pt``, which MetaCPO, MetaCPOPaper and MetaTRPO write after every
meta-iteration) goes on from there (``train_cfgs.resume``: a resumed run repeats exactly what the
uninterrupted run does, see :mod:`omnisafe_metacpo.checkpoint`); the others are removed and their
job trains again from the start (stock OmniSafe algorithms cannot resume).
"""

from __future__ import annotations

import glob
import json
import os
import shutil

from benchmarks.figure5.budget import Job
from omnisafe_metacpo.run_files import has_checkpoint


def job_run_dirs(job: Job) -> list[str]:
    """Run directories of ``job`` (same algorithm, env and seed), oldest first."""
    pattern = os.path.join(job.exp_dir, f'{job.algo}-{{{job.env_id}}}', f'seed-{job.seed:03d}-*')
    return sorted(path for path in glob.glob(pattern) if os.path.isdir(path))


def progress_rows(run_dir: str) -> int:
    """Data rows in the run's ``progress.csv`` (epochs logged so far)."""
    path = os.path.join(run_dir, 'progress.csv')
    if not os.path.exists(path):
        return 0
    with open(path, encoding='utf-8') as file:
        return max(sum(1 for line in file if line.strip()) - 1, 0)


def run_epochs(run_dir: str) -> int | None:
    """Epochs the run was configured to train (``None`` before its config is written)."""
    path = os.path.join(run_dir, 'config.json')
    if not os.path.exists(path):
        return None
    with open(path, encoding='utf-8') as file:
        return int(json.load(file)['train_cfgs']['epochs'])


def is_finished(run_dir: str) -> bool:
    """Whether the run logged and saved its last epoch."""
    epochs = run_epochs(run_dir)
    if epochs is None:
        return False
    final = os.path.join(run_dir, 'torch_save', f'epoch-{epochs}.pt')
    return os.path.exists(final) and progress_rows(run_dir) >= epochs


def finished_run(job: Job) -> str | None:
    """The job's finished run directory, if any (the newest when there are several)."""
    finished = [run for run in job_run_dirs(job) if is_finished(run)]
    return finished[-1] if finished else None


def resumable_run(job: Job) -> str | None:
    """The job's newest interrupted run if it can go on from a resume checkpoint, else ``None``."""
    unfinished = [run for run in job_run_dirs(job) if not is_finished(run)]
    if unfinished and has_checkpoint(unfinished[-1]):
        return unfinished[-1]
    return None


def remove_unfinished(job: Job, keep: str | None = None) -> list[str]:
    """Delete the job's interrupted runs but ``keep`` (before it trains again); returns them."""
    removed = [run for run in job_run_dirs(job) if not is_finished(run) and run != keep]
    for run in removed:
        shutil.rmtree(run, ignore_errors=True)
    return removed

"""Runs the jobs of a budget in a process pool, skipping what is done, and reports progress.

Training goes through ``omnisafe.utils.exp_grid_tools.train``, the function ``omnisafe benchmark``
gives its workers, in a pool of spawned processes as ``ExperimentGrid.run`` does. Not through
``ExperimentGrid.run`` itself: it refuses a grid directory that exists (so a stopped comparison
could not be continued) and returns only when every run is over (so it cannot report progress or
meta-test a run as soon as it finishes). Finished runs (:mod:`benchmarks.figure5.runs`) are not
trained again, an interrupted meta-learner's run goes on from its checkpoint, cached meta-tests
(:mod:`benchmarks.figure5.evaluation`) are not redone.

Progress is printed at every finished job and every ``report_every`` seconds: runs done / running
/ to go, meta-tests done / to go, elapsed time and an estimate of the time left. The estimate is
the work left (the per-step costs of :mod:`benchmarks.figure5.costs`, minus the epochs the running
runs have logged) over the number of workers, scaled by how fast the jobs of this session actually
ran against that table.
"""

from __future__ import annotations

import copy
import json
import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from benchmarks.figure5 import costs, evaluation, runs
from benchmarks.figure5.budget import Budget, Job


def _train(job: Job, resume: str | None = None) -> tuple[float, float]:
    """Train one job in a worker (on from the run ``resume`` if given); returns (start, end)."""
    start = time.time()
    from omnisafe.utils.exp_grid_tools import train

    custom_cfgs = copy.deepcopy(job.custom_cfgs)  # train() edits it
    if resume is not None:
        # The resumed run's config.json has lists where the grid has tuples (hidden sizes:
        # ExperimentGrid needs hashable values), and the plug-in refuses to resume a run with a
        # config that compares unequal: give it the values as JSON gives them back.
        custom_cfgs = json.loads(json.dumps(custom_cfgs))
        custom_cfgs.setdefault('train_cfgs', {})['resume'] = resume
    train(job.name, job.algo, job.env_id, custom_cfgs)
    return start, time.time()


def _meta_test(run_dir: str, epochs: list[int], settings: dict[str, Any]) -> tuple[float, float]:
    """Meta-test the given checkpoints of one run in a worker; returns (start, end) times."""
    start = time.time()
    for epoch in epochs:
        evaluation.meta_test_checkpoint(run_dir, epoch, settings)
    return start, time.time()


@dataclass
class _Task:
    """A job in the pool: training or the meta-tests of one run."""

    kind: str  # 'train' | 'test'
    job: Job
    estimate: float  # seconds of one worker, from the cost table
    run_dir: str | None = None  # 'test': the finished run; 'train': the run to resume, if any
    epochs: list[int] = field(default_factory=list)
    logged: int = 0  # 'train': epochs the resumed run had logged before (not in the estimate)


@dataclass
class Summary:
    """What a call of :func:`run_budget` did."""

    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    meta_tests_run: int = 0
    meta_tests_reused: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class _Progress:
    """Counts and the time estimate of one session."""

    def __init__(self, budget: Budget, workers: int, log: Callable[[str], None]) -> None:
        self.budget, self.workers, self.log = budget, workers, log
        self.start = time.time()
        self.runs_total = self.runs_done = 0
        self.tests_total = self.tests_done = 0
        self.running: dict[Future, _Task] = {}
        self.queued_work = 0.0  # estimated seconds of work not yet finished (queued + running)
        self.spent = self.spent_estimate = 0.0  # actual / estimated seconds of finished tasks

    def left(self) -> float:
        """Estimated wall seconds left."""
        partial = 0.0
        for task in self.running.values():  # logged epochs of running trainings are done work
            if task.kind == 'train':
                dirs = runs.job_run_dirs(task.job)
                done = runs.progress_rows(dirs[-1]) - task.logged if dirs else 0
                partial += task.estimate * min(
                    max(done, 0) / max(task.job.epochs - task.logged, 1), 1.0)
        speed = self.spent / self.spent_estimate if self.spent_estimate > 0 else 1.0
        return speed * max(self.queued_work - partial, 0.0) / self.workers

    def report(self, note: str = '') -> None:
        """Print one progress line."""
        running = sum(task.kind == 'train' for task in self.running.values())
        to_go = self.runs_total - self.runs_done - running
        line = (f'[figure5 {self.budget.name}] runs {self.runs_done}/{self.runs_total} done, '
                f'{running} running, {to_go} to go | meta-tests {self.tests_done}/'
                f'{self.tests_total} | elapsed {_clock(time.time() - self.start)} | '
                f'left ~{_clock(self.left())} (estimate)')
        self.log(line + (f' | {note}' if note else ''))


def run_budget(  # pylint: disable=too-many-locals,too-many-branches,too-many-statements
    budget: Budget,
    runs_dir: str,
    workers: int = 2,
    report_every: float = 60.0,
    log: Callable[[str], None] = print,
) -> Summary:
    """Train every job of ``budget`` not yet finished and meta-test every checkpoint not cached.

    Args:
        budget: The budget (grids and meta-test settings).
        runs_dir: Root of the grid directories.
        workers: Processes in the pool (each run uses one thread).
        report_every: Seconds between progress lines while nothing finishes.
        log: Where progress lines go.
    """
    summary = Summary()
    progress = _Progress(budget, workers, log)
    jobs = budget.jobs(runs_dir)
    progress.runs_total = len(jobs)
    train_tasks: list[_Task] = []
    test_tasks: list[_Task] = []
    for job in jobs:
        settings = budget.meta_test_cfgs(job.env_id)
        done = runs.finished_run(job)
        checkpoints = job.checkpoints
        progress.tests_total += len(checkpoints)
        if done is None:
            resume = runs.resumable_run(job)
            for removed in runs.remove_unfinished(job, keep=resume):
                log(f'[figure5 {budget.name}] removed unfinished run {removed}')
            estimate, logged = costs.train_seconds(job), 0
            if resume is not None:
                logged = runs.progress_rows(resume)
                log(f'[figure5 {budget.name}] resuming {resume} after {logged} epochs')
                estimate *= max(1.0 - logged / max(job.epochs, 1), 0.0)
            train_tasks.append(_Task('train', job, estimate, resume, logged=logged))
            continue
        summary.reused.append(done)
        progress.runs_done += 1
        pending = evaluation.pending_epochs(done, settings)
        progress.tests_done += len(checkpoints) - len(pending)
        summary.meta_tests_reused += len(checkpoints) - len(pending)
        if pending:
            test_tasks.append(_Task('test', job, costs.test_seconds(job, settings, len(pending)),
                                    done, pending))
    # Longest first: the pool's last minutes are then spent on short jobs, not one long one.
    train_tasks.sort(key=lambda task: -task.estimate)
    for task in train_tasks:  # their meta-tests will follow: count them as work now
        task_tests = costs.test_seconds(task.job, budget.meta_test_cfgs(task.job.env_id))
        progress.queued_work += task.estimate + task_tests
    progress.queued_work += sum(task.estimate for task in test_tasks)
    log(f'[figure5 {budget.name}] {len(jobs)} runs: {len(jobs) - len(train_tasks)} finished '
        f'(reused), {len(train_tasks)} to train; {progress.tests_total - progress.tests_done} '
        f'meta-tests to run, {progress.tests_done} cached; {workers} workers')

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context('spawn'))
    stopped = False
    try:
        queue = test_tasks + train_tasks  # cached runs' missing meta-tests first: they are short
        while queue or progress.running:
            while queue and len(progress.running) < workers:
                task = queue.pop(0)
                if task.kind == 'train':
                    future = pool.submit(_train, task.job, task.run_dir)
                else:
                    future = pool.submit(_meta_test, task.run_dir, task.epochs,
                                         budget.meta_test_cfgs(task.job.env_id))
                progress.running[future] = task
            finished, _ = wait(list(progress.running), timeout=report_every,
                               return_when=FIRST_COMPLETED)
            if not finished:
                progress.report()
                continue
            for future in finished:
                task = progress.running.pop(future)
                progress.queued_work -= task.estimate
                try:
                    start, end = future.result()
                except Exception as error:  # pylint: disable=broad-except  (reported; the others go on)
                    summary.failed.append(f'{task.kind} {task.job.name}: {error!r}')
                    progress.report(f'FAILED {task.kind} {task.job.name}: {error!r}')
                    if task.kind == 'train':
                        progress.queued_work -= costs.test_seconds(
                            task.job, budget.meta_test_cfgs(task.job.env_id))
                    continue
                progress.spent += end - start
                progress.spent_estimate += task.estimate
                if task.kind == 'test':
                    progress.tests_done += len(task.epochs)
                    summary.meta_tests_run += len(task.epochs)
                    progress.report(f'meta-tested {task.job.name} ({len(task.epochs)} '
                                    f'checkpoints, {_clock(end - start)})')
                    continue
                progress.runs_done += 1
                run_dir = runs.finished_run(task.job)
                if run_dir is None:
                    summary.failed.append(f'train {task.job.name}: no finished run afterwards')
                    progress.report(f'FAILED train {task.job.name}: no finished run')
                    continue
                summary.trained.append(run_dir)
                settings = budget.meta_test_cfgs(task.job.env_id)
                pending = evaluation.pending_epochs(run_dir, settings)
                estimate = costs.test_seconds(task.job, settings, len(pending))
                # Its meta-tests were counted with the nominal checkpoints: use the real ones.
                progress.queued_work += estimate - costs.test_seconds(task.job, settings)
                progress.tests_done += len(task.job.checkpoints) - len(pending)
                queue.insert(0, _Task('test', task.job, estimate, run_dir, pending))
                progress.report(f'trained {task.job.name} ({_clock(end - start)})')
    except KeyboardInterrupt:
        stopped = True
        log(f'[figure5 {budget.name}] stopped: the same command continues (finished runs and '
            'cached meta-tests are kept, interrupted runs start again)')
        raise
    finally:
        # On a stop, the workers got the same signal: do not wait for jobs that will not finish.
        pool.shutdown(wait=not stopped, cancel_futures=True)
    summary.seconds = time.time() - progress.start
    return summary

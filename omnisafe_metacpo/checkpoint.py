"""Resume checkpoints of MetaCPO / MetaTRPO runs.

A checkpoint (``<run>/checkpoints/last.pt``) holds the algorithm's ``state_dict()``: everything a
meta-iteration depends on that is not derived from the seed (theta, the critics and their
optimisers, the observation normaliser, fault counters, the iteration and the number of progress
rows). Rollout seeds, task draws and critic minibatch order are functions of (seed, iteration, ...)
(see :func:`omnisafe_metacpo.sampling.batch.rollout_seed`), so no random-generator state needs
saving: a resumed run repeats exactly what the uninterrupted run does.

Writes are atomic (temporary file, then ``os.replace``), so a run killed at any moment leaves either
the previous or the new checkpoint. On resume, ``progress.csv`` is cut back to the rows that the
checkpoint covers (a row written after the last checkpoint is written again), so no row is lost or
duplicated. Checkpoints live outside ``torch_save/``: OmniSafe's ``Evaluator`` loads every ``.pt``
there as a policy.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from omnisafe.common.logger import Logger
from omnisafe.utils.distributed import get_rank
from torch.utils.tensorboard.writer import SummaryWriter

from omnisafe_metacpo import run_files
from omnisafe_metacpo.config import MetaConfigError

# Config sections that must match for a resumed run to continue the same experiment.
_MUST_MATCH = ('algo', 'env_id', 'seed', 'algo_cfgs', 'model_cfgs', 'meta_test_cfgs', 'env_cfgs')
# Keys that change what is reported, not what is trained: they may differ on resume (a run saved
# before the deterministic evaluation existed resumes with it; its older progress rows are left
# empty in the new columns, see ``align_progress``).
_REPORTING_KEYS: tuple[tuple[str, str], ...] = (('meta_test_cfgs', 'eval_episodes'),)


def save(state: dict[str, Any], log_dir: str) -> None:
    """Write ``state`` (the algorithm's ``state_dict()``) as the run's checkpoint, atomically;
    rank 0 only (ranks share the state)."""
    if get_rank() != 0:
        return
    path = run_files.checkpoint_path(log_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix='.tmp')
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def load(run_dir: str, cfgs: Any,
         added_keys: Mapping[tuple[str, str], Any] | None = None) -> dict[str, Any]:
    """Read the checkpoint of ``run_dir`` and check that ``cfgs`` continues the same experiment.

    Args:
        run_dir: The run to resume.
        cfgs: The config of the resumed run.
        added_keys: Config keys added after runs were saved, ``(section, key) -> value``, each
            with the value that does what the code did before the key existed: a config without
            one of them (the saved run's, or the current one's) has it at that value, so a run
            of an older version can be resumed or extended with more total_steps as long as the
            key stays at that value.
    """
    saved = run_files.load_config(run_dir)
    # compared as config.json holds it: a tuple given through the Python API (hidden sizes for
    # ExperimentGrid, which needs hashable values) is a list there, and means the same run
    current = json.loads(json.dumps(cfgs.todict()))
    for (section, key), before in (added_keys or {}).items():
        for config in (saved, current):
            if isinstance(config.get(section), dict) and key not in config[section]:
                config[section][key] = before
    for section, key in _REPORTING_KEYS:
        for config in (saved, current):
            if isinstance(config.get(section), dict):
                config[section].pop(key, None)
    different = [key for key in _MUST_MATCH if saved.get(key) != current.get(key)]
    if different:
        raise MetaConfigError(
            f'train_cfgs.resume = {run_dir!r}: the run was started with other '
            f'{", ".join(different)}'
            ' (resume with the same algorithm, env id, seed and algo/model/meta-test/env configs;'
            ' only train_cfgs such as total_steps may change)',
        )
    if cfgs.logger_cfgs.use_wandb:
        raise MetaConfigError(
            'logger_cfgs.use_wandb = True is not supported with train_cfgs.resume',
        )
    return torch.load(run_files.checkpoint_path(run_dir), weights_only=True, map_location='cpu')


def align_progress(run_dir: str, columns: list[str]) -> None:
    """Give a resumed run's ``progress.csv`` the columns the logger now writes, in its order.

    A run saved by an older version lacks the columns added since (e.g. ``Metrics/EpDiscCost``):
    its rows keep their values under their names and the new columns are left empty in them, so
    that the rows appended now line up with the header. A column the logger no longer writes is
    an error: its values would be lost.
    """
    path = run_files.progress_path(run_dir)
    with open(path, encoding='utf-8', newline='') as file:
        lines = list(csv.reader(file))
    if not lines or lines[0] == columns:
        return
    header = lines[0]
    dropped = sorted(set(header) - set(columns))
    if dropped:
        raise MetaConfigError(f'train_cfgs.resume = {run_dir!r}: progress.csv has columns this '
                              f'version does not write: {dropped}')
    rows = [dict(zip(header, line, strict=True)) for line in lines[1:]]
    with open(path, 'w', encoding='utf-8', newline='') as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows([row.get(name, '') for name in columns] for row in rows)


def _truncate_progress(path: str, rows: int) -> None:
    with open(path, encoding='utf-8', newline='') as file:
        lines = list(csv.reader(file))
    with open(path, 'w', encoding='utf-8', newline='') as file:
        csv.writer(file).writerows(lines[: rows + 1])  # header + rows


def resumed_logger(run_dir: str, state: dict[str, Any], cfgs: Any) -> Logger:
    """An OmniSafe ``Logger`` that appends to ``run_dir`` instead of starting a new directory.

    ``Logger.__init__`` always creates ``<log_dir>/<exp_name>/seed-XXX-<time>/``. It is run in a
    scratch directory (that is removed) and the logger is then pointed at the run being resumed:
    its ``progress.csv`` opened for appending after the checkpointed rows, its epoch counter set,
    and a new TensorBoard event file in its ``tb/``. On ranks other than 0 (``--parallel``),
    which write nothing, it is a plain OmniSafe ``Logger`` (which creates no file there): the
    run's files are rank 0's.
    """
    if get_rank() != 0:
        return Logger(output_dir=run_dir, exp_name='resume', seed=int(cfgs.seed),
                      use_tensorboard=False, use_wandb=False, config=None)
    rows = int(state['progress_rows'])
    progress = run_files.progress_path(run_dir)
    _truncate_progress(progress, rows)
    scratch = tempfile.mkdtemp(prefix='metacpo-resume-')
    try:
        logger = Logger(output_dir=scratch, exp_name='resume', seed=int(cfgs.seed),
                        use_tensorboard=False, use_wandb=False, config=None)
        logger._output_file.close()  # pylint: disable=protected-access
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    # pylint: disable=protected-access
    logger._log_dir = run_dir
    logger._output_file = open(progress, encoding='utf-8', mode='a')  # noqa: SIM115
    logger._csv_writer = csv.writer(logger._output_file)
    logger._first_row = rows == 0
    logger._epoch = rows
    logger._config = cfgs
    logger._use_tensorboard = bool(cfgs.logger_cfgs.use_tensorboard)
    if logger._use_tensorboard:
        logger._tensorboard_writer = SummaryWriter(log_dir=os.path.join(run_dir, 'tb'))
    logger.log(f'Resuming {run_dir} after {rows} meta-iterations', 'cyan', bold=True)
    return logger

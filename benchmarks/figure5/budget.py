"""A Figure-5 budget: OmniSafe experiment grids and the meta-test settings, from one YAML file.

The file (``benchmarks/grids/figure5_<budget>.yaml``) holds

* ``grids``: named grids in the format of ``omnisafe benchmark`` (nested keys joined by ':', a list
  of values each), one per environment and algorithm family: the grid check of OmniSafe rejects
  keys an algorithm does not have (TRPO has no ``cost_limit``, CPO no ``meta_test_cfgs``);
* ``meta_test``: the ``meta_test_cfgs`` every trained algorithm is meta-tested with (``defaults``
  plus sections per env id, OmniSafe's layout); the test-time cost limit is MetaCPO.yaml's for the
  env (5 on MetaCarCircleHazard-v0) unless the file sets one.

A grid may have a ``label`` (a plain string, not a list): the name its runs go by in the tables
and plots instead of the algorithm's, so that variants of one algorithm (an ablation: MetaCPO
with one setting changed per grid) are told apart. Tables group runs by (env id, variant), the
variant being the label or else the algorithm, so one variant must be one configuration: two
grids (or two values of a grid key) that differ in more than the seed must have different labels.

Each grid is an OmniSafe :class:`ExperimentGrid`: its variants, their validation and the layout of
their directories (``<runs>/<grid>/grid_config.json``, ``<env>---<hash>/exps_config.json`` and the
runs below) are ExperimentGrid's, so ``omnisafe analyze-grid <runs>/<grid>`` works on each.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import yaml
from omnisafe.common.experiment_grid import ExperimentGrid
from omnisafe.utils.tools import hash_string, recursive_dict2json

from omnisafe_metacpo.evaluation.rule import metacpo_defaults

GRIDS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'grids')


@dataclass(frozen=True)
class Job:
    """One training run of a grid: a variant and one seed.

    Attributes:
        grid: The grid's name.
        exp_dir: The variant's directory (all seeds of one variant share it, as in OmniSafe).
        custom_cfgs: What ``omnisafe.Agent`` gets (``logger_cfgs.log_dir`` = ``exp_dir``).
        epochs: Epochs the run trains (total_steps // steps_per_epoch).
        steps_per_epoch: Environment steps per epoch.
        save_model_freq: Epochs between saved checkpoints (``logger_cfgs.save_model_freq``).
        label: The grid's ``label`` (``None``: the runs go by the algorithm's name).
    """

    grid: str
    exp_dir: str
    custom_cfgs: dict[str, Any]
    epochs: int
    steps_per_epoch: int
    save_model_freq: int
    label: str | None = None

    @property
    def algo(self) -> str:
        """The algorithm's registry name."""
        return self.custom_cfgs['algo']

    @property
    def env_id(self) -> str:
        """The environment id."""
        return self.custom_cfgs['env_id']

    @property
    def seed(self) -> int:
        """The run's seed."""
        return int(self.custom_cfgs.get('seed', 0))

    @property
    def variant(self) -> str:
        """The name the run goes by in tables and plots: the grid's label, else the algorithm."""
        return self.label or self.algo

    @property
    def total_steps(self) -> int:
        """Environment steps the run trains (whole epochs)."""
        return self.epochs * self.steps_per_epoch

    @property
    def checkpoints(self) -> list[int]:
        """The epochs N of the ``torch_save/epoch-N.pt`` the run will save.

        OmniSafe saves the initial policy (0), every ``save_model_freq`` epochs and after the last.
        """
        saved = set(range(0, self.epochs + 1, max(self.save_model_freq, 1)))
        return sorted(saved | {self.epochs})

    @property
    def name(self) -> str:
        """A short label for logs."""
        name = self.algo if self.label is None else f'{self.label} ({self.algo})'
        return f'{name}/{self.env_id}/seed {self.seed}'


def budget_path(budget: str) -> str:
    """``budget`` itself if it is a YAML file, else ``grids/figure5_<budget>.yaml``."""
    if budget.endswith(('.yaml', '.yml')):
        return budget
    return os.path.join(GRIDS_DIR, f'figure5_{budget}.yaml')


class Budget:
    """The grids and meta-test settings of one budget file.

    Args:
        path: The budget YAML.
    """

    def __init__(self, path: str) -> None:
        with open(path, encoding='utf-8') as file:
            # FullLoader as `omnisafe benchmark` reads grids: tuples (!!python/tuple) are the
            # only way to give list values such as hidden sizes, since ExperimentGrid.add hashes
            # every value.
            spec = yaml.load(file, Loader=yaml.FullLoader)
        self.path = path
        self.name = str(spec.get('name', os.path.splitext(os.path.basename(path))[0]))
        self.grids: dict[str, ExperimentGrid] = {}
        self.labels: dict[str, str] = {}
        for grid_name, keys in spec['grids'].items():
            keys = dict(keys)
            label = keys.pop('label', None)  # the harness's, not a config key: not in the grid
            if label is not None:
                if not isinstance(label, str):
                    raise ValueError(f'{path}: grid {grid_name}: label {label!r} is not a string')
                self.labels[grid_name] = label
            grid = ExperimentGrid(exp_name=grid_name)
            for key, values in keys.items():
                grid.add(key, values)
            self.grids[grid_name] = grid
        self._meta_test: dict[str, Any] = spec.get('meta_test') or {}
        # What :meth:`select` keeps (None: everything).
        self.only_envs: set[str] | None = None
        self.only_names: set[str] | None = None

    def select(self, env_ids: list[str] | None = None,
               names: list[str] | None = None) -> Budget:
        """A copy of the budget with only the runs on ``env_ids`` and of ``names``.

        Args:
            env_ids: Env ids (``None``: all).
            names: Variants (``None``: all): a grid's label, or the algorithm of a grid without
                one (so ``MetaCPO`` does not select the labelled variants of MetaCPO).

        Raises:
            SystemExit: A name or env id that the budget does not have.
        """
        for given, known, what in ((env_ids, self.env_ids(), 'env ids'),
                                   (names, self.variants(), 'algorithms and labels')):
            unknown = sorted(set(given or ()) - set(known))
            if unknown:
                raise SystemExit(f'{" ".join(unknown)}: not in budget {self.name} (its {what}: '
                                 f'{", ".join(known)})')
        selected = copy.copy(self)
        selected.only_envs = None if env_ids is None else set(env_ids)
        selected.only_names = None if names is None else set(names)
        return selected

    def _variants(self) -> Iterator[tuple[str, dict[str, Any], str | None]]:
        """(grid name, variant, label) of every selected variant of every grid, in order."""
        for grid_name, grid in self.grids.items():
            label = self.labels.get(grid_name)
            for variant in grid.variants():
                if self.only_envs is not None and variant['env_id'] not in self.only_envs:
                    continue
                if self.only_names is not None \
                        and (label or variant['algo']) not in self.only_names:
                    continue
                yield grid_name, variant, label

    def env_ids(self) -> list[str]:
        """Env ids of all grids, in order of first appearance."""
        return list(dict.fromkeys(variant['env_id'] for _, variant, _ in self._variants()))

    def algos(self) -> list[str]:
        """Algorithms of all grids, in order of first appearance."""
        return list(dict.fromkeys(variant['algo'] for _, variant, _ in self._variants()))

    def variants(self) -> list[str]:
        """What the runs of all grids go by (labels or algorithms), in order of appearance."""
        return list(dict.fromkeys(label or variant['algo']
                                  for _, variant, label in self._variants()))

    def algo_of(self) -> dict[str, str]:
        """The algorithm of each variant (:meth:`variants`)."""
        return {label or variant['algo']: variant['algo']
                for _, variant, label in self._variants()}

    def meta_test_cfgs(self, env_id: str) -> dict[str, Any]:
        """The ``meta_test_cfgs`` overrides every run on ``env_id`` is meta-tested with."""
        defaults = metacpo_defaults(env_id)
        settings = {key: defaults.meta_test_cfgs[key]
                    for key in ('num_tasks', 'adapt_steps', 'rollout_steps', 'cost_limit')}
        settings.update(self._meta_test.get('defaults') or {})
        settings.update(self._meta_test.get(env_id) or {})
        if settings['cost_limit'] is None:  # MetaCPO.yaml: null means the training limit
            settings['cost_limit'] = float(defaults.algo_cfgs.cost_limit)
        return settings

    def jobs(self, runs_dir: str, write: bool = True) -> list[Job]:
        """Every (variant, seed) of every grid, validated, with its directory under ``runs_dir``.

        With ``write``, each grid's ``grid_config.json`` and each variant's ``exps_config.json``
        are written (once), as ``ExperimentGrid.run`` does, so that OmniSafe's statistics tools can
        read the tree.
        """
        jobs = []
        # OmniSafe prints a line per YAML it loads and per grid config it saves: kept off the
        # progress output.
        with contextlib.redirect_stdout(io.StringIO()):
            for grid_name, grid in self.grids.items():
                variants = [variant for name, variant, _ in self._variants() if name == grid_name]
                if variants:
                    jobs.extend(self._grid_jobs(grid_name, grid, variants, runs_dir, write,
                                                self.labels.get(grid_name)))
        # Tables average the seeds of one (env id, variant): two configurations under one name
        # would be averaged together without a word.
        configurations: dict[tuple[str, str], set[str]] = {}
        for job in jobs:
            configurations.setdefault((job.env_id, job.variant), set()).add(job.exp_dir)
        for (env_id, variant), exp_dirs in configurations.items():
            if len(exp_dirs) > 1:
                raise ValueError(
                    f'{self.path}: {len(exp_dirs)} configurations of {variant} on {env_id} '
                    f'({", ".join(sorted(os.path.relpath(d, runs_dir) for d in exp_dirs))}): '
                    'give each grid a label of its own, and each grid one value per key '
                    'but the seed')
        return jobs

    @staticmethod
    def _grid_jobs(  # pylint: disable=too-many-arguments
        grid_name: str,
        grid: ExperimentGrid,
        variants: list[dict[str, Any]],
        runs_dir: str,
        write: bool,
        label: str | None = None,
    ) -> list[Job]:
        """The jobs of one grid (see :meth:`jobs`)."""
        from omnisafe.algorithms import ALGORITHM2TYPE

        from omnisafe_metacpo.plugin.configs import load_default_config

        jobs = []
        grid.log_dir = os.path.join(runs_dir, grid_name)
        if write and not os.path.exists(os.path.join(grid.log_dir, 'grid_config.json')):
            grid.save_grid_config()
        for variant in variants:
            grid.check_variant_vaild(variant)
            # The directory name of ExperimentGrid.run: env id and a hash of the variant
            # without its seed (so the seeds of a variant share one directory).
            clean = copy.deepcopy(variant)
            clean.pop('seed', None)
            exp_dir = os.path.join(
                grid.log_dir, variant['env_id'][:30] + '---' + hash_string(
                    recursive_dict2json(clean)))
            custom_cfgs = copy.deepcopy(variant)
            custom_cfgs.setdefault('logger_cfgs', {})['log_dir'] = exp_dir
            exps_config = os.path.join(exp_dir, 'exps_config.json')
            if write and not os.path.exists(exps_config):
                os.makedirs(exp_dir, exist_ok=True)
                with open(exps_config, 'w', encoding='utf-8') as file:
                    file.write('\n' + json.dumps(custom_cfgs, indent=4))
            config = load_default_config(variant['algo'], variant['env_id'],
                                         ALGORITHM2TYPE[variant['algo']])
            config.recurisve_update(variant)
            steps_per_epoch = int(config.algo_cfgs.steps_per_epoch)
            epochs = int(config.train_cfgs.total_steps) // steps_per_epoch
            jobs.append(Job(grid_name, exp_dir, custom_cfgs, epochs, steps_per_epoch,
                            int(config.logger_cfgs.save_model_freq), label))
        return jobs

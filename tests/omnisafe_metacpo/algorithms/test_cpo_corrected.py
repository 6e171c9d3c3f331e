"""Tests of CPOCorrected (``omnisafe_metacpo.algorithms.cpo_corrected``).

The step of each algorithm is read where its real ``_update_actor`` hands it to the line search
``_cpo_search_step`` (the real method is called through). The reference is a direct cvxpy solve of
``max g'x s.t. 0.5 x'Hx <= delta, b + a'x <= 0`` (or of the recovery problem), with ``H`` the
Fisher matrix (plus damping) of a tiny real OmniSafe actor, built column by column from OmniSafe's
own ``_fvp``, and ``g``, ``a`` the surrogate gradients computed here by hand.
"""

from __future__ import annotations

import csv
import glob
import math
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import omnisafe
import pytest
import torch
import yaml
from omnisafe.algorithms.on_policy.second_order.cpo import CPO
from omnisafe.utils.tools import get_flat_params_from, set_param_values_to_model

from omnisafe_metacpo.algorithms import CPOCorrected
from omnisafe_metacpo.plugin.configs import configs_dir
from tests.conftest import BIN

DELTA = 0.01  # OmniSafe's target_kl default
ENV_ID = 'MetaPointCircle-v0'


# ------------------------------------------------------------------------------------------------
# Registration and configuration
# ------------------------------------------------------------------------------------------------
def test_registered_as_an_on_policy_algorithm_of_omnisafe() -> None:
    from omnisafe.algorithms import ALGORITHM2TYPE, ALGORITHMS, registry

    assert 'CPOCorrected' in ALGORITHMS['all'] and 'CPOCorrected' in ALGORITHMS['on-policy']
    assert ALGORITHM2TYPE['CPOCorrected'] == 'on-policy'
    assert registry.get('CPOCorrected') is CPOCorrected
    assert issubclass(CPOCorrected, CPO) and registry.get('CPO') is CPO  # stock CPO untouched


def test_yaml_is_omnisafe_cpo_defaults_plus_env_cfgs_and_cost_measure() -> None:
    import omnisafe.utils.config as omnisafe_config

    stock_path = os.path.join(os.path.dirname(omnisafe_config.__file__), '..', 'configs',
                              'on-policy', 'CPO.yaml')
    with open(stock_path, encoding='utf-8') as file:
        stock = yaml.safe_load(file)['defaults']
    with open(os.path.join(configs_dir(), 'CPOCorrected.yaml'), encoding='utf-8') as file:
        ours = yaml.safe_load(file)['defaults']
    assert ours.pop('env_cfgs') == {}
    # the one key of its own, whose default keeps stock CPO's scales
    assert ours['algo_cfgs'].pop('cost_measure') == 'omnisafe'
    assert ours == stock


# ------------------------------------------------------------------------------------------------
# The step, against a direct solve of the QP
# ------------------------------------------------------------------------------------------------
@dataclass
class Instance:
    """A policy update's data and its QP's ingredients, in float64."""

    obs: torch.Tensor
    act: torch.Tensor
    logp: torch.Tensor
    adv_r: torch.Tensor
    adv_c: torch.Tensor
    g: torch.Tensor
    a: torch.Tensor
    h: torch.Tensor

    @property
    def reach(self) -> float:
        """``sqrt(2 delta a'H^-1 a)``: the largest ``|a'x|`` in the trust region."""
        return math.sqrt(2 * DELTA * float(self.a @ torch.linalg.solve(self.h, self.a)))

    @property
    def trpo_cost(self) -> float:
        """``a'x_t`` for the TRPO step ``x_t = sqrt(2 delta / g'H^-1 g) H^-1 g``."""
        u = torch.linalg.solve(self.h, self.g)
        return math.sqrt(2 * DELTA / float(self.g @ u)) * float(self.a @ u)


@pytest.fixture(scope='module')
def algos() -> Iterator[dict[str, Any]]:
    """A stock CPO and a CPOCorrected with the same tiny actor (128 parameters), not trained."""
    log_dir = f'/tmp/metacpo_test_cpoc_{uuid.uuid4().hex}'
    built = {}
    for name in ('CPO', 'CPOCorrected'):
        built[name] = omnisafe.Agent(name, ENV_ID, custom_cfgs={
            'seed': 0,
            'train_cfgs': {'total_steps': 1000, 'torch_threads': 1},
            # CG close to exact for both, so that only the algebra can differ
            'algo_cfgs': {'steps_per_epoch': 500, 'update_iters': 1, 'cg_iters': 100},
            'model_cfgs': {'actor': {'hidden_sizes': [4]}, 'critic': {'hidden_sizes': [4]}},
            'logger_cfgs': {'log_dir': log_dir, 'use_tensorboard': False},
        }).agent
    state = built['CPO']._actor_critic.actor.state_dict()
    built['CPOCorrected']._actor_critic.actor.load_state_dict(state)
    for algo in built.values():
        algo._logger.store({'Metrics/EpCost': 0.0})  # so that b = -cost_limit
    yield built
    shutil.rmtree(log_dir, ignore_errors=True)


@pytest.fixture(scope='module')
def instance(algos: dict[str, Any]) -> Instance:
    """Random data on the actor; cost advantages correlated with reward advantages (r > 0)."""
    algo = algos['CPO']
    actor = algo._actor_critic.actor
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(64, 28, generator=gen)
    with torch.no_grad():
        dist = actor(obs)
        act = dist.mean + dist.stddev * torch.randn(64, 2, generator=gen)
        actor(obs)  # log_prob reads the distribution of the last forward pass
        logp = actor.log_prob(act)
    adv_r = torch.randn(64, generator=gen)
    adv_c = 0.6 * adv_r + 0.8 * torch.randn(64, generator=gen)

    params = [param for param in actor.parameters() if param.requires_grad]

    def surrogate_gradient(adv: torch.Tensor) -> torch.Tensor:
        actor(obs)
        ratio = torch.exp(actor.log_prob(act) - logp)
        grads = torch.autograd.grad((ratio * adv).mean(), params)
        return torch.cat([grad.reshape(-1) for grad in grads]).double()

    g, a = surrogate_gradient(adv_r), surrogate_gradient(adv_c)
    algo._fvp_obs = obs
    columns = [algo._fvp(e) for e in torch.eye(g.numel())]
    h = torch.stack(columns).double()
    h = 0.5 * (h + h.T)  # symmetric up to float32 rounding
    return Instance(obs, act, logp, adv_r, adv_c, g, a, h)


def solve_qp(inst: Instance, b: float) -> torch.Tensor:
    """CPO's step by cvxpy: the QP if feasible, else the recovery problem (eq. 4)."""
    import cvxpy as cp

    x = cp.Variable(inst.g.numel())
    chol = np.linalg.cholesky(inst.h.numpy())
    trust_region = 0.5 * cp.sum_squares(chol.T @ x) <= DELTA
    if b <= inst.reach:
        objective = cp.Maximize(inst.g.numpy() @ x)
        problem = cp.Problem(objective, [trust_region, b + inst.a.numpy() @ x <= 0])
    else:
        problem = cp.Problem(cp.Minimize(inst.a.numpy() @ x), [trust_region])
    problem.solve(solver=cp.CLARABEL)
    assert problem.status == cp.OPTIMAL
    return torch.from_numpy(x.value)


def step_of(algo: Any, inst: Instance, b: float, monkeypatch: pytest.MonkeyPatch,
            ) -> tuple[torch.Tensor, int]:
    """Run the algorithm's real ``_update_actor`` with ``b = J_C - h``; its step and case.

    The step is what ``_update_actor`` passes to the line search; the actor is restored after.
    """
    seen: list[dict[str, Any]] = []
    search = algo._cpo_search_step

    def recording_search(**kwargs: Any) -> tuple[torch.Tensor, int]:
        seen.append(kwargs)
        return search(**kwargs)

    monkeypatch.setattr(algo, '_cpo_search_step', recording_search)
    monkeypatch.setitem(algo._cfgs.algo_cfgs, 'cost_limit', -b)  # EpCost window mean is 0
    actor = algo._actor_critic.actor
    theta = get_flat_params_from(actor).clone()
    try:
        algo._update_actor(inst.obs, inst.act, inst.logp, inst.adv_r, inst.adv_c)
    finally:
        set_param_values_to_model(actor, theta)
    (call,) = seen
    return call['step_direction'].detach().double(), int(call['optim_case'])


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref))


# b as a multiple of the instance's reach or TRPO cost, and OmniSafe's case number for it.
ACTIVE = {
    'case_1_infeasible_start_feasible_step': (lambda inst: 0.5 * inst.reach, 1),
    'case_2_feasible_start_constraint_binds': (lambda inst: -0.5 * inst.trpo_cost, 2),
}
STOCK_RIGHT = {
    'case_0_infeasible_recovery': (lambda inst: 1.5 * inst.reach, 0),
    'case_3_whole_region_feasible': (lambda inst: -1.5 * inst.reach, 3),
}


@pytest.mark.parametrize('name', list(ACTIVE))
def test_step_solves_the_qp_where_stock_cpo_does_not(
    algos: dict[str, Any], instance: Instance, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    b_of, omnisafe_case = ACTIVE[name]
    b = b_of(instance)
    ref = solve_qp(instance, b)
    # Both constraints bind at the optimum: this is where r enters the dual solution.
    assert abs(b + float(instance.a @ ref)) < 1e-6 * instance.reach
    assert 0.5 * float(ref @ instance.h @ ref) == pytest.approx(DELTA, rel=1e-6)

    corrected, corrected_case = step_of(algos['CPOCorrected'], instance, b, monkeypatch)
    stock, stock_case = step_of(algos['CPO'], instance, b, monkeypatch)
    assert corrected_case == stock_case == omnisafe_case  # same case, same line-search rules
    assert rel_err(corrected, ref) < 1e-4

    # Stock CPO on the same instance: a different step, infeasible or with less reward.
    assert rel_err(stock, ref) > 0.1
    violates = (b + float(instance.a @ stock) > 1e-3 * instance.reach
                or 0.5 * float(stock @ instance.h @ stock) > DELTA * 1.001)
    worse = float(instance.g @ stock) < float(instance.g @ ref) * 0.99
    assert violates or worse


@pytest.mark.parametrize('name', list(STOCK_RIGHT))
def test_recovery_and_trpo_steps_are_the_stock_ones(
    algos: dict[str, Any], instance: Instance, monkeypatch: pytest.MonkeyPatch, name: str,
) -> None:
    # r does not enter these cases: stock CPO is right there, and both agree with the solver.
    b_of, omnisafe_case = STOCK_RIGHT[name]
    b = b_of(instance)
    ref = solve_qp(instance, b)
    corrected, corrected_case = step_of(algos['CPOCorrected'], instance, b, monkeypatch)
    stock, stock_case = step_of(algos['CPO'], instance, b, monkeypatch)
    assert corrected_case == stock_case == omnisafe_case
    assert rel_err(corrected, ref) < 1e-4
    # (OmniSafe's CG adds 1e-6 to its denominators: agreement to ~1e-3 only.)
    assert rel_err(stock, ref) < 1e-2


# ------------------------------------------------------------------------------------------------
# Stock entry points: CLI, Agent, Evaluator, benchmark grid
# ------------------------------------------------------------------------------------------------
SMALL = ['algo_cfgs:steps_per_epoch', '500', 'algo_cfgs:update_iters', '1',
         'train_cfgs:torch_threads', '1', 'logger_cfgs:use_tensorboard', 'False']


def _rows(run: str) -> list[dict[str, str]]:
    with open(os.path.join(run, 'progress.csv'), encoding='utf-8') as file:
        return list(csv.DictReader(file))


def test_cli_train_then_omnisafe_eval(run_dir: str) -> None:
    args = [os.path.join(BIN, 'omnisafe'), 'train', '--algo', 'CPOCorrected', '--env-id', ENV_ID,
            '--total-steps', '1000', '--log-dir', run_dir]
    for token in (*SMALL, 'env_cfgs:split', 'test', 'env_cfgs:task_seed', '7'):
        args += ['--custom-cfgs', token]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=run_dir,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    experiment = os.path.join(run_dir, 'train', f'CPOCorrected-{{{ENV_ID}}}')
    (seed_dir,) = os.listdir(experiment)
    run = os.path.join(experiment, seed_dir)
    rows = _rows(run)
    assert [float(row['TotalEnvSteps']) for row in rows] == [500.0, 1000.0]
    for key in ('Misc/OptimCase', 'Misc/Lambda_star', 'Misc/Nu_star', 'Misc/AcceptanceStep',
                'Metrics/EpCost'):
        assert rows[-1][key] not in ('', 'nan'), key
    with open(os.path.join(run, 'config.json'), encoding='utf-8') as file:
        text = file.read()
    assert '"algo": "CPOCorrected"' in text and '"split": "test"' in text

    result = subprocess.run([os.path.join(BIN, 'omnisafe'), 'eval', experiment,
                             '--num-episode', '1', '--no-render'], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Average episode length: 500.0' in result.stdout


def test_agent_learn_and_evaluate(run_dir: str) -> None:
    agent = omnisafe.Agent('CPOCorrected', ENV_ID, custom_cfgs={
        'seed': 2,
        'train_cfgs': {'total_steps': 1000, 'torch_threads': 1},
        'algo_cfgs': {'steps_per_epoch': 500, 'update_iters': 1, 'cost_limit': 10.0},
        'logger_cfgs': {'log_dir': run_dir, 'use_tensorboard': False},
        'env_cfgs': {'episodes_per_task': 2},
    })
    assert type(agent.agent) is CPOCorrected
    agent.learn()
    log_dir = agent.agent.logger.log_dir
    assert len(_rows(log_dir)) == 2
    assert os.path.isfile(os.path.join(log_dir, 'torch_save', 'epoch-0.pt'))
    agent.evaluate(num_episodes=1)


def test_omnisafe_benchmark_grid(run_dir: str) -> None:
    from omnisafe.common.experiment_grid import ExperimentGrid

    grid = {'algo': ['CPOCorrected', 'CPO'], 'env_id': [ENV_ID], 'seed': [0],
            'train_cfgs:total_steps': [1000], 'train_cfgs:torch_threads': [1],
            'algo_cfgs:steps_per_epoch': [500], 'algo_cfgs:update_iters': [1],
            'env_cfgs:split': ['train'],
            'logger_cfgs:use_tensorboard': [False]}
    check = ExperimentGrid(exp_name='cpoc_check')
    for key, values in grid.items():
        check.add(key, values)
    for variant in check.variants():
        check.check_variant_vaild(variant)
    path = os.path.join(run_dir, 'cpo_corrected_grid.yaml')
    with open(path, 'w', encoding='utf-8') as file:
        yaml.safe_dump(grid, file)
    result = subprocess.run([os.path.join(BIN, 'omnisafe'), 'benchmark', 'cpoc', '2', path,
                             '--log-dir', run_dir], capture_output=True, text=True, timeout=900,
                            cwd=run_dir, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    progress = glob.glob(os.path.join(run_dir, 'benchmark', '**', 'progress.csv'), recursive=True)
    algos = sorted(os.path.basename(p.split(os.sep + 'seed-')[0]).split('-')[0] for p in progress)
    assert algos == ['CPO', 'CPOCorrected'], progress
    for csv_path in progress:
        assert len(_rows(os.path.dirname(csv_path))) == 2


def test_epoch_without_a_finished_episode_keeps_the_policy(run_dir: str) -> None:
    """A 400-step epoch on 500-step episodes (OmniSafe resets the env at each epoch): no episode
    cost to compare with h, so the actor keeps its parameters (stock CPO goes on with c = NaN)."""
    agent = omnisafe.Agent('CPOCorrected', ENV_ID, custom_cfgs={
        'seed': 2,
        'train_cfgs': {'total_steps': 400, 'torch_threads': 1},
        'algo_cfgs': {'steps_per_epoch': 400, 'update_iters': 1, 'cost_limit': 10.0},
        'logger_cfgs': {'log_dir': run_dir, 'use_tensorboard': False},
    })
    actor = agent.agent._actor_critic.actor
    before = torch.nn.utils.parameters_to_vector(actor.parameters()).detach().clone()
    agent.learn()
    (row,) = _rows(agent.agent.logger.log_dir)
    assert row['Metrics/EpCost'] == 'nan'
    assert row['Misc/AcceptanceStep'] == '0.0' and row['Misc/OptimCase'] == 'nan'
    after = torch.nn.utils.parameters_to_vector(actor.parameters()).detach()
    assert torch.equal(before, after)

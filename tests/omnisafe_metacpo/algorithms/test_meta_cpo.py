"""MetaCPO / MetaTRPO end to end on tiny settings (real OmniSafe, real Safety-Gymnasium)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import omnisafe
import pytest
import torch

from omnisafe_metacpo.algorithms import meta_cpo as meta_cpo_module
from omnisafe_metacpo.algorithms.meta_cpo import MetaTrainingError
from omnisafe_metacpo.cpo_step import CPOStepError
from omnisafe_metacpo.meta import meta_step as meta_step_module
from omnisafe_metacpo.policy import FunctionalPolicy
from omnisafe_metacpo.sampling.batch import Batch
from tests.conftest import BIN, tiny_meta_cfgs


def _agent(run_dir: str, algo: str = 'MetaCPO', env_id: str = 'MetaPointCircle-v0', **cfgs):
    custom = tiny_meta_cfgs()
    custom['logger_cfgs']['log_dir'] = run_dir
    for section, values in cfgs.items():
        custom.setdefault(section, {}).update(values)
    return omnisafe.Agent(algo, env_id, custom_cfgs=custom)


def _rows(log_dir: str) -> list[dict[str, str]]:
    with open(os.path.join(log_dir, 'progress.csv'), encoding='utf-8') as file:
        return list(csv.DictReader(file))


def _without_time(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not k.startswith('Time/')} for row in rows]


@pytest.mark.parametrize('algo', ['MetaCPO', 'MetaTRPO'])
def test_learn_logs_evaluate_and_meta_test(run_dir: str, algo: str) -> None:
    agent = _agent(run_dir, algo, logger_cfgs={'save_model_freq': 2})
    agent.learn()
    log_dir = agent.agent.logger.log_dir
    rows = _rows(log_dir)
    assert len(rows) == 2
    assert [float(r['TotalEnvSteps']) for r in rows] == [400.0, 800.0]
    for key in ('MetaTest/EpRet/step_0', 'MetaTest/EpCost/step_1', 'Meta/StepFraction',
                'Metrics/EpDiscCost', 'MetaTrain/PreAdapt/EpDiscCost', 'MetaTest/EpDiscCost/step_1',
                'MetaTest/Eval/EpRet/step_0', 'MetaTest/Eval/EpDiscCost/step_1',
                'MetaTrain/PreAdapt/EpRet', 'Time/Rollout', 'Time/MetaGrad', 'Faults/NonFinite',
                'MetaTrain/Inner/KL', 'MetaTrain/Inner/PredictedCostChange',
                'MetaTrain/Inner/MeasuredCostChange'):
        assert rows[-1][key] not in ('', 'nan'), key
    # Saved policies are tensors only, resume state lives outside torch_save/.
    saved = sorted(os.listdir(os.path.join(log_dir, 'torch_save')))
    assert saved == ['epoch-0.pt', 'epoch-2.pt']
    torch.load(os.path.join(log_dir, 'torch_save', 'epoch-2.pt'), weights_only=True)
    assert os.path.isfile(os.path.join(log_dir, 'checkpoints', 'last.pt'))
    agent.evaluate(num_episodes=1)
    agent.plot(smooth=1)
    if algo == 'MetaCPO':
        agent.render(num_episodes=1, width=64, height=64)
        assert any(name.endswith('.mp4') for _, _, files in os.walk(log_dir) for name in files)
    else:  # the stock `omnisafe eval` command on the experiment directory
        result = subprocess.run([os.path.join(BIN, 'omnisafe'), 'eval', os.path.dirname(log_dir),
                                 '--num-episode', '1', '--no-render'], capture_output=True,
                                text=True,
                                timeout=300, check=False)
        assert result.returncode == 0, result.stderr[-3000:]
        assert 'Average episode length: 500.0' in result.stdout

    result = subprocess.run([os.path.join(BIN, 'omnisafe-metacpo-meta-test'), log_dir,
                             '--adapt-steps', '1', '--rollout-steps', '100'],
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(log_dir, 'meta_test.json'), encoding='utf-8') as file:
        saved = json.load(file)
    # both cost scales, for the adaptation rollouts and the deterministic evaluation
    # (meta_test_cfgs.eval_episodes: MetaCPO.yaml's 2)
    assert set(saved) == {f'{prefix}/{name}/step_{k}' for prefix in ('MetaTest', 'MetaTest/Eval')
                          for name in ('EpRet', 'EpCost', 'EpDiscCost') for k in (0, 1)} | {
                              'task_seed', 'critics'}
    assert saved['critics'] == 'fresh'


def test_cli_train_on_standard_id(run_dir: str) -> None:
    args = [os.path.join(BIN, 'omnisafe'), 'train', '--algo', 'MetaCPO', '--env-id',
            'SafetyPointCircle1-v0', '--total-steps', '400', '--log-dir', run_dir]
    for key, value in [('algo_cfgs:steps_per_epoch', '400'), ('algo_cfgs:num_tasks', '2'),
                       ('algo_cfgs:inner_steps', '1'), ('meta_test_cfgs:freq', '0'),
                       ('logger_cfgs:use_tensorboard', 'False')]:
        args += ['--custom-cfgs', key, '--custom-cfgs', value]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600, cwd=run_dir,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    experiment = os.path.join(run_dir, 'train', 'MetaCPO-{SafetyPointCircle1-v0}')
    (seed_dir,) = os.listdir(experiment)
    assert len(_rows(os.path.join(experiment, seed_dir))) == 1


@pytest.mark.parametrize('sampler', ['batched', 'sequential'])
def test_same_seed_same_progress(run_dir: str, sampler: str) -> None:
    first, second = (_agent(os.path.join(run_dir, name), algo_cfgs={'sampler': sampler})
                     for name in 'ab')
    first.learn()
    second.learn()
    rows_a, rows_b = _rows(first.agent.logger.log_dir), _rows(second.agent.logger.log_dir)
    assert _without_time(rows_a) == _without_time(rows_b)


_TRAIN_SCRIPT = '''
import sys, omnisafe
from tests.conftest import tiny_meta_cfgs
cfgs = tiny_meta_cfgs()
cfgs['train_cfgs']['total_steps'] = 1600
cfgs['logger_cfgs']['log_dir'] = sys.argv[1]
if len(sys.argv) > 2:
    cfgs['train_cfgs']['resume'] = sys.argv[2]
omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0', custom_cfgs=cfgs).learn()
'''


def _find_log_dir(root: str) -> str | None:
    for dirpath, _, files in os.walk(root):
        if 'progress.csv' in files:
            return dirpath
    return None


def test_sigkill_and_resume_gives_the_uninterrupted_rows(run_dir: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    full_root, killed_root = os.path.join(run_dir, 'full'), os.path.join(run_dir, 'killed')
    subprocess.run([sys.executable, '-c', _TRAIN_SCRIPT, full_root], check=True, env=env,
                   capture_output=True, timeout=600)
    process = subprocess.Popen([sys.executable, '-c', _TRAIN_SCRIPT, killed_root], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        log_dir = _find_log_dir(killed_root)
        if log_dir and len(_rows(log_dir)) >= 2:
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    log_dir = _find_log_dir(killed_root)
    assert log_dir is not None and len(_rows(log_dir)) < 4
    subprocess.run([sys.executable, '-c', _TRAIN_SCRIPT, killed_root, log_dir], check=True,
                   env=env, capture_output=True, timeout=600)
    full_rows = _rows(_find_log_dir(full_root))
    assert len(full_rows) == 4
    assert _without_time(_rows(log_dir)) == _without_time(full_rows)


def test_tasks_do_not_share_parameters(run_dir: str) -> None:
    algo = _agent(run_dir).agent
    theta = algo._policy.flat_params().requires_grad_(True)
    before = theta.detach().clone()
    timers = dict.fromkeys(('Rollout', 'Inner', 'MetaGrad', 'MetaStep', 'Critic'), 0.0)
    tasks = [algo._env.sample_task() for _ in range(2)]
    (first, second), _ = algo._adapt_tasks(theta, tasks, 0, timers)
    assert torch.equal(theta.detach(), before)
    assert torch.equal(algo._policy.flat_params(), before)  # the meta-policy module untouched
    assert not torch.equal(first.phi_final, second.phi_final)


def _double(batch: Batch) -> Batch:
    fields = {name: getattr(batch, name) for name in batch.__dataclass_fields__}
    for name, value in fields.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            fields[name] = value.double()
    return Batch(**fields)


def test_meta_gradient_equals_finite_differences(run_dir: str) -> None:
    """d F / d theta through K = 2 differentiable CPO steps against central differences."""
    algo = _agent(run_dir, algo_cfgs={'inner_steps': 2, 'steps_per_epoch': 600}).agent
    algo._actor_critic.actor.double()
    learner = algo._learner
    learner.policy = FunctionalPolicy(algo._actor_critic.actor)
    theta0 = learner.policy.flat_params()
    task = algo._env.sample_task()
    batches = [_double(algo._env.collect(algo._actor_critic.actor.float(), algo._actor_critic,
                                         task, 200, seed=k)) for k in range(3)]
    algo._actor_critic.actor.double()
    fractions = [1.0, 0.5]

    def meta_objective(theta: torch.Tensor) -> torch.Tensor:
        phi = theta
        for batch, fraction in zip(batches[:2], fractions, strict=True):
            phi, record = learner.inner_step(phi, batch, 10.0, create_graph=True,
                                             fraction=fraction)
            assert record.fault is None
        loss_f, loss_g = learner.surrogates(phi, batches[2])
        return loss_f + 0.1 * loss_g

    theta = theta0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(meta_objective(theta), theta)
    generator = torch.Generator().manual_seed(0)
    eps = 1e-6
    for _ in range(3):
        direction = torch.randn(theta0.shape, generator=generator, dtype=torch.float64)
        with torch.no_grad():
            numeric = (meta_objective(theta0 + eps * direction)
                       - meta_objective(theta0 - eps * direction)) / (2 * eps)
        analytic = grad @ direction
        assert torch.isclose(analytic, numeric, rtol=1e-4, atol=1e-8), (analytic, numeric)


def test_solver_failures_are_rejected_counted_then_stop(run_dir: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_step(*args, **kwargs):
        raise CPOStepError('injected solver failure')

    monkeypatch.setattr(meta_step_module, 'cpo_step', failing_step)
    agent = _agent(run_dir, algo_cfgs={'max_consecutive_failures': 2},
                   train_cfgs={'total_steps': 1200})
    algo = agent.agent
    before = algo._policy.flat_params()
    with pytest.raises(MetaTrainingError, match='max_consecutive_failures = 2'):
        agent.learn()
    assert torch.equal(algo._policy.flat_params(), before)  # rejected updates change nothing
    rows = _rows(algo.logger.log_dir)
    assert [float(r['Faults/SolverErrors']) for r in rows] == [1.0]
    assert rows[0]['Meta/Accepted'] == '0.0'


def test_non_finite_gradient_is_rejected_and_counted(run_dir: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_adapt = meta_cpo_module.MetaCPO._adapt_tasks

    def nan_adapt(self, *args, **kwargs):
        results, losses = real_adapt(self, *args, **kwargs)
        return results, [(loss_f * float('nan'), loss_g) for loss_f, loss_g in losses]

    monkeypatch.setattr(meta_cpo_module.MetaCPO, '_adapt_tasks', nan_adapt)
    agent = _agent(run_dir, train_cfgs={'total_steps': 400})
    before = agent.agent._policy.flat_params()
    agent.learn()
    assert torch.equal(agent.agent._policy.flat_params(), before)
    rows = _rows(agent.agent.logger.log_dir)
    assert float(rows[0]['Faults/NonFinite']) == 2.0  # one per task


@pytest.mark.parametrize(('backend', 'metric'), [('cvxpylayers', 'euclidean'),
                                                 ('closed_form', 'fisher')])
def test_other_backend_and_metric_train(run_dir: str, backend: str, metric: str) -> None:
    agent = _agent(run_dir, algo_cfgs={'dco_backend': backend, 'metric': metric},
                   train_cfgs={'total_steps': 400}, meta_test_cfgs={'freq': 0})
    agent.learn()
    (row,) = _rows(agent.agent.logger.log_dir)
    assert float(row['Faults/SolverErrors']) == 0.0
    assert float(row['Faults/NonFinite']) == 0.0
    assert float(row['MetaTrain/Inner/StepFraction']) > 0.0


def test_stock_run_is_tested_on_unseen_tasks_without_adaptation(cpo_run: str) -> None:
    # (With adaptation too, since stock runs are adapted with fresh critics:
    # tests/omnisafe_metacpo/evaluation/test_rule.py.)
    from omnisafe_metacpo.evaluation.saved_run import meta_test_saved_run

    results = meta_test_saved_run(cpo_run, overrides={'num_tasks': 1, 'adapt_steps': 0,
                                                      'rollout_steps': 100})
    assert set(results) == {f'{prefix}/{name}/step_0' for prefix in ('MetaTest', 'MetaTest/Eval')
                            for name in ('EpRet', 'EpCost', 'EpDiscCost')}


def test_meta_over_limit_recover_takes_the_recovery_step_above_h(run_dir: str) -> None:
    # h = 0: every meta-iteration whose adapted tasks showed any cost is over the limit (an
    # untrained Car leaves the circle within its 500-step rollouts); with this large a trust
    # region the linearised constraint can be met, so CPO itself would not recover
    agent = _agent(run_dir, env_id='MetaCarCircleHazard-v0',
                   algo_cfgs={'meta_over_limit': 'recover', 'cost_limit': 0.0,
                              'steps_per_epoch': 2000, 'meta_delta': 100.0},
                   train_cfgs={'total_steps': 4000})
    agent.learn()
    rows = [row for row in _rows(agent.agent.logger.log_dir) if float(row['Meta/b']) > 0]
    assert rows, 'no meta-iteration over the limit: the test says nothing'
    delta = agent.agent._cfgs.algo_cfgs.meta_delta
    for row in rows:
        assert int(float(row['Meta/Case'])) == 0  # INFEASIBLE_RECOVERY
        # the Euclidean recovery step has length sqrt(2 delta), times the line search's fraction
        assert float(row['Meta/StepNorm']) == pytest.approx(
            float(row['Meta/StepFraction']) * (2 * delta) ** 0.5, rel=1e-5)


def test_meta_over_limit_is_validated(run_dir: str) -> None:
    from omnisafe_metacpo.config import MetaConfigError

    with pytest.raises(MetaConfigError, match=r'algo_cfgs\.meta_over_limit.*cpo or recover'):
        _agent(run_dir, algo_cfgs={'meta_over_limit': 'always'})


def test_meta_test_cost_advantages_is_validated(run_dir: str) -> None:
    from omnisafe_metacpo.config import MetaConfigError

    with pytest.raises(MetaConfigError,
                       match=r'meta_test_cfgs\.cost_advantages.*fresh_critic or returns'):
        _agent(run_dir, meta_test_cfgs={'cost_advantages': 'centred'})

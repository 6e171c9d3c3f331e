"""MetaCPO / MetaTRPO over torch.distributed ranks: ``omnisafe train --parallel 2`` (gloo).

End-to-end tests run the stock CLI, which relaunches itself under torchrun, on tiny settings;
the collectives are also tested alone under torchrun (``parallel_worker.py``).
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import omnisafe
import pytest
import torch

from omnisafe_metacpo.config import MetaConfigError, _validate_task_split
from omnisafe_metacpo.distributed import collectives
from tests.conftest import BIN, REPO, process_alive, tiny_meta_cfgs

WORKER = os.path.join(REPO, 'tests', 'omnisafe_metacpo', 'distributed', 'parallel_worker.py')
#: Tiny settings for the CLI: 3 tasks (an uneven split over 2 ranks) x (1 + 1) rollouts of 100
#: steps, a meta-test after every meta-iteration (rank 0's), a policy saved after each.
TINY = {
    'seed': 3,
    'algo_cfgs:steps_per_epoch': 600, 'algo_cfgs:num_tasks': 3, 'algo_cfgs:inner_steps': 1,
    'algo_cfgs:update_iters': 1, 'algo_cfgs:batch_size': 200,
    'meta_test_cfgs:freq': 1, 'meta_test_cfgs:num_tasks': 1, 'meta_test_cfgs:adapt_steps': 1,
    'meta_test_cfgs:rollout_steps': 100,
    'logger_cfgs:use_tensorboard': False, 'logger_cfgs:save_model_freq': 1,
    'train_cfgs:dist_timeout': 60,
}


def _command(log_dir: str, ranks: int, iterations: int, algo: str = 'MetaCPO',
             **custom: object) -> list[str]:
    cfgs = {**TINY, **{key.replace('__', ':'): value for key, value in custom.items()}}
    steps = int(cfgs['algo_cfgs:steps_per_epoch'])
    command = [os.path.join(BIN, 'omnisafe'), 'train', '--algo', algo, '--env-id',
               'MetaPointCircle-v0', '--parallel', str(ranks), '--total-steps',
               str(iterations * steps), '--log-dir', log_dir]
    for key, value in cfgs.items():
        command += ['--custom-cfgs', key, '--custom-cfgs', str(value)]
    return command


def _env() -> dict[str, str]:
    # The venv's bin is not on PATH: the launcher must still find torchrun (next to python).
    return dict(os.environ, PATH='/usr/bin:/bin', PYTHONPATH=REPO)


def _train(log_dir: str, ranks: int, iterations: int, **custom: object) -> tuple[str, str]:
    """Run ``omnisafe train`` to the end; return (run directory, stdout)."""
    os.makedirs(log_dir, exist_ok=True)
    result = subprocess.run(_command(log_dir, ranks, iterations, **custom), cwd=log_dir,
                            env=_env(), capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return _run_dir(log_dir), result.stdout


def _run_dir(log_dir: str) -> str:
    found = [root for root, _, files in os.walk(log_dir) if 'progress.csv' in files]
    assert len(found) == 1, found  # only rank 0 writes a run directory
    return found[0]


def _rows(run: str) -> list[dict[str, str]]:
    with open(os.path.join(run, 'progress.csv'), encoding='utf-8') as file:
        return list(csv.DictReader(file))


def _without(rows: list[dict[str, str]], *prefixes: str) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not k.startswith(prefixes)} for row in rows]


def _flat(text: str) -> str:
    return ' '.join(text.split())  # rich wraps long lines


def _digests(stdout: str) -> list[str]:
    match = re.search(r'state digest per rank after the last meta-iteration: \[([^\]]*)\]',
                      _flat(stdout))
    assert match, stdout[-3000:]
    return re.findall(r'[0-9a-f]{64}', match.group(1).replace(' ', ''))


def _read(path: str) -> str:
    with open(path, encoding='utf-8') as file:
        return _flat(file.read())


def _rank_pids(path: str, deadline: float) -> list[int]:
    while time.time() < deadline:
        text = _read(path)
        match = re.search(r'rank pids \[(\d+), (\d+)\]', text)
        if match and 'Time/FPS' in text:  # pids known and a meta-iteration logged
            return [int(match.group(1)), int(match.group(2))]
        time.sleep(0.2)
    raise AssertionError(f'no rank pids in {path}')


# ---------------------------------------------------------------------------------- units
def test_local_gradients_skip_omnisafe_averaging_only_inside() -> None:
    from omnisafe.utils import distributed  # pylint: disable=import-outside-toplevel

    original = distributed.avg_grads
    critic = torch.nn.Linear(3, 1)
    critic(torch.ones(1, 3)).sum().backward()
    with collectives.local_gradients():
        assert distributed.avg_grads is not original
        assert distributed.avg_grads(critic) is None
    assert distributed.avg_grads is original
    with pytest.raises(RuntimeError), collectives.local_gradients():
        raise RuntimeError('restored on errors too')
    assert distributed.avg_grads is original


def test_task_split_and_timeout_are_validated(run_dir: str) -> None:
    _validate_task_split(SimpleNamespace(num_tasks=5), 2)
    with pytest.raises(MetaConfigError, match=r'algo_cfgs.num_tasks = 5 .* >= 6 with 6 ranks'):
        _validate_task_split(SimpleNamespace(num_tasks=5), 6)
    for value in (0, -1.0, float('inf'), 'soon'):
        custom = tiny_meta_cfgs()
        custom['logger_cfgs']['log_dir'] = run_dir
        custom['train_cfgs']['dist_timeout'] = value
        with pytest.raises(MetaConfigError, match=r'train_cfgs\.dist_timeout'):
            omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0', custom_cfgs=custom)


def _torchrun(scenario: str, out_dir: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [os.path.join(BIN, 'torchrun'), '--nproc_per_node', '2', '--rdzv_backend', 'c10d',
         '--rdzv_endpoint', 'localhost:0', WORKER, scenario, out_dir],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
        timeout=300, check=False)


def _worker_results(out_dir: str) -> list[dict]:
    results = []
    for rank in range(2):
        with open(os.path.join(out_dir, f'rank-{rank}.json'), encoding='utf-8') as file:
            results.append(json.load(file))
    return results


def test_collectives_give_every_rank_the_same_task_ordered_values(run_dir: str) -> None:
    result = _torchrun('collectives', run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = _worker_results(run_dir)
    assert first['world_size'] == 2
    assert (first['mine'], second['mine']) == ([0, 2, 4], [1, 3])
    # Row i is task i's whichever rank held it.
    assert first['ordered'] == second['ordered'] == [[i, 10.0 * i] for i in range(5)]
    assert first['average'] == second['average'] == pytest.approx([(1 + 4) / 3])
    # Per-task data of any size: every task's rows, in task order, on every rank.
    assert first['task_data'] == second['task_data'] == [
        [[float(i)] * 2] * (i + 1) for i in range(5)]
    # The normaliser: identical bits on both ranks, the statistics of all pushed observations.
    assert first['normalizer'] == second['normalizer']
    pushed = [torch.arange(6.0).reshape(2, 3)]
    for rank in range(2):
        generator = torch.Generator().manual_seed(rank)
        pushed += [torch.randn((3, 3), generator=generator) * (rank + 1) for _ in range(4 + rank)]
    union = torch.cat(pushed)
    state = first['normalizer']
    assert state['_count'] == union.shape[0]
    torch.testing.assert_close(torch.tensor(state['_mean']), union.mean(0))
    torch.testing.assert_close(torch.tensor(state['_var']), union.var(0))

    result = _torchrun('diverged', run_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for seen in _worker_results(run_dir):  # both ranks stop, and say which rank has what
        assert re.fullmatch(r'the test state differ across ranks \(rank 0: [0-9a-f]{16}, '
                            r'rank 1: [0-9a-f]{16}\)', seen['error'])


def test_a_rank_that_raises_ends_the_run_naming_the_rank(run_dir: str) -> None:
    start = time.time()
    result = _torchrun('raises', run_dir)
    assert result.returncode != 0
    output = _flat(result.stdout + result.stderr)
    assert 'RankFailure: rank 1 of 2 failed: ValueError: injected failure of rank 1' in output
    # torchrun's summary names it as the root cause.
    root = output.split('Root Cause')[1]
    assert 'rank : 1 (local_rank: 1)' in root and 'injected failure of rank 1' in root
    assert time.time() - start < 120


def test_a_hung_rank_times_out_after_dist_timeout(run_dir: str) -> None:
    start = time.time()
    result = _torchrun('timeout', run_dir)  # dist_timeout = 3 s; rank 1 sleeps 600 s
    assert result.returncode != 0
    output = _flat(result.stderr)
    assert re.search(r'rank 0 of 2 failed: RuntimeError: .*Timed out waiting 3000ms .*'
                     r'did not answer within train_cfgs.dist_timeout = 3 s', output), output[-3000:]
    assert time.time() - start < 120  # not the 600 s of the sleeping rank


# ------------------------------------------------------------------------- through the CLI
@pytest.fixture(scope='module')
def two_rank_run() -> Iterator[tuple[str, str]]:
    """A 2-rank MetaCPO run of 4 meta-iterations, 3 tasks, normaliser and critics learning."""
    root = f'/tmp/metacpo_test_parallel_{uuid.uuid4().hex}'
    try:
        yield _train(os.path.join(root, 'full'), 2, 4, algo_cfgs__kl_bound=0.05)
    finally:
        subprocess.run(['rm', '-rf', root], check=False)


def test_two_ranks_stay_identical_and_only_rank_0_writes(two_rank_run: tuple[str, str]) -> None:
    run, stdout = two_rank_run
    text = _flat(stdout)
    assert 'INFO: 2 ranks (gloo, collectives time out after train_cfgs.dist_timeout = 60 s); ' \
           'tasks per rank [2, 1]' in text
    # Digests of theta, critics (+ optimisers) and normaliser are compared after every
    # meta-iteration (a difference stops the run); here, those of the last one.
    first, second = _digests(stdout)
    assert first == second
    rows = _rows(run)
    assert [float(r['TotalEnvSteps']) for r in rows] == [600.0, 1200.0, 1800.0, 2400.0]
    assert all(r['MetaTest/EpRet/step_1'] not in ('', 'nan') for r in rows)  # rank 0's test
    assert stdout.count('Metrics/EpRet') == 4  # one table per meta-iteration: rank 0's
    assert sorted(os.listdir(os.path.join(run, 'torch_save'))) == [
        f'epoch-{n}.pt' for n in range(5)]
    saved = torch.load(os.path.join(run, 'torch_save', 'epoch-4.pt'), weights_only=True)
    assert {'pi', 'reward_critic', 'cost_critic', 'obs_normalizer'} <= set(saved)
    assert os.listdir(os.path.join(run, 'checkpoints')) == ['last.pt']


def test_resume_after_sigkill_of_the_launcher(two_rank_run: tuple[str, str],
                                              run_dir: str) -> None:
    full_run, _ = two_rank_run
    killed = os.path.join(run_dir, 'killed')
    os.makedirs(killed)
    command = _command(killed, 2, 4, algo_cfgs__kl_bound=0.05)
    out = os.path.join(run_dir, 'out.txt')
    with open(out, 'w', encoding='utf-8') as stdout:
        launcher = subprocess.Popen(command, cwd=killed, env=_env(), stdout=stdout,
                                    stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    pids = _rank_pids(out, deadline)
    while time.time() < deadline:
        log_dir = _run_dir(killed)
        if len(_rows(log_dir)) >= 2:
            break
        time.sleep(0.05)
    os.kill(launcher.pid, signal.SIGKILL)  # the launcher only: torchrun and ranks are left
    launcher.wait()
    killed_at = time.time()
    while any(process_alive(pid) for pid in pids) and time.time() - killed_at < 10:
        time.sleep(0.1)
    assert not any(process_alive(pid) for pid in pids), 'ranks outlived their launcher'
    log_dir = _run_dir(killed)
    assert len(_rows(log_dir)) < 4

    _train(killed, 2, 4, algo_cfgs__kl_bound=0.05, train_cfgs__resume=log_dir)
    assert _without(_rows(log_dir), 'Time/') == _without(_rows(full_run), 'Time/')


def test_two_ranks_train_on_the_tasks_and_seeds_of_one_rank(run_dir: str) -> None:
    """With the normaliser off, N = 1 and N = 2 give the same theta and critics, bit for bit.

    The normaliser is the only part of a meta-iteration whose result depends on how tasks are
    spread (each rank's normaliser sees its own rollouts during an iteration): everything else
    -- task draws, rollout seeds, inner steps, the meta-gradient, the meta line search, the
    critic fit on the union of the rollouts -- must match bit for bit, uneven split (3 tasks
    over 2 ranks) included.
    """
    one, _ = _train(os.path.join(run_dir, 'one'), 1, 2, algo_cfgs__obs_normalize=False)
    two, _ = _train(os.path.join(run_dir, 'two'), 2, 2, algo_cfgs__obs_normalize=False)
    for epoch in (0, 1, 2):
        pi_one, pi_two = (torch.load(os.path.join(run, 'torch_save', f'epoch-{epoch}.pt'),
                                     weights_only=True)['pi'] for run in (one, two))
        for name, value in pi_one.items():
            assert torch.equal(value, pi_two[name]), (epoch, name)
    last_one, last_two = (torch.load(os.path.join(run, 'checkpoints', 'last.pt'),
                                     weights_only=True) for run in (one, two))
    for part in ('reward_critic', 'cost_critic'):
        for name, value in last_one[part].items():
            assert torch.equal(value, last_two[part][name]), (part, name)
    assert _without(_rows(one), 'Time/') == _without(_rows(two), 'Time/')


def test_meta_trpo_with_the_fisher_metric_over_two_ranks(run_dir: str) -> None:
    # 5 tasks (3 + 2): the Fisher-vector products and the KL of the meta step span both ranks.
    run, stdout = _train(run_dir, 2, 2, algo='MetaTRPO', algo_cfgs__metric='fisher',
                         algo_cfgs__num_tasks=5, algo_cfgs__steps_per_epoch=1000,
                         meta_test_cfgs__freq=0)
    first, second = _digests(stdout)
    assert first == second
    rows = _rows(run)
    assert len(rows) == 2 and all(r['Meta/Accepted'] in ('0.0', '1.0') for r in rows)


def test_a_killed_rank_stops_the_run_naming_it(run_dir: str) -> None:
    out, err = os.path.join(run_dir, 'out.txt'), os.path.join(run_dir, 'err.txt')
    with open(out, 'w', encoding='utf-8') as stdout, open(err, 'w', encoding='utf-8') as stderr:
        launcher = subprocess.Popen(_command(run_dir, 2, 200), cwd=run_dir, env=_env(),
                                    stdout=stdout, stderr=stderr, start_new_session=True)
    pids = _rank_pids(out, time.time() + 300)
    os.kill(pids[1], signal.SIGKILL)
    killed_at = time.time()
    assert launcher.wait(timeout=60) != 0
    assert time.time() - killed_at < 30  # the other rank does not wait for dist_timeout
    root = _read(err).split('Root Cause')[1]
    assert 'rank : 1 (local_rank: 1) exitcode : -9' in root and 'SIGKILL' in root
    assert not any(process_alive(pid) for pid in pids)


@pytest.mark.slow  # about 70 s: start-up, dist_timeout, then torchrun's 30 s SIGTERM grace
def test_a_stopped_rank_stops_the_run_after_dist_timeout(run_dir: str) -> None:
    out, err = os.path.join(run_dir, 'out.txt'), os.path.join(run_dir, 'err.txt')
    with open(out, 'w', encoding='utf-8') as stdout, open(err, 'w', encoding='utf-8') as stderr:
        launcher = subprocess.Popen(_command(run_dir, 2, 200, train_cfgs__dist_timeout=5),
                                    cwd=run_dir, env=_env(), stdout=stdout, stderr=stderr,
                                    start_new_session=True)
    pids = _rank_pids(out, time.time() + 300)
    os.kill(pids[1], signal.SIGSTOP)  # alive but stuck: only the timeout can notice
    stopped_at = time.time()
    try:
        while 'rank 0 of 2 failed' not in _read(err) and time.time() - stopped_at < 60:
            time.sleep(0.2)
        noticed = time.time() - stopped_at
        assert 5 <= noticed < 20, noticed
        assert launcher.wait(timeout=120) != 0
        assert time.time() - stopped_at < 5 + 30 + 20  # dist_timeout + torchrun's grace
        assert re.search(r'rank 0 of 2 failed: RuntimeError: .*Timed out waiting 5000ms.*'
                         r'train_cfgs.dist_timeout = 5 s', _read(err))
    finally:
        for pid in pids:
            if process_alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='no GPU')
def test_cuda_device_trains(run_dir: str) -> None:
    custom = tiny_meta_cfgs()
    custom['logger_cfgs']['log_dir'] = run_dir
    custom['train_cfgs']['device'] = 'cuda:0'
    agent = omnisafe.Agent('MetaCPO', 'MetaPointCircle-v0', custom_cfgs=custom)
    assert agent.agent._policy.flat_params().is_cuda
    agent.learn()
    rows = _rows(agent.agent.logger.log_dir)
    assert len(rows) == 2 and rows[-1]['MetaTest/EpRet/step_1'] not in ('', 'nan')


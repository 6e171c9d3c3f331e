"""Task environments stepped in lockstep, in this process or in a helper process.

A batched rollout (``omnisafe_metacpo.batched_rollout``) steps M environments, one per task, with
one batched policy evaluation per step. The environments themselves are Python-bound (a MuJoCo step
plus safety-gymnasium's bookkeeping, ~0.3 ms), so on a machine with a second core a share of them
can advance in a helper process while this one steps the rest: :class:`EnvGroup` steps its
environments here, :class:`WorkerEnvGroup` the same in a process of its own, reached through a pipe
(one message out and one back per lockstep). Both reset a finished episode at once (OmniSafe's
``AutoReset``) and hand back its final observation, so rollouts do not depend on where an
environment runs (tested: the same rollouts bit for bit).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from task_distributions.task import Task


@dataclass
class StepResult:
    """One lockstep of a group: arrays over its environments, and the episodes that ended."""

    obs: np.ndarray
    rewards: np.ndarray
    costs: np.ndarray
    #: (index in the group, terminated?, final observation) of each episode that ended; its
    #: environment was reset and ``obs`` holds the new episode's first observation.
    ended: list[tuple[int, bool, np.ndarray]] = field(default_factory=list)


class EnvGroup:
    """``count`` task environments of ``env_id`` stepped here.

    Args:
        env_id: Env id with a task distribution.
        split: ``'train'`` or ``'test'``.
        count: Number of environments.
    """

    def __init__(self, env_id: str, split: str, count: int) -> None:
        from task_distributions.factory import make_env

        self.envs = [make_env(env_id, split=split) for _ in range(count)]

    def __len__(self) -> int:
        return len(self.envs)

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> np.ndarray:
        """Pin environment i to ``tasks[i]`` (every episode) and reset it with ``seeds[i]``."""
        raw = []
        for env, task, seed in zip(self.envs, tasks, seeds, strict=True):
            env.set_task(task, hold=True)
            raw.append(env.reset(seed=seed)[0])
        return np.stack(raw)

    def step(self, actions: np.ndarray) -> StepResult:
        """Step environment i with ``actions[i]``; reset those whose episode ended."""
        count = len(self.envs)
        result = StepResult(np.empty((count, *self.envs[0].observation_space.shape)),
                            np.empty(count, dtype=np.float32), np.empty(count, dtype=np.float32))
        for index, env in enumerate(self.envs):
            obs, reward, cost, terminated, truncated, _ = env.step(actions[index])
            result.rewards[index] = reward
            result.costs[index] = cost
            if terminated or truncated:
                result.ended.append((index, bool(terminated), obs))
                obs, _ = env.reset()
            result.obs[index] = obs
        return result

    def close(self) -> None:
        """Close the environments."""
        for env in self.envs:
            env.close()
        self.envs = []


def _serve(conn: Any, parent_end: Any, env_id: str, split: str, count: int) -> None:
    """The helper process: an :class:`EnvGroup` answering ``(command, payload)`` messages.

    ``parent_end`` is the training process's end of the pipe, which the fork copied into this
    process: closed first, so that when the training process dies (SIGKILL included) no end of
    the pipe is left open on that side, ``recv`` raises ``EOFError`` and the helper exits, instead
    of waiting for ever on a pipe it holds open itself.
    """
    parent_end.close()
    try:
        group = EnvGroup(env_id, split, count)
        conn.send(('ok', None))
        while True:
            command, payload = conn.recv()
            if command == 'close':
                group.close()
                return
            answer = group.reset(*payload) if command == 'reset' else group.step(payload)
            conn.send(('ok', answer))
    except (EOFError, KeyboardInterrupt):  # the training process went away
        return
    except Exception:  # any error goes back to the training process, with its traceback
        conn.send(('error', traceback.format_exc()))


class EnvWorkerError(RuntimeError):
    """An environment worker process failed or died."""


class WorkerEnvGroup:
    """An :class:`EnvGroup` in a helper process.

    The process is forked: ``spawn`` and ``forkserver`` would import the parent's ``__main__``
    again in the child (what multiprocessing does to find pickled functions), which runs any
    user script without a ``__main__`` guard a second time. The child builds its own environments
    and touches nothing of the parent's but this module's code (no torch, no threads).

    ``reset``/``step`` send the request and return at once; :meth:`result` waits for the answer,
    so the caller can step its own environments meanwhile. An error in the worker is raised here
    as :class:`EnvWorkerError` with the worker's traceback; a worker that died is reported too.

    Args:
        env_id: Env id with a task distribution.
        split: ``'train'`` or ``'test'``.
        count: Number of environments in the worker.
    """

    def __init__(self, env_id: str, split: str, count: int) -> None:
        context = multiprocessing.get_context('fork')
        self._conn, child = context.Pipe()
        self._count = count
        self._process = context.Process(target=_serve,
                                        args=(child, self._conn, env_id, split, count),
                                        daemon=True, name=f'env-worker-{env_id}-{split}')
        self._process.start()
        child.close()
        self.result()  # the environments are built (or the error is raised here)

    def __len__(self) -> int:
        return self._count

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> None:
        """Start :meth:`EnvGroup.reset` in the worker."""
        self._send(('reset', (list(tasks), list(seeds))))

    def step(self, actions: np.ndarray) -> None:
        """Start :meth:`EnvGroup.step` in the worker."""
        self._send(('step', actions))

    def _died(self) -> EnvWorkerError:
        self._process.join(timeout=1)
        return EnvWorkerError(f'environment worker {self._process.name} (pid {self._process.pid})'
                              f' died, exit code {self._process.exitcode}')

    def _send(self, message: tuple[str, Any]) -> None:
        try:
            self._conn.send(message)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise self._died() from error

    def result(self) -> Any:
        """The answer to the last request."""
        try:
            status, answer = self._conn.recv()
        except (EOFError, ConnectionResetError) as error:
            raise self._died() from error
        if status == 'error':
            raise EnvWorkerError(f'environment worker {self._process.name} failed:\n{answer}')
        return answer

    def close(self) -> None:
        """Stop the worker."""
        if self._process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):
                self._conn.send(('close', None))
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
        self._conn.close()

"""Task environments stepped in lockstep, in this process or in helper processes.

A batched rollout (``omnisafe_metacpo.sampling.batched``) steps M environments, one per task, with
one batched policy evaluation per step. The environments themselves are Python-bound (a MuJoCo step
plus safety-gymnasium's bookkeeping), so on a machine with a second core a share of them
can advance in a helper process while this one steps the rest. :class:`Lockstep` is the M
environments: :class:`EnvGroup` steps this process's share, each :class:`WorkerEnvGroup` its share
in a process of its own. Both reset a finished episode at once (OmniSafe's ``AutoReset``) and hand
back its final observation, so rollouts do not depend on where an environment runs (tested: the
same rollouts bit for bit).

The per-lockstep exchange with a helper avoids pickling: actions, observations, rewards and costs
live in memory shared with the helpers (an anonymous ``mmap`` made before they fork), every
environment -- here or in a helper -- writes its row of the result arrays in place, and the pipe
carries only a few bytes each way as the go and done signals. Only an ended episode's final
observation is pickled (once per episode). Reset and close stay pickled messages: a pickled
protocol for the steps too (the actions out, a pickled result back, the parts concatenated) costs
the training process more CPU time per lockstep than its share of the environments can spare.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import multiprocessing
import pickle
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from task_distributions.task import Task

#: The first byte of a step request; any other message is a pickled ``(command, payload)``
#: (a pickle starts with its PROTO opcode, ``b'\x80'``).
_STEP = b'S'
#: The largest action item the shared action array holds (float64).
_ACTION_ITEMSIZE = 8


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

    def new_result(self) -> StepResult:
        """Empty arrays for :meth:`step`: float64 observations, float32 rewards and costs."""
        count = len(self.envs)
        return StepResult(np.empty((count, *self.envs[0].observation_space.shape)),
                          np.empty(count, dtype=np.float32), np.empty(count, dtype=np.float32))

    def step(self, actions: np.ndarray, out: StepResult | None = None) -> StepResult:
        """Step environment i with ``actions[i]``; reset those whose episode ended.

        Args:
            actions: One action per environment.
            out: Where to write the result (arrays shaped as :meth:`new_result`'s; its ``ended``
                is replaced); new arrays if ``None``.
        """
        result = self.new_result() if out is None else out
        result.ended = []
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


class SharedArrays:
    """A lockstep's actions and results in an anonymous shared ``mmap``.

    Made before the helpers fork, the mapping (``MAP_SHARED``) is the same memory in every
    process: the training process writes the actions and reads the results, each helper reads
    its rows of the actions and writes its rows of the results.

    Args:
        count: Number of environments (rows).
        obs_shape: Shape of one observation.
        act_shape: Shape of one action.
    """

    def __init__(self, count: int, obs_shape: tuple[int, ...], act_shape: tuple[int, ...]) -> None:
        obs_size, self._act_size = count * math.prod(obs_shape), count * math.prod(act_shape)
        # float64 observations first, then the actions (8 bytes an item), then float32 rewards
        # and costs: every array starts aligned to its item size.
        self._act_offset = obs_size * 8
        rewards_offset = self._act_offset + self._act_size * _ACTION_ITEMSIZE
        self._map = mmap.mmap(-1, rewards_offset + count * 8)
        self._act_shape = (count, *act_shape)
        self._actions: dict[str, np.ndarray] = {}
        #: The results of all ``count`` environments, written in place by each of them.
        self.result = StepResult(
            self._view(np.float64, obs_size, 0).reshape(count, *obs_shape),
            self._view(np.float32, count, rewards_offset),
            self._view(np.float32, count, rewards_offset + count * 4))

    def _view(self, dtype: Any, size: int, offset: int) -> np.ndarray:
        return np.frombuffer(self._map, dtype=dtype, count=size, offset=offset)

    def actions(self, dtype: str) -> np.ndarray:
        """The actions as an array of ``dtype`` (a ``numpy.dtype.str``).

        The dtype is the caller's, so that the environments get the very values it passed, as a
        pickled array gave them before.
        """
        view = self._actions.get(dtype)
        if view is None:
            if np.dtype(dtype).itemsize > _ACTION_ITEMSIZE:
                raise ValueError(f'actions of dtype {dtype}: at most {_ACTION_ITEMSIZE} bytes')
            view = self._view(dtype, self._act_size, self._act_offset).reshape(self._act_shape)
            self._actions[dtype] = view
        return view

    def rows(self, begin: int, end: int) -> StepResult:
        """Rows ``begin:end`` of :attr:`result` (views), for the group stepping them."""
        result = self.result
        return StepResult(result.obs[begin:end], result.rewards[begin:end],
                          result.costs[begin:end])


def _serve(conn: Any, parent_end: Any, env_id: str, split: str, shared: SharedArrays,
           rows: tuple[int, int]) -> None:
    """The helper process: an :class:`EnvGroup` of rows ``rows`` of ``shared``.

    A step request is ``_STEP`` followed by the actions' dtype: the group reads its actions from
    ``shared``, writes its results there and answers ``b''``, or, when episodes ended, their
    ``ended`` entries (indices among all rows) pickled. Other requests are pickled ``(command,
    payload)`` tuples, answered pickled.

    ``parent_end`` is the training process's end of the pipe, which the fork copied into this
    process: closed first, so that when the training process dies (SIGKILL included) no end of
    the pipe is left open on that side, ``recv_bytes`` raises ``EOFError`` and the helper exits,
    instead of waiting for ever on a pipe it holds open itself.
    """
    parent_end.close()
    begin, end = rows
    try:
        group = EnvGroup(env_id, split, end - begin)
        out = shared.rows(begin, end)
        conn.send(('ok', None))
        while True:
            message = conn.recv_bytes()
            if message[:1] == _STEP:
                # Copied: an environment may keep the action it was given, and the training
                # process overwrites the shared actions at the next lockstep.
                actions = shared.actions(message[1:].decode())[begin:end].copy()
                ended = group.step(actions, out).ended
                # The results are written before this message is sent; the training process
                # reads them after receiving it. The pipe's write and read system calls order
                # the two (each is a full memory barrier), so it sees every write.
                if ended:
                    conn.send(('ok', [(begin + index, terminated, final)
                                      for index, terminated, final in ended]))
                else:
                    conn.send_bytes(b'')
                continue
            command, payload = pickle.loads(message)
            if command == 'close':
                group.close()
                return
            conn.send(('ok', group.reset(*payload)))
    except (EOFError, KeyboardInterrupt):  # the training process went away
        return
    except Exception:  # any error goes back to the training process, with its traceback
        conn.send(('error', traceback.format_exc()))


class EnvWorkerError(RuntimeError):
    """An environment worker process failed or died."""


class WorkerEnvGroup:
    """An :class:`EnvGroup` of rows ``rows`` of ``shared``, stepped in a helper process.

    The process is forked: ``spawn`` and ``forkserver`` would import the parent's ``__main__``
    again in the child (what multiprocessing does to find pickled functions), which runs any
    user script without a ``__main__`` guard a second time; and the fork is what shares
    ``shared`` with it. The child builds its own environments and touches nothing of the
    parent's but this module's code and ``shared`` (no torch, no threads).

    ``reset``/``step`` send the request and return at once; :meth:`result` waits for the answer,
    so the caller can step its own environments meanwhile. An error in the worker is raised here
    as :class:`EnvWorkerError` with the worker's traceback; a worker that died is reported too.

    Args:
        env_id: Env id with a task distribution.
        split: ``'train'`` or ``'test'``.
        shared: The lockstep's shared arrays (made before this fork).
        rows: (begin, end): this group's environments among the lockstep's.
    """

    def __init__(self, env_id: str, split: str, shared: SharedArrays,
                 rows: tuple[int, int]) -> None:
        context = multiprocessing.get_context('fork')
        self._conn, child = context.Pipe()
        self._shared = shared
        self._begin, self._end = rows
        self._process = context.Process(target=_serve,
                                        args=(child, self._conn, env_id, split, shared, rows),
                                        daemon=True, name=f'env-worker-{env_id}-{split}')
        self._process.start()
        child.close()
        self.result()  # the environments are built (or the error is raised here)

    def __len__(self) -> int:
        return self._end - self._begin

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> None:
        """Start :meth:`EnvGroup.reset` in the worker (its rows of ``tasks`` and ``seeds``)."""
        rows = slice(self._begin, self._end)
        self._send(pickle.dumps(('reset', (list(tasks[rows]), list(seeds[rows])))))

    def step(self, actions: np.ndarray) -> None:
        """Start :meth:`EnvGroup.step` in the worker with its rows of ``actions`` (all rows).

        The worker writes its rows of the shared result; :meth:`result` waits for it and
        returns its ended episodes, indexed among all rows.
        """
        dtype = actions.dtype.str
        rows = slice(self._begin, self._end)
        self._shared.actions(dtype)[rows] = actions[rows]
        # The actions are written before the request is sent (see _serve on the ordering).
        self._send(_STEP + dtype.encode())

    def _died(self) -> EnvWorkerError:
        self._process.join(timeout=1)
        return EnvWorkerError(f'environment worker {self._process.name} (pid {self._process.pid})'
                              f' died, exit code {self._process.exitcode}')

    def _send(self, message: bytes) -> None:
        try:
            self._conn.send_bytes(message)
        except (BrokenPipeError, ConnectionResetError) as error:
            raise self._died() from error

    def result(self) -> Any:
        """The answer to the last request (a step's: its ended episodes)."""
        try:
            message = self._conn.recv_bytes()
        except (EOFError, ConnectionResetError) as error:
            raise self._died() from error
        if not message:  # a step in which no episode ended
            return []
        status, answer = pickle.loads(message)
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


class Lockstep:
    """``count`` environments of ``env_id`` stepped together, ``workers`` helpers sharing the work.

    The helpers' environments come first, then this process's: it takes the largest share
    (``np.array_split``'s first), so that it does not wait for a helper's extra round trip. The
    helpers wait while this process evaluates the policies, and step their shares while this
    process steps its own, between :meth:`step` sending them the actions and reading their
    answers.

    :meth:`step` returns the same arrays every time (the shared memory the environments write
    into), valid until the next step: copy what must outlive it. Per lockstep, the training
    process writes the helpers' actions to shared memory and sends each helper a 4-byte request,
    steps its own environments, then receives each helper's answer (empty unless an episode
    ended): nothing to pickle, unpickle or concatenate (see the module docstring for the
    measured saving).

    Args:
        env_id: Env id with a task distribution.
        split: ``'train'`` or ``'test'``.
        count: Number of environments.
        workers: Number of helper processes (at most ``count - 1``; 0: all stepped here).
    """

    def __init__(self, env_id: str, split: str, count: int, workers: int) -> None:
        shares = [len(part) for part in np.array_split(np.arange(count),
                                                        min(workers, count - 1) + 1)]
        # Built first, this process's environments tell the shapes of the shared arrays (the
        # helpers fork after it and build their own: they never touch these).
        self.local = EnvGroup(env_id, split, shares[0])
        env = self.local.envs[0]
        self._shared = SharedArrays(count, env.observation_space.shape, env.action_space.shape)
        self._start = count - shares[0]
        self._local_rows = self._shared.rows(self._start, count)
        self._act_shape = (count, *env.action_space.shape)
        self.workers: list[WorkerEnvGroup] = []
        try:
            begin = 0
            for size in shares[1:]:
                self.workers.append(WorkerEnvGroup(env_id, split, self._shared,
                                                   (begin, begin + size)))
                begin += size
        except BaseException:
            self.close()
            raise

    @property
    def groups(self) -> list[EnvGroup | WorkerEnvGroup]:
        """The groups in row order: the helpers', then this process's."""
        return [*self.workers, self.local]

    def __len__(self) -> int:
        return self._act_shape[0]

    def reset(self, tasks: Sequence[Task], seeds: Sequence[int]) -> np.ndarray:
        """Pin and reset every environment: the helpers' first, so they work while this one does.

        Returns:
            The first observations (a new array).
        """
        for worker in self.workers:
            worker.reset(tasks, seeds)
        mine = self.local.reset(tasks[self._start:], seeds[self._start:])
        return np.concatenate([*(worker.result() for worker in self.workers), mine])

    def step(self, actions: np.ndarray) -> StepResult:
        """One lockstep of every environment (the helpers stepping while this process does).

        Args:
            actions: (count, action dims) actions, of any float dtype of at most 8 bytes.

        Returns:
            The shared result (the same arrays at every step), ``ended`` indexed among all rows.
        """
        if actions.shape != self._act_shape:
            raise ValueError(f'actions of shape {actions.shape}, expected {self._act_shape}')
        for worker in self.workers:
            worker.step(actions)
        mine = self.local.step(actions[self._start:], self._local_rows).ended
        result = self._shared.result
        result.ended = [entry for worker in self.workers for entry in worker.result()]
        result.ended += [(self._start + index, terminated, final)
                         for index, terminated, final in mine]
        return result

    def close(self) -> None:
        """Close the environments (and stop the helper processes)."""
        for group in self.groups:
            group.close()
        self.workers = []

"""Steps per second of the Meta* environments and of the stock envs they derive from.

One core, random actions, resets included (a reset whenever an episode ends), the same number of
steps for every env. For each Meta* id the table shows:

* ``stock``: ``safety_gymnasium.make(<base id>)`` exactly as shipped (skybox, gremlins, ...);
* ``stock + FastWorld``: the same stock env with :class:`task_distributions.FastWorld` only
  (no skybox, assets parsed once) -- what the reset alone gains;
* ``<Meta id> (<split>)``: ``task_distributions.make_env(<Meta id>, split=...)`` -- task wrapper,
  a new task every episode, fast resets and fast steps (the env a training run uses), for the
  train and the test split (the test split has more objects in Car-Circle-Hazard and Button).

Usage::

    python benchmarks/env_speed.py                      # 5000 steps, both splits, CPU 0
    python benchmarks/env_speed.py --steps 20000 --splits test --output /tmp/speed.md

The table is printed and written to ``benchmarks/results/env_speed.md``.
"""

from __future__ import annotations

import os

# One core: no BLAS/OpenMP thread pools (set before numpy is imported).
for _var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
    os.environ.setdefault(_var, '1')

import argparse  # noqa: E402
import datetime  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

# Run from a checkout: its packages (and the start-up hook module) come before installed ones.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

META_IDS = ('MetaPointCircle-v0', 'MetaCarCircleHazard-v0', 'MetaPointButton-v0')
DEFAULT_OUTPUT = Path(__file__).resolve().parent / 'results' / 'env_speed.md'
NOTES = '''
Where the time goes (cProfile, this stack):

* Stock reset, ~1.2 s: decoding the six skybox PNGs while compiling the XML. `FastWorld` drops the
  skybox when nothing renders (kept for `render_mode` set) and parses `assets.yaml` once: 3-5 ms.
* Stock Button1 reset with the skybox gone, ~300 ms: layout rejection sampling. Its agent, goal,
  4 buttons, 4 hazards and 4 gremlins (keepouts 0.18-0.4) cover 44% of the +-1.5 square, so
  `RandomGenerator.sample_layout` needs many attempts. Without gremlins (Point-Button) it is ~5 ms.
* Stock Button1 step, ~1.5 ms: `Gremlins.move` runs before each of the 10 physics substeps and does
  `np.r_` plus name look-ups per gremlin (more than half of a step). Point-Button has no gremlins.
* Meta* steps (0.15-0.5 ms): ten `mj_step` calls (8% of a Button step, 20% of a Car step), then
  Python: the pseudo-lidar, gymnasium's observation-space check, hazard costs and the Button goal
  test re-read the agent pose or geom names for every object or contact. `FastStepMixin` reads
  them once (identical values, bit for bit). What remains is mostly the lidar's per-object scalar
  numpy calls (a third of a Button step), kept because vectorising them could change last bits.
'''


@dataclass
class Measurement:
    """Speed of one env over a fixed number of steps."""

    label: str
    obs_size: int
    steps: int
    resets: int
    seconds: float
    reset_seconds: float

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    @property
    def ms_per_reset(self) -> float:
        return 1000 * self.reset_seconds / max(self.resets, 1)

    @property
    def ms_per_step(self) -> float:
        """Time per step without the resets."""
        return 1000 * (self.seconds - self.reset_seconds) / self.steps


def _import_safety_gymnasium() -> Any:
    """Import safety-gymnasium with the Python 3.11 fix and the Meta* ids registered.

    Inside the project's venv the start-up hook (``omnisafe_metacpo.pth``) does both; importing it
    here covers a plain ``PYTHONPATH`` checkout too.
    """
    import _omnisafe_metacpo_hook  # noqa: F401  (before safety_gymnasium: patches, then registers)

    # isort: split
    import safety_gymnasium

    from task_distributions.registration import register_safety_gymnasium_envs

    register_safety_gymnasium_envs()
    return safety_gymnasium


def measure(env: Any, label: str, steps: int, seed: int) -> Measurement:
    """Run ``steps`` random steps (resetting at episode ends) and time them, resets included."""
    rng = np.random.default_rng(seed)
    low, high = env.action_space.low, env.action_space.high
    actions = rng.uniform(low, high, size=(steps, *env.action_space.shape))
    start = time.perf_counter()
    env.reset(seed=seed)
    reset_seconds = time.perf_counter() - start
    resets = 1
    for action in actions:
        _, _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            before = time.perf_counter()
            env.reset()
            reset_seconds += time.perf_counter() - before
            resets += 1
    seconds = time.perf_counter() - start
    env.close()
    return Measurement(
        label,
        int(np.prod(env.observation_space.shape)),
        steps,
        resets,
        seconds,
        reset_seconds,
    )


def run(args: argparse.Namespace) -> list[tuple[str, str, list[Measurement]]]:
    """Measure every requested Meta* id against its base env."""
    safety_gymnasium = _import_safety_gymnasium()
    from task_distributions import env_entry, install_fast_world, make_env

    results = []
    for env_id in args.envs:
        base_id = env_entry(env_id).base_env
        rows = []
        if not args.skip_stock:
            rows.append(measure(safety_gymnasium.make(base_id), 'stock', args.steps, args.seed))
        fast = safety_gymnasium.make(base_id)
        install_fast_world(fast)
        rows.append(measure(fast, 'stock + FastWorld', args.steps, args.seed))
        for split in args.splits:
            meta = make_env(env_id, split=split, task_seed=args.seed)
            rows.append(measure(meta, f'{env_id} ({split})', args.steps, args.seed))
        results.append((env_id, base_id, rows))
        for row in rows:
            ratio = row.steps_per_second / rows[0].steps_per_second
            print(
                f'{env_id:24s} {row.label:32s} obs {row.obs_size:3d} '
                f'{row.steps_per_second:8.0f} steps/s  x{ratio:5.2f}  '
                f'{row.ms_per_step:.3f} ms/step  {row.ms_per_reset:8.1f} ms/reset',
                flush=True,
            )
    return results


def to_markdown(results: list[tuple[str, str, list[Measurement]]], args: argparse.Namespace) -> str:
    """The results as a markdown page."""
    import mujoco
    import safety_gymnasium

    lines = [
        '# Environment speed (benchmarks/env_speed.py)',
        '',
        f'{datetime.date.today().isoformat()}, {platform.processor() or platform.machine()}, '
        f'{_cpu_model()}, Python {platform.python_version()}, safety-gymnasium '
        f'{safety_gymnasium.__version__}, mujoco {mujoco.__version__}.',
        f'One core (CPU {args.cpu}), {args.steps} random steps per env, resets included '
        f'(seed {args.seed}). Ratio: steps/s over the stock env (first row of each group).',
        '',
        '| env | variant | obs | steps/s | ratio | ms/step (no resets) | resets | ms/reset |',
        '|---|---|---:|---:|---:|---:|---:|---:|',
    ]
    for env_id, base_id, rows in results:
        for row in rows:
            ratio = row.steps_per_second / rows[0].steps_per_second
            name = env_id if row.label.startswith(env_id) else base_id
            lines.append(
                f'| {name} | {row.label} | {row.obs_size} | {row.steps_per_second:.0f} | '
                f'{ratio:.2f}x | {row.ms_per_step:.3f} | {row.resets} | {row.ms_per_reset:.1f} |',
            )
    lines += [
        '',
        'Command: `python benchmarks/env_speed.py '
        + ' '.join(f'--{key.replace("_", "-")} {value}' for key, value in _cli(args).items())
        + '`',
        NOTES,
    ]
    return '\n'.join(lines)


def _cli(args: argparse.Namespace) -> dict[str, Any]:
    splits = ' '.join(args.splits)
    return {'steps': args.steps, 'splits': splits, 'seed': args.seed, 'cpu': args.cpu}


def _cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return 'unknown CPU'


def main() -> None:
    """Parse arguments, pin to one core, measure, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--steps', type=int, default=5000, help='steps per env (default 5000)')
    parser.add_argument('--splits', nargs='+', default=['train', 'test'], help='Meta* splits')
    parser.add_argument('--seed', type=int, default=0, help='seed of actions, layouts and tasks')
    parser.add_argument('--cpu', type=int, default=0, help='the one CPU core to run on')
    parser.add_argument('--envs', nargs='+', default=list(META_IDS), choices=META_IDS)
    parser.add_argument('--skip-stock', action='store_true', help='skip the slow stock envs')
    parser.add_argument('--output', type=Path, default=DEFAULT_OUTPUT, help='markdown file')
    args = parser.parse_args()
    if hasattr(os, 'sched_setaffinity'):
        os.sched_setaffinity(0, {args.cpu})
    results = run(args)
    page = to_markdown(results, args)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(page, encoding='utf-8')
    print(f'\nwritten to {args.output}')


if __name__ == '__main__':
    main()

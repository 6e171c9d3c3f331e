"""Speed of the differentiable CPO step: closed form (torch) against the DCO layer (cvxpylayers).

For each size ``n`` it times one forward plus backward pass (``x = cpo_step(g, a, b, delta)``,
then the gradient of ``<x, v>`` w.r.t. ``g``, ``a``, ``b`` and ``delta``) of both backends on one
CPU core, on an instance where both constraints bind (the case with the most work in both
backends), and reports the median over repetitions and the ratio. The cvxpylayers layer is built
once per size and its construction time and the worker's peak memory are reported separately:
each size runs in a fresh process so that the memory figure belongs to that size alone.

    python benchmarks/cpo_step_speed.py                       # n = 1500, 6000, 20000
    python benchmarks/cpo_step_speed.py --sizes 1500 --solvers Clarabel SCS

The table is printed and written to ``benchmarks/results/cpo_step_speed.md``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / 'benchmarks' / 'results' / 'cpo_step_speed.md'


def _single_core() -> None:
    """One thread for torch and every BLAS/OpenMP pool (set before they start)."""
    for var in ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'OPENBLAS_NUM_THREADS'):
        os.environ[var] = '1'
    import torch

    torch.set_num_threads(1)


def _instance(n: int, seed: int) -> tuple[Any, Any, Any, Any]:
    """A float64 ``(g, a, b, delta)`` with both constraints active (``b`` mid-way in that range)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(n, generator=gen, dtype=torch.float64)
    a = torch.randn(n, generator=gen, dtype=torch.float64)
    delta = 0.01
    reach = math.sqrt(2 * delta * float(a @ a))
    trpo_cost = math.sqrt(2 * delta / float(g @ g)) * float(g @ a)
    low = max(-reach, -trpo_cost)
    b = torch.tensor(0.5 * (low + reach), dtype=torch.float64)
    return g, a, b, torch.tensor(delta, dtype=torch.float64)


def _time_forward_backward(n: int, repeats: int, rounds: int = 1, **options: Any) -> float:
    """Seconds of one forward + backward pass: the lowest of ``rounds`` medians of ``repeats``.

    (The lowest median is the least disturbed by other processes on the machine.)
    """
    import torch

    from omnisafe_metacpo.cpo_step import CPOCase, cpo_step

    base = _instance(n, seed=n)
    v = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    medians = []
    for _ in range(rounds):
        times = []
        for _ in range(repeats):
            inputs = [t.clone().requires_grad_(True) for t in base]
            start = time.perf_counter()
            step = cpo_step(*inputs, **options)
            torch.autograd.grad(step.x, inputs, v)  # the vector-Jacobian product v'dx/d(inputs)
            times.append(time.perf_counter() - start)
            assert int(step.case) == CPOCase.FEASIBLE_ACTIVE
        medians.append(statistics.median(times))
    return min(medians)


def _peak_rss_gb() -> float:
    """Peak resident memory of this process in GB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _cvxpylayers_worker(n: int, solvers: list[str], repeats: int, rounds: int) -> dict[str, Any]:
    """In a fresh process: build the layer for ``n`` (timed), then time each solver."""
    _single_core()
    import torch  # noqa: F401  (imported before the baseline memory reading)

    from omnisafe_metacpo.cpo_step import dco_layer as module

    rss_before = _peak_rss_gb()
    start = time.perf_counter()
    module._dco_layer(n)
    build_s = time.perf_counter() - start
    result: dict[str, Any] = {
        'build_s': build_s,
        'build_peak_gb': _peak_rss_gb(),
        'rss_before_gb': rss_before,
    }
    for solver in solvers:
        _time_forward_backward(n, 1, backend='cvxpylayers', solver=solver)  # warm-up
        result[solver] = _time_forward_backward(
            n, repeats, rounds, backend='cvxpylayers', solver=solver,
        )
    return result


def _run_cvxpylayers(n: int, solvers: list[str], repeats: int, rounds: int) -> dict[str, Any]:
    """Run :func:`_cvxpylayers_worker` in a spawned process; report a crash instead of raising."""
    context = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(_cvxpylayers_worker, n, solvers, repeats, rounds).result()
        except concurrent.futures.process.BrokenProcessPool:
            return {'error': 'worker process died (killed, most likely out of memory)'}
        except Exception as exc:  # reported in the table, not hidden
            return {'error': f'{type(exc).__name__}: {exc}'}


def _machine() -> str:
    """CPU model and library versions, for the report."""
    import cvxpylayers
    import diffcp
    import torch

    cpu = platform.processor() or 'unknown CPU'
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
                break
    except OSError:
        pass
    versions = {'torch': torch.__version__, 'cvxpylayers': cvxpylayers.__version__}
    versions['diffcp'] = getattr(diffcp, '__version__', '?')
    try:
        import clarabel

        versions['clarabel'] = getattr(clarabel, '__version__', '?')
    except ImportError:
        pass
    listed = ', '.join(f'{name} {version}' for name, version in versions.items())
    return (
        f'{cpu}; {os.cpu_count()} logical CPUs, 1 thread used; '
        f'Python {platform.python_version()}; {listed}'
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and write the markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+', default=[1500, 6000, 20000])
    parser.add_argument('--solvers', nargs='+', default=['Clarabel'], choices=['Clarabel', 'SCS'])
    parser.add_argument('--repeats', type=int, default=300, help='closed-form repetitions')
    parser.add_argument('--rounds', type=int, default=5, help='closed-form rounds (min median)')
    parser.add_argument('--layer-repeats', type=int, default=5, help='cvxpylayers repetitions')
    parser.add_argument('--layer-rounds', type=int, default=3, help='cvxpylayers rounds')
    parser.add_argument('--output', type=Path, default=RESULT)
    parser.add_argument('--no-write', action='store_true', help='print only')
    args = parser.parse_args(argv)

    _single_core()
    sys.path.insert(0, str(ROOT))
    load_before = os.getloadavg()
    rows = []
    for n in args.sizes:
        _time_forward_backward(n, 50)  # warm-up
        closed = _time_forward_backward(n, args.repeats, args.rounds)
        layer = _run_cvxpylayers(n, args.solvers, args.layer_repeats, args.layer_rounds)
        rows.append((n, closed, layer))
        print(f'n={n}: closed form {closed * 1e3:.3f} ms, cvxpylayers {layer}', flush=True)

    header = ['n', 'closed_form fwd+bwd (ms)']
    for solver in args.solvers:
        header += [f'cvxpylayers/{solver} fwd+bwd (ms)', f'ratio ({solver} / closed_form)']
    header += ['layer build (s)', 'build peak RSS (GB)']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for n, closed, layer in rows:
        cells = [f'{n:,}', f'{closed * 1e3:.3f}']
        if 'error' in layer:
            cells += ['failed', '-'] * len(args.solvers) + [layer['error'], '-']
        else:
            for solver in args.solvers:
                cells += [f'{layer[solver] * 1e3:.1f}', f'{layer[solver] / closed:,.0f}x']
            cells += [f'{layer["build_s"]:.1f}', f'{layer["build_peak_gb"]:.2f}']
        lines.append('| ' + ' | '.join(cells) + ' |')
    table = '\n'.join(lines)
    notes = [
        '# Speed of the differentiable CPO step',
        '',
        f'Measured {datetime.date.today().isoformat()} with `python benchmarks/cpo_step_speed.py '
        + ' '.join(argv if argv is not None else sys.argv[1:])
        + '`.',
        f'Machine: {_machine()}. Load average (1 min) before/after: {load_before[0]:.2f} / '
        f'{os.getloadavg()[0]:.2f} (other processes share the machine: timings are indicative).',
        '',
        table,
        '',
        'Each time is one forward plus backward pass (the vector-Jacobian product with respect',
        'to g, a, b and delta), float64, one unbatched instance with both constraints active:',
        f'the lowest of {args.rounds} (closed form) or {args.layer_rounds} (cvxpylayers) medians',
        f'of {args.repeats} or {args.layer_repeats} repetitions, after a warm-up. The cvxpylayers',
        "layer (the paper's DCO layer) is built once per size and cached; its construction is",
        'timed separately, in a fresh process per size, whose peak resident memory (torch and',
        'cvxpy imports included) is the last column. Clarabel runs with tolerances 1e-12 (its',
        'defaults, 1e-8, leave Jacobian errors of ~1e-3), SCS with eps 1e-9.',
    ]
    text = '\n'.join(notes) + '\n'
    print(table)
    if not args.no_write:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
        print(f'written to {args.output}')


if __name__ == '__main__':
    main()

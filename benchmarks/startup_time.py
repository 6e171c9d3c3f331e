"""Interpreter start-up cost of the plug-in's ``.pth`` hook.

The hook runs in every Python process of the environment, so it must stay negligible: it imports
only the standard library and waits for ``omnisafe`` / ``safety_gymnasium`` to be imported.
Reports the hook module's own import time (``python -X importtime``, the direct measure) and the
wall time of ``python -c pass`` (site and every ``.pth`` of the venv, the hook included) next to
``python -S -c pass`` (no site at all: the floor).

    python benchmarks/startup_time.py [--repeat 30]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time


def hook_import_us() -> int:
    """Cumulative import time (microseconds) of the hook module, from ``-X importtime``."""
    result = subprocess.run([sys.executable, '-X', 'importtime', '-c', 'pass'],
                            capture_output=True, text=True, check=True)
    total = 0
    for line in result.stderr.splitlines():
        match = re.match(r'import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)', line)
        if match and match.group(4) == '_omnisafe_metacpo_hook':
            total = int(match.group(2))
    if total == 0:
        raise RuntimeError('_omnisafe_metacpo_hook was not imported at start-up: is it installed?')
    return total


def wall_ms(args: list[str], repeat: int) -> float:
    """Median wall time of running ``args`` ``repeat`` times."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(args, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    """Print the measurements as a small table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=30)
    args = parser.parse_args()
    hook = statistics.median(hook_import_us() for _ in range(args.repeat)) / 1000
    with_hook = wall_ms([sys.executable, '-c', 'pass'], args.repeat)
    # -S skips site (all .pth files): the floor for an interpreter start.
    without_site = wall_ms([sys.executable, '-S', '-c', 'pass'], args.repeat)
    print('| measure | ms |')
    print('|---|---|')
    print(f'| hook module import (-X importtime, cumulative) | {hook:.2f} |')
    print(f'| `python -c pass` (site + all .pth, hook included) | {with_hook:.1f} |')
    print(f'| `python -S -c pass` (no site at all) | {without_site:.1f} |')


if __name__ == '__main__':
    main()

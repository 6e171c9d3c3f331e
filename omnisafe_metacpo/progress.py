"""A progress bar for a whole run, in OmniSafe's style (rich), cheap enough for a sampling loop.

OmniSafe's stock rollouts show ``rich.progress.track`` per epoch. A meta-iteration samples many
rollouts (tasks x inner steps), so :class:`RunProgress` shows one bar for the whole run instead:
what is being sampled now (the caller's description, e.g. task and inner step), environment steps
done out of the run's total, time elapsed and an estimate of the time left.

:meth:`RunProgress.advance` may be called once per environment step: it only adds to a counter and
reads a clock, and redraws at most ``refresh_per_second`` times a second (there is no refresh
thread). Without a terminal (a pipe, a log file, CI) nothing is drawn at all.

Example::

    with RunProgress(total_steps=300_000, done_steps=0) as progress:
        for step in range(...):
            ...
            progress.advance(1, 'iteration 3/10 · task 2/5 · inner step 1/5')
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RunProgress:
    """One rich progress bar over a run's environment steps, with an estimate of the time left.

    Args:
        total_steps: Environment steps of the whole run.
        done_steps: Steps already done (a resumed run starts from there; the time estimate uses
            only the speed measured in this process).
        enabled: Draw the bar; ``None``: only when the output is a terminal (``console``'s, or
            ``sys.stdout.isatty()`` without one).
        console: Where to draw (rich's default console, on stdout, if ``None``).
        refresh_per_second: At most this many redraws per second.
        clock: Seconds, monotonic (for the rate limit and rich's speed estimate).
    """

    def __init__(
        self,
        total_steps: int,
        done_steps: int = 0,
        enabled: bool | None = None,
        console: Console | None = None,
        refresh_per_second: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if enabled is None:
            enabled = console.is_terminal if console is not None else sys.stdout.isatty()
        self._enabled = bool(enabled)
        self._total = int(total_steps)
        self._done = int(done_steps)
        self._interval = 1.0 / refresh_per_second
        self._clock = clock
        self._console = console
        self._description = ''
        self._next_refresh = 0.0
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    @property
    def enabled(self) -> bool:
        """Whether the bar is drawn."""
        return self._enabled

    @property
    def done_steps(self) -> int:
        """Environment steps done so far (counted also when the bar is not drawn)."""
        return self._done

    def start(self) -> None:
        """Show the bar (no-op when disabled or already started)."""
        if not self._enabled or self._progress is not None:
            return
        self._progress = Progress(
            TextColumn('[progress.description]{task.description}'),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn('steps'),
            TimeElapsedColumn(),
            TextColumn('ETA'),
            TimeRemainingColumn(),
            console=self._console,
            # Redraws happen only in advance(): no refresh thread competes with the sampler.
            auto_refresh=False,
            # A meta-iteration alternates sampling with updates that add no steps: estimate the
            # speed over several iterations, not over the last burst of sampling.
            speed_estimate_period=120.0,
            get_time=self._clock,
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._description, total=self._total,
                                             completed=self._done)
        self._next_refresh = self._clock() + self._interval
        self._progress.refresh()

    def advance(self, steps: int, description: str) -> None:
        """Count ``steps`` more environment steps; redraw if the last redraw is old enough.

        Args:
            steps: Environment steps just sampled.
            description: What is being sampled now (e.g. task and inner step).
        """
        self._done += steps
        self._description = description
        if self._progress is None:
            return
        now = self._clock()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self._interval
        self._redraw()

    def close(self) -> None:
        """Draw the final state and remove the bar (no-op when not started)."""
        if self._progress is None:
            return
        self._redraw()
        self._progress.stop()
        self._progress = None
        self._task = None

    def _redraw(self) -> None:
        assert self._progress is not None and self._task is not None
        self._progress.update(self._task, completed=self._done, description=self._description)
        self._progress.refresh()

    def __enter__(self) -> RunProgress:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

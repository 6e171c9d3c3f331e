"""RunProgress: silent without a terminal, a bar with the description and an ETA in one."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from omnisafe_metacpo.progress import RunProgress


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, color_system=None, width=160), out


def test_silent_without_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    # Under pytest's capture stdout is no terminal: the default is off and nothing is written.
    with RunProgress(total_steps=1000, done_steps=0) as progress:
        for _ in range(100):
            progress.advance(10, 'task 1/5 · inner step 0/5')
    assert not progress.enabled
    assert progress.done_steps == 1000
    captured = capsys.readouterr()
    assert captured.out == '' and captured.err == ''


def test_explicitly_disabled_writes_nothing_even_to_a_terminal() -> None:
    console, out = _terminal()
    with RunProgress(total_steps=100, enabled=False, console=console) as progress:
        progress.advance(50, 'task 1/5')
    assert out.getvalue() == ''


def test_terminal_shows_description_steps_and_eta() -> None:
    console, out = _terminal()
    clock = FakeClock()
    progress = RunProgress(total_steps=10_000, done_steps=2_000, console=console, clock=clock)
    assert progress.enabled  # a forced terminal turns it on by default
    with progress:
        for _ in range(4):
            clock.now += 1.0  # 1,000 steps per second
            progress.advance(1_000, 'iteration 2/5 · task 3/5 · inner step 4/5')
        text = out.getvalue()
    assert 'iteration 2/5 · task 3/5 · inner step 4/5' in text
    assert '6000/10000' in text
    # 4,000 steps left at 1,000 steps/s: rich shows the estimate as H:MM:SS after "ETA".
    assert re.search(r'ETA\s+0:00:0[45]', text), text[-500:]


def test_redraws_are_rate_limited() -> None:
    console, out = _terminal()
    clock = FakeClock()
    with RunProgress(total_steps=10**6, console=console, refresh_per_second=4,
                     clock=clock) as progress:
        start = len(out.getvalue())
        for index in range(1_000):  # a tenth of a second of sampling: no redraw at all
            clock.now += 1e-4
            progress.advance(1, f'step {index}')
        assert len(out.getvalue()) == start
        clock.now += 0.25
        progress.advance(1, 'after a quarter second')
        assert 'after a quarter second' in out.getvalue()[start:]


def test_advance_is_cheap_when_drawn() -> None:
    console, _ = _terminal()
    with RunProgress(total_steps=10**7, console=console) as progress:
        tick = time.perf_counter()
        for _ in range(100_000):
            progress.advance(1, 'task 1/5 · inner step 0/5')
        per_call = (time.perf_counter() - tick) / 100_000
    # An environment step costs ~100 us or more; a call must stay far below that.
    assert per_call < 5e-6

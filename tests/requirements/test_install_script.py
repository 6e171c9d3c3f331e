"""requirements/install.sh: which interpreter it chooses, and that it stops before installing
anything when none is supported. (The installation itself is what `make test` and
`make test-python` do before every suite run.)"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import REPO

SCRIPT = os.path.join(REPO, 'requirements', 'install.sh')
SUPPORTED = ('3.11', '3.12', '3.13')


@pytest.fixture
def sandbox(tmp_path):
    """A PATH holding only the shell tools the script uses, so no real Python is found by accident,
    and a directory to put fake interpreters in."""
    tools = tmp_path / 'tools'
    tools.mkdir()
    for tool in ('sh', 'dirname', 'cat', 'basename'):
        os.symlink(shutil.which(tool), tools / tool)
    return tmp_path


def _fake_python(directory, name: str, version: str) -> str:
    """An executable that answers the version question as Python `version` would."""
    path = directory / name
    path.write_text(f'#!/bin/sh\necho {version}\n')
    path.chmod(0o755)
    return str(path)


def _run(sandbox, *args: str, extra_path: str = '') -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (extra_path, str(sandbox / 'tools')) if p)
    return subprocess.run(['sh', SCRIPT, str(sandbox / 'venv'), *args], capture_output=True,
                          text=True, timeout=60, check=False, env={'PATH': path})


def test_an_unsupported_py_is_refused_before_anything_is_installed(sandbox) -> None:
    old = _fake_python(sandbox, 'python3.10', '3.10')
    result = _run(sandbox, old)
    assert result.returncode == 2
    assert f'PY={old} is Python 3.10, which is not supported' in result.stderr
    assert 'Supported Pythons: 3.11 3.12 3.13' in result.stderr
    assert 'make test PY=python3.12' in result.stderr  # what to do
    assert not (sandbox / 'venv').exists()


def test_a_missing_py_is_named(sandbox) -> None:
    result = _run(sandbox, 'python3.99')
    assert result.returncode == 2
    assert 'PY=python3.99: no such command' in result.stderr
    assert not (sandbox / 'venv').exists()


def test_without_py_every_candidate_is_tried_and_reported(sandbox) -> None:
    bin_dir = sandbox / 'bin'
    bin_dir.mkdir()
    _fake_python(bin_dir, 'python3', '3.10')
    _fake_python(bin_dir, 'python3.12', '3.9')  # a broken alias: its version decides, not its name
    result = _run(sandbox, extra_path=str(bin_dir))
    assert result.returncode == 2
    assert ('no supported Python found; tried: python3 (3.10) python3.13 (absent) '
            'python3.12 (3.9) python3.11 (absent)') in result.stderr
    assert not (sandbox / 'venv').exists()


def test_a_venv_of_another_python_is_not_mixed(sandbox) -> None:
    # A venv made with one Python and a PY of another: the script asks for a clean venv instead
    # of installing one Python's lock into the other's venv.
    venv_bin = sandbox / 'venv' / 'bin'
    venv_bin.mkdir(parents=True)
    _fake_python(venv_bin, 'python', '3.11')
    other = _fake_python(sandbox, 'python3.13', '3.13')
    result = _run(sandbox, other)
    assert result.returncode == 2
    assert 'was made with Python 3.11' in result.stderr and "make clean" in result.stderr
    assert sorted(os.listdir(venv_bin)) == ['python']


@pytest.mark.parametrize('version', SUPPORTED)
def test_every_supported_python_has_its_lock(version: str) -> None:
    with open(os.path.join(REPO, 'requirements', f'lock-py{version}.txt'), encoding='utf-8') as f:
        pins = dict(line.strip().split('==') for line in f
                    if line.strip() and not line.startswith('#'))
    # The whole stack is pinned (installed with --no-deps), the plug-in's own dependencies included.
    for package in ('omnisafe', 'safety-gymnasium', 'torch', 'cvxpy', 'cvxpylayers', 'PyYAML',
                    'mujoco', 'numpy', 'gymnasium'):
        assert package in pins, (version, package)
    assert pins['torch'] == '2.13.0'


def test_the_newer_pythons_share_their_physics() -> None:
    # One mujoco and one numpy on 3.12 and 3.13, so that both give the same numbers.
    def pins(version: str) -> dict[str, str]:
        with open(os.path.join(REPO, 'requirements', f'lock-py{version}.txt'),
                  encoding='utf-8') as f:
            return dict(line.strip().split('==') for line in f
                        if line.strip() and not line.startswith('#'))
    assert pins('3.12') == pins('3.13')

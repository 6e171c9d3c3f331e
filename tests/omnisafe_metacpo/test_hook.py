"""The start-up hook: automatic fixes and registration in fresh interpreters and workers."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import pytest


def _python(code: str) -> str:
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                            timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_hook_imports_nothing_heavy() -> None:
    out = _python(
        'import sys; import _omnisafe_metacpo_hook as h; '
        'print(sorted(m for m in ("torch", "numpy", "omnisafe", "safety_gymnasium", "mujoco") '
        'if m in sys.modules)); '
        'print(any(type(f).__name__ == "_HookFinder" for f in sys.meta_path))',
    )
    assert out.split('\n')[:2] == ['[]', 'True']


@pytest.mark.parametrize('first', ['safety_gymnasium', 'omnisafe'])
def test_fix_and_registration_whichever_is_imported_first(first: str) -> None:
    out = _python(
        f'import {first}\n'
        'import safety_gymnasium, omnisafe\n'
        'from omnisafe.algorithms import algo_wrapper\n'
        'from omnisafe.common import experiment_grid\n'
        'from omnisafe.envs.core import support_envs\n'
        'env = safety_gymnasium.make("MetaPointCircle-v0")\n'
        'print(env.observation_space.shape)\n'
        'print("MetaCPO" in omnisafe.ALGORITHMS["all"],'
        '      "MetaTRPO" in algo_wrapper.ALGORITHMS["all"])\n'
        'print(experiment_grid.ALGORITHM2TYPE["MetaCPO"],'
        '      "MetaCarCircleHazard-v0" in support_envs())\n',
    )
    assert out.split('\n')[:3] == ['(28,)', 'True True', 'on-policy True']


def test_dataclass_fix_gives_each_instance_its_own_array() -> None:
    import safety_gymnasium  # noqa: F401
    from safety_gymnasium.assets.geoms.hazards import Hazards

    first, second = Hazards(num=1), Hazards(num=2)
    assert first.color is not second.color
    first.color[0] = -1.0
    assert second.color[0] != -1.0


def _worker_sees_plugin() -> tuple[bool, bool]:
    import omnisafe
    from omnisafe.envs.core import support_envs

    return 'MetaCPO' in omnisafe.ALGORITHMS['all'], 'MetaPointButton-v0' in support_envs()


def test_spawned_worker_sees_plugin() -> None:
    # omnisafe benchmark runs workers in spawned processes that never import the plug-in.
    with multiprocessing.get_context('spawn').Pool(1) as pool:
        assert pool.apply(_worker_sees_plugin) == (True, True)


def test_registering_twice_is_harmless() -> None:
    import omnisafe

    from omnisafe_metacpo.install import install

    install()
    install()
    assert omnisafe.ALGORITHMS['all'].count('MetaCPO') == 1

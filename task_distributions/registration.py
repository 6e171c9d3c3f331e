"""Registration of the env ids that name their own task class (``MetaPointCircle-v0``, ...).

Called by the start-up hook right after ``safety_gymnasium`` is imported, so it imports only the
YAML reader and safety-gymnasium's registry (never torch or OmniSafe); the env modules are loaded
by the entry point when an env is made.
"""

from __future__ import annotations

import warnings

#: Entry point of the registered ids: builds the env with its TaskWrapper.
ENTRY_POINT = 'task_distributions.factory:make_registered_env'


def register_safety_gymnasium_envs() -> list[str]:
    """Register every YAML env entry with a ``task`` with safety-gymnasium (idempotent).

    ``safety_gymnasium.make('MetaPointCircle-v0', split='test', episodes_per_task=2, task_seed=3)``
    then works, with the registered episode length. Ids already registered are left alone.

    Returns:
        The ids registered by this call.
    """
    from gymnasium.envs.registration import registry
    from safety_gymnasium.utils.registration import register, safe_registry

    from task_distributions.config import load_config
    from task_distributions.errors import TaskDistributionError

    try:
        config = load_config()
    except TaskDistributionError as error:
        # Running while `import safety_gymnasium` executes: raising here would break every import
        # of safety_gymnasium (and omnisafe). make_env raises the same error when it is used.
        warnings.warn(f'task_distributions: no env registered: {error}', stacklevel=2)
        return []
    registered = []
    for entry in config.envs.values():
        if not entry.is_custom or entry.env_id in safe_registry or entry.env_id in registry:
            continue
        register(
            id=entry.env_id,
            entry_point=ENTRY_POINT,
            kwargs={'env_id': entry.env_id},
            max_episode_steps=entry.max_episode_steps,
        )
        registered.append(entry.env_id)
    return registered

"""The plug-in's default configs, read as OmniSafe reads its own (``get_default_kwargs_yaml``).

OmniSafe reads default configs from ``omnisafe/configs/<type>/<Algo>.yaml`` only; the plug-in's
live in its ``configs/`` (``omnisafe_metacpo/_configs`` inside the wheel).
:func:`load_default_config` reads them for the plug-in's algorithms, and stock configs for the
others. Stock configs (CPO, TRPO, ...) do not declare ``env_cfgs``, so the task split, episodes
per task and task seed could not be chosen for a ``Meta*`` env: for those env ids the defaults of
:data:`META_ENV_CFGS` are added to whatever algorithm's config is loaded.
(:mod:`omnisafe_metacpo.install` puts this function in OmniSafe's place.)

A plug-in YAML may build on another (``base: MetaCPO``) and list only what it changes
(:func:`load_default_config`), and may ``drop`` keys of its base that it does not have.
"""

from __future__ import annotations

import os
from typing import Any

from omnisafe.utils.config import Config, load_yaml

import task_distributions
from omnisafe_metacpo.plugin import _original

#: Algorithms of the plug-in, by OmniSafe algorithm type.
PLUGIN_ALGORITHMS: dict[str, tuple[str, ...]] = {
    'on-policy': ('MetaCPO', 'MetaCPOPaper', 'MetaTRPO', 'CPOCorrected'),
}

#: ``env_cfgs`` accepted by the ``Meta*`` envs for every OmniSafe algorithm.
META_ENV_CFGS: dict[str, Any] = {'split': 'train', 'episodes_per_task': 1, 'task_seed': None}


def configs_dir() -> str:
    """The plug-in's YAML directory (inside the wheel, or ``./configs`` in a checkout)."""
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for candidate in (
        os.path.join(package_dir, '_configs'),
        os.path.join(os.path.dirname(package_dir), 'configs'),
    ):
        if os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f'no configs directory next to {package_dir}')


def _plugin_names() -> set[str]:
    return {name for names in PLUGIN_ALGORITHMS.values() for name in names}


def is_plugin_algo(algo: str) -> bool:
    """Whether ``algo`` is one of the plug-in's algorithms."""
    return algo in _plugin_names()


def _meta_env_ids() -> set[str]:
    """Ids registered by this package (standard ids keep their stock OmniSafe env)."""
    return {
        env_id
        for env_id in task_distributions.supported_env_ids()
        if task_distributions.env_entry(env_id).is_custom
    }


def _yaml_chain(algo: str) -> list[dict[str, Any]]:
    """The plug-in YAML of ``algo`` after those it builds on (its ``base:``, recursively).

    A preset such as ``MetaCPOPaper.yaml`` names ``base: MetaCPO`` and lists only what it
    changes: the base's ``defaults``, then the preset's, then the base's section for the env id,
    then the preset's.
    """
    chain: list[dict[str, Any]] = []
    name: str | None = algo
    while name is not None:
        kwargs = load_yaml(os.path.join(configs_dir(), f'{name}.yaml'))
        chain.insert(0, kwargs)
        name = kwargs.get('base')
        if name is not None and not is_plugin_algo(name):
            raise ValueError(f'{algo}.yaml: base: {name} is not an algorithm of the plug-in '
                             f'({", ".join(sorted(_plugin_names()))})')
        if len(chain) > len(_plugin_names()):
            raise ValueError(f'{algo}.yaml: its base: entries form a cycle')
    return chain


def load_default_config(algo: str, env_id: str, algo_type: str) -> Any:
    """OmniSafe's ``get_default_kwargs_yaml``, reading the plug-in's YAML for its algorithms.

    Returns the ``Config`` of defaults updated by the env-specific section, with ``env_cfgs``
    defaults added for ``Meta*`` env ids. A plug-in YAML with ``base:`` gets every file's
    ``defaults`` (base first), then every file's section for the env id (the more specific
    wins); the keys a file lists under ``drop:`` (``section.key``) are then removed.
    """
    if is_plugin_algo(algo):
        config = Config.dict2config({})
        chain = _yaml_chain(algo)
        for section in ('defaults', env_id):
            for kwargs in chain:
                if kwargs.get(section) is not None:
                    config.recurisve_update(kwargs[section])
        for kwargs in chain:
            for path in kwargs.get('drop') or ():
                *sections, key = path.split('.')
                node = config
                for name in sections:
                    node = node[name]
                del node[key]
    else:
        config = _original.get_default_kwargs_yaml(algo, env_id, algo_type)
    if env_id in _meta_env_ids():
        env_cfgs = dict(META_ENV_CFGS)
        if config.get('env_cfgs'):
            env_cfgs.update(config['env_cfgs'].todict())
        config['env_cfgs'] = Config.dict2config(env_cfgs)
    return config

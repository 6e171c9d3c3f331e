"""How a saved run of any algorithm is adapted when it is meta-tested: the rule of the comparison.

Every trained policy is adapted on the same unseen test tasks (:class:`MetaTester` with the run's
seed and the same ``meta_test_cfgs``) for K steps with its own update rule:

=================================================  ==========  ==============================
algorithm                                          step        step settings
=================================================  ==========  ==============================
MetaCPO                                            CPO         the run's ``algo_cfgs``
MetaTRPO                                           TRPO        the run's ``algo_cfgs``
stock with a cost limit (CPO, CPOCorrected, ...)   CPO         MetaCPO.yaml's, Fisher metric
stock without one (TRPO, ...)                      TRPO        MetaCPO.yaml's, Fisher metric
=================================================  ==========  ==============================

Stock runs have no inner-step settings, so theirs (``inner_delta``, backtracking, CG damping,
``dco_backend``) are MetaCPO.yaml's defaults, with the Fisher (KL) metric that CPO and TRPO
themselves use. The CPO and TRPO steps are
:class:`~omnisafe_metacpo.meta.inner.InnerLearner`'s (``constrained`` True / False). Advantages
come from fresh critics fitted on each test rollout, for every algorithm alike
(:mod:`omnisafe_metacpo.evaluation.fresh_critics`): critics saved by a run are never used. The
test-time cost limit h is ``meta_test_cfgs.cost_limit`` (MetaCPO.yaml: 5 on MetaCarCircleHazard-v0)
or, where that is null, the run's own limit (MetaCPO.yaml's for runs that have none).
"""

from __future__ import annotations

from typing import Any

from omnisafe.utils.config import Config

from omnisafe_metacpo import cost_measures, run_files
from omnisafe_metacpo.evaluation.fresh_critics import FreshCriticLearner, FreshCritics
from omnisafe_metacpo.plugin.configs import load_default_config

#: The meta-learners and whether their inner step is constrained (CPO) or not (TRPO).
META_LEARNERS: dict[str, bool] = {'MetaCPO': True, 'MetaCPOPaper': True, 'MetaTRPO': False}

#: Algorithm settings the samplers read. With the zero values of ``ZeroCritic`` and lambda = 1,
#: the value targets of any GAE computation (OmniSafe's buffer, the batched sampler's) are the
#: discounted returns-to-go, nothing bootstrapped (see
#: :mod:`omnisafe_metacpo.evaluation.fresh_critics`); the advantages are then recomputed from them.
SAMPLER_CFGS: dict[str, Any] = {'adv_estimation_method': 'gae', 'lam': 1.0, 'lam_c': 1.0}


def metacpo_defaults(env_id: str) -> Any:
    """MetaCPO.yaml's config for ``env_id`` (defaults updated by the env's section)."""
    return load_default_config('MetaCPO', env_id, 'on-policy')


def is_constrained(cfgs: Any) -> bool:
    """Whether the run's algorithm adapts with the CPO step (else with TRPO's)."""
    if cfgs.algo in META_LEARNERS:
        return META_LEARNERS[cfgs.algo]
    return 'cost_limit' in cfgs.algo_cfgs or 'lagrange_cfgs' in cfgs


def step_cfgs(cfgs: Any) -> Any:
    """The ``algo_cfgs`` the inner learner of the run's adaptation steps reads."""
    if cfgs.algo in META_LEARNERS:
        return cfgs.algo_cfgs
    algo_cfgs = metacpo_defaults(cfgs.env_id).algo_cfgs
    algo_cfgs['metric'] = 'fisher'  # CPO and TRPO take their steps in the KL metric
    return algo_cfgs


def resolve_meta_test_cfgs(cfgs: Any, overrides: dict[str, Any] | None = None) -> Any:
    """``meta_test_cfgs`` of the run, completed and with the cost limit resolved.

    The run's own section (MetaCPO/MetaTRPO runs), else MetaCPO.yaml's for the env; then
    ``overrides``; a null ``cost_limit`` becomes the run's training limit (MetaCPO.yaml's when the
    run has none, e.g. TRPO).
    """
    defaults = metacpo_defaults(cfgs.env_id)
    settings = defaults.meta_test_cfgs.todict()
    if cfgs.get('meta_test_cfgs') is not None:
        settings.update(cfgs.meta_test_cfgs.todict())
    settings.update(overrides or {})
    if settings.get('cost_limit') is None:
        own = cfgs.algo_cfgs.get('cost_limit')
        settings['cost_limit'] = float(defaults.algo_cfgs.cost_limit if own is None else own)
    return Config.dict2config(settings)


def load_run_cfgs(run_dir: str, overrides: dict[str, Any] | None = None,
                  sampler_cfgs: bool = True) -> Any:
    """The run's ``config.json`` prepared for meta-testing.

    ``meta_test_cfgs`` resolved (:func:`resolve_meta_test_cfgs`) and, unless ``sampler_cfgs`` is
    False (a meta-learner adapted with its own critics), the samplers' settings of
    :data:`SAMPLER_CFGS`; everything that shapes the env (observation normalisation, env_cfgs)
    stays the run's, so the policy sees observations as in training.
    """
    cfgs = Config.dict2config(run_files.load_config(run_dir))
    cfgs['meta_test_cfgs'] = resolve_meta_test_cfgs(cfgs, overrides)
    if sampler_cfgs:
        cfgs.algo_cfgs.recurisve_update(dict(SAMPLER_CFGS))
    return cfgs


def build_learner(policy: Any, cfgs: Any, observation_space: Any, action_space: Any,
                  episode_length: int) -> Any:
    """The run's test-time learner: its own step, advantages from fresh critics.

    Args:
        policy: The run's actor as a :class:`~omnisafe_metacpo.policy.FunctionalPolicy`.
        cfgs: The run's config (from :func:`load_run_cfgs`).
        observation_space: The test env's observation space.
        action_space: The test env's action space.
        episode_length: T of the env (the inner learner's cost scale).
    """
    # The same critics for every algorithm: MetaCPO.yaml's model_cfgs.critic (sizes, lr) and its
    # advantage standardisation, whatever the run itself was trained with.
    defaults = metacpo_defaults(cfgs.env_id)
    algo_cfgs = step_cfgs(cfgs)
    critics = FreshCritics(
        observation_space,
        action_space,
        defaults.model_cfgs.critic,
        weight_initialization_mode=defaults.model_cfgs.weight_initialization_mode,
        standardized_rew_adv=bool(defaults.algo_cfgs.standardized_rew_adv),
        standardized_cost_adv=bool(defaults.algo_cfgs.standardized_cost_adv),
        cost_advantages=cfgs.meta_test_cfgs.get('cost_advantages', 'fresh_critic'),
        cost_returns_gamma=cost_returns_gamma(algo_cfgs),
    )
    return FreshCriticLearner(critics, policy, algo_cfgs, episode_length,
                              constrained=is_constrained(cfgs))


def cost_returns_gamma(algo_cfgs: Any) -> float:
    """The discount of the step's cost measure: 1 for the cost per episode (``episode``, also
    runs saved before ``cost_measure`` existed), ``cost_gamma`` for the paper's J_C."""
    return cost_measures.measure_discount(
        algo_cfgs.get('cost_measure', cost_measures.BEFORE_THE_KEY), algo_cfgs.cost_gamma)

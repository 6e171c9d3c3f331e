"""The linear cost prediction of a CPO step is on the scale of the measure it is compared with.

b = J_C - h and a'x must be in the same unit. For a step of +-0.01 along a fixed direction, the
change the inner learner's cost surrogate predicts on held-out rollouts is compared with the change
measured on rollouts of both policies with the same seeds (``benchmarks.cost_prediction``, whose
docstring has the design). The advantages are Monte-Carlo returns-to-go without a baseline, the
unbiased estimator: centring them on the rollout's own mean, as OmniSafe's buffer does, shrinks the
prediction (by a fifth on these rollouts of 4 episodes; see ``benchmarks/results/
cost_prediction.md``), which is a property of that estimator and not of the scale tested here. With
the other measure's scaling the prediction would be off by T / W = 500 / 99.3, about 5x: the test
checks that it would then fall outside the tolerance.

The same rollouts also go through the training sampler with its own cost advantages and the run's
(untrained) critic: ``algo_cfgs.cost_advantage: measure`` predicts the change on both scales;
MetaCPO's default ``gae`` (OmniSafe's GAE with the reward's gamma = 0.99, centred) predicts a small
part of the change of the cost per episode (a strict xfail below): the scale is T, but the
advantages estimate a discounted cost's gradient, and centring removes part of it.
"""

from __future__ import annotations

import pytest

from benchmarks import cost_prediction
from omnisafe_metacpo import cost_measures

EPISODES = 4
COUNTS = (32, 192, 128)  # rollouts of 4 episodes: fit, held-out, measured per policy
#: (scale, discount of the returns-to-go): each scale with its own discount
RETURNS = (('discounted', 0.99), ('episode', 1.0))
#: (scale, algo_cfgs.cost_advantage) of the rows with the training sampler's advantages
SAMPLERS = (('discounted', 'measure'), ('episode', 'measure'), ('episode', 'gae'))


@pytest.fixture(scope='module')
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], dict]:
    """The measurement, once for the tests below (about 2,000,000 env steps)."""
    measured = cost_prediction.measure('MetaPointCircle-v0', EPISODES, COUNTS, step=0.01, seed=3,
                                       log_dir=str(tmp_path_factory.mktemp('cost_prediction')),
                                       returns=RETURNS, baselines=('none',), samplers=SAMPLERS)
    return {(row['scale'], row['baseline']): row for row in measured}


@pytest.mark.slow
@pytest.mark.parametrize(('scale', 'gamma'), [('discounted', 0.99), ('episode', 1.0)])
def test_predicted_cost_change_matches_the_measured_one(rows: dict, scale: str,
                                                       gamma: float) -> None:
    row = rows[scale, 'none']
    assert row['returns_gamma'] == gamma
    predicted, measured = row['predicted'], row['measured']
    assert measured < 0, row  # the direction lowers the cost, and measurably
    assert 0.5 <= predicted / measured <= 2.0, row
    # scaled as the other measure (T / W = 500 / 99.3), the prediction would be ~5x off
    other = 500 / cost_measures.episode_weight(0.99, 500)
    wrong = predicted * other if scale == 'discounted' else predicted / other
    assert not 0.5 <= wrong / measured <= 2.0, (wrong, row)


@pytest.mark.slow
@pytest.mark.parametrize('scale', ['discounted', 'episode'])
def test_the_samplers_measure_advantages_predict_the_change(rows: dict, scale: str) -> None:
    row = rows[scale, 'sampler: measure']
    assert row['measured'] < 0, row
    assert 0.5 <= row['predicted'] / row['measured'] <= 2.0, row


@pytest.mark.slow
# Measured (benchmarks/results/cost_prediction.md): a small part of the change, on rollouts of one
# and of four episodes. Cost advantages discounted with gamma = 0.99 (OmniSafe's buffer discounts
# costs with the reward's gamma) estimate the gradient of a discounted cost, not of the
# undiscounted cost per episode that ``cost_measure: episode`` constrains, and scaling by T does not
# make up for the discount; centring on the rollout's mean removes a further part. Strict: the test
# reports when the prediction starts to match.
@pytest.mark.xfail(strict=True, reason="MetaCPO's default cost advantages (gae) predict a small "
                                       'part of the change in cost per episode')
def test_default_cost_advantages_predict_the_change_in_cost_per_episode(rows: dict) -> None:
    row = rows['episode', 'sampler: gae']
    assert 0.5 <= row['predicted'] / row['measured'] <= 2.0, row

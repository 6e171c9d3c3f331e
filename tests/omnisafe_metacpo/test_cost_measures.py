"""The two cost scales on hand-made cost sequences (episode ends by termination, by truncation,
and an episode cut by the end of the rollout)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from omnisafe_metacpo import cost_measures

GAMMA = 0.9


def _disc(costs: list[float]) -> float:
    return sum(GAMMA ** t * c for t, c in enumerate(costs))


def test_whole_episodes_truncated_at_t_give_the_mean_of_their_sums() -> None:
    # two episodes of T = 4 steps, truncated by the time limit
    first, second = [0.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 1.0]
    costs = np.array(first + second)
    ends = [3, 7]
    assert cost_measures.per_episode(costs, ends, 1.0, 4) == pytest.approx(2.0)
    expected = (_disc(first) + _disc(second)) / 2
    assert cost_measures.per_episode(costs, ends, GAMMA, 4) == pytest.approx(expected)
    assert cost_measures.episode_sums(costs, ends, GAMMA) == pytest.approx(
        [_disc(first), _disc(second)])


def test_the_discount_restarts_at_every_episode_start() -> None:
    # the authors' code restarts it only at a termination: the second episode would be worth
    # gamma^4 of its cost there; here it is worth as much as the first
    costs = np.array([1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    weights = cost_measures.discount_weights(8, [3, 7], GAMMA)
    assert weights.tolist() == pytest.approx([1, 0.9, 0.81, 0.729] * 2)
    assert cost_measures.per_episode(costs, [3, 7], GAMMA, 4) == pytest.approx(1.0)


def test_a_terminated_short_episode_counts_as_one_episode() -> None:
    # a termination after 2 steps, then a whole episode of T = 4
    costs = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    ends = [1, 5]
    assert cost_measures.episodes_covered(6, ends, GAMMA, 4) == 2.0
    assert cost_measures.per_episode(costs, ends, 1.0, 4) == pytest.approx(3 / 2)
    assert cost_measures.per_episode(costs, ends, GAMMA, 4) == pytest.approx(
        (_disc([1, 1]) + _disc([0, 0, 0, 1])) / 2)


def test_an_unfinished_episode_counts_by_the_share_of_weight_it_has_seen() -> None:
    # one whole episode of T = 4, then 2 steps of the next, cut by the end of the rollout
    costs = np.array([0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    ends = [3]
    share = (1 + GAMMA) / (1 + GAMMA + GAMMA ** 2 + GAMMA ** 3)
    assert cost_measures.episodes_covered(6, ends, GAMMA, 4) == pytest.approx(1 + share)
    assert cost_measures.per_episode(costs, ends, GAMMA, 4) == pytest.approx(
        (_disc([0, 0, 1, 1]) + _disc([1, 1])) / (1 + share))
    # undiscounted the share is the share of the steps: cost rate times T, as OmniSafe would
    # count a rollout of 6 steps of 4-step episodes
    assert cost_measures.per_episode(costs, ends, 1.0, 4) == pytest.approx(costs.mean() * 4)


def test_a_rollout_shorter_than_an_episode() -> None:
    # half of a Button episode (T = 1000) with gamma = 0.99: it has seen 99.3 % of the weight
    costs = np.zeros(500)
    costs[10] = 1.0
    value = cost_measures.per_episode(costs, [], 0.99, 1000)
    share = (1 - 0.99 ** 500) / (1 - 0.99 ** 1000)
    assert share == pytest.approx(0.9934, abs=1e-4)
    assert value == pytest.approx(0.99 ** 10 / share)
    assert cost_measures.per_episode(costs, [], 1.0, 1000) == pytest.approx(2.0)


def test_episode_weight() -> None:
    assert cost_measures.episode_weight(1.0, 500) == 500
    assert cost_measures.episode_weight(0.99, 500) == pytest.approx(
        (1 - 0.99 ** 500) / 0.01)
    assert cost_measures.episode_weight(0.99, 0) == 0.0


def test_leaving_the_circle_at_step_300_costs_200_against_4_25() -> None:
    # the example of the docs: an episode of 500 steps that leaves the circle at step 300
    costs = np.zeros(500)
    costs[300:] = 1.0
    assert cost_measures.per_episode(costs, [499], 1.0, 500) == 200.0
    # sum_{300 <= t < 500} 0.99^t = 0.99^300 (1 - 0.99^200) / 0.01 = 4.247
    assert cost_measures.per_episode(costs, [499], 0.99, 500) == pytest.approx(4.247, abs=0.001)


def test_unknown_measure_names_the_field_and_the_allowed_values() -> None:
    with pytest.raises(ValueError, match=r'algo_cfgs\.cost_measure.*episode, discounted'):
        cost_measures.check_measure('per_step')
    assert cost_measures.check_measure('discounted') == 'discounted'
    assert math.isclose(cost_measures.discount_weights(3, [], 0.5)[2], 0.25)


def test_returns_to_go_restart_at_episode_ends_and_stop_at_the_rollout_end() -> None:
    # costs 1 0 1 | 0 1 | 1 (unfinished): episodes end at steps 2 and 4
    costs = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(cost_measures.returns_to_go(costs, [2, 4], 1.0),
                                  [2.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(cost_measures.returns_to_go(costs, [2, 4], 0.5),
                               [1.25, 0.5, 1.0, 0.5, 1.0, 1.0])
    assert cost_measures.returns_to_go(costs, [], 1.0)[0] == 4.0  # one unfinished episode


@pytest.mark.parametrize(('rule', 'measure', 'expected'), [
    ('gae', 'episode', (0.98, 0.9, True, True)),  # OmniSafe's: the reward's gamma, any measure
    ('gae', 'discounted', (0.98, 0.9, True, True)),
    ('measure', 'episode', (1.0, 1.0, False, False)),
    ('measure', 'discounted', (0.95, 1.0, False, False)),
])
def test_cost_advantage_settings(rule: str, measure: str, expected: tuple) -> None:
    cfgs = {'cost_advantage': rule, 'cost_measure': measure, 'gamma': 0.98, 'cost_gamma': 0.95,
            'lam_c': 0.9, 'standardized_cost_adv': True}
    assert cost_measures.cost_advantage_settings(_Cfgs(cfgs)) == expected


def test_cost_advantage_settings_of_a_stock_config_are_omnisafe_s() -> None:
    cfgs = _Cfgs({'gamma': 0.99, 'cost_gamma': 0.99, 'lam_c': 0.95,  # no cost_advantage key
                  'standardized_cost_adv': False})
    assert cost_measures.cost_advantage_settings(cfgs) == (0.99, 0.95, True, False)
    with pytest.raises(ValueError, match=r"algo_cfgs\.cost_advantage = 'x'.*gae, measure"):
        cost_measures.cost_advantage_settings(_Cfgs({'cost_advantage': 'x'}))


class _Cfgs(dict):
    """A dict read by attribute, as OmniSafe's ``Config`` is."""

    __getattr__ = dict.__getitem__

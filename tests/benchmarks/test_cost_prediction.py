"""The cost-prediction benchmark: a tiny run, and its refusal of too few rollouts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmarks import cost_prediction


def test_a_tiny_run_writes_every_rule_on_both_scales(tmp_path) -> None:
    output = tmp_path / 'cost_prediction.md'
    assert cost_prediction.main(['--episodes', '2', '--fit', '16', '--held', '8', '--measure',
                                 '8', '--output', str(output)]) == 0
    frame = pd.read_csv(tmp_path / 'cost_prediction.csv')
    rules = {(row.scale, row.returns_gamma, row.baseline) for row in frame.itertuples()}
    gammas = {'gae': 0.99, 'measure': {'episode': 1.0, 'discounted': 0.99}}
    assert rules == {(scale, gamma, baseline) for scale, gamma in cost_prediction.RETURNS
                     for baseline in cost_prediction.BASELINES} | {
        (scale, 0.99 if rule == 'gae' else gammas['measure'][scale], f'sampler: {rule}')
        for scale, rule in cost_prediction.SAMPLERS}
    np.testing.assert_allclose(frame['ratio'], frame['predicted'] / frame['measured'])
    # the same measured change for every rule of a scale (one pair of policies, the same seeds)
    assert frame.groupby(['scale'])['measured'].nunique().eq(1).all()
    page = output.read_text(encoding='utf-8')
    assert page.count('| MetaPointCircle-v0 |') == len(frame)
    assert 'python -m benchmarks.cost_prediction --episodes 2' in page


def test_rollouts_shorter_than_two_per_set_are_refused() -> None:
    with pytest.raises(SystemExit):
        cost_prediction.main(['--episodes', '4', '--fit', '4', '--held', '8', '--measure', '8'])

"""The numpy normaliser update against OmniSafe's ``Normalizer``, bit for bit."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from omnisafe.common.normalizer import Normalizer

from omnisafe_metacpo.sampling import fast_normalizer


def _same_state(ref: Normalizer, fast: Normalizer) -> bool:
    for (key, a), b in zip(ref.state_dict().items(), fast.state_dict().values(), strict=True):
        if key == '_count':
            if not torch.equal(a, b):
                return False
        elif not torch.equal(torch.nan_to_num(a, nan=-7.0), torch.nan_to_num(b, nan=-7.0)) or \
                not torch.equal(torch.isnan(a), torch.isnan(b)):
            return False
    return True


@pytest.mark.parametrize('dim', [28, 56, 60])
def test_same_bits_as_omnisafe(dim: int) -> None:
    """Batches of 1-40 rows (a lockstep's observations), one of 30,000 (the ranks' union)."""
    rng = np.random.default_rng(dim)
    scale = rng.uniform(0.01, 30.0, dim).astype(np.float32)
    shift = rng.normal(0.0, 5.0, dim).astype(np.float32)
    ref, fast = Normalizer((dim,)), Normalizer((dim,))
    fast_normalizer.install(fast)
    assert isinstance(fast.__dict__['_push'], fast_normalizer.FastPush)
    for step in range(1500):
        rows = 30000 if step == 700 else 1 if step == 0 else int(rng.integers(1, 41))
        raw = rng.standard_normal((rows, dim)).astype(np.float32) * scale + shift
        expected = ref.normalize(torch.from_numpy(raw.copy()))
        got = fast_normalizer.normalize(fast, raw.copy())
        assert torch.equal(expected, torch.from_numpy(got)), step
        assert _same_state(ref, fast), step
    # OmniSafe's own normalize (the ObsNormalize wrapper's path) goes through the fast _push too
    raw = torch.from_numpy(rng.standard_normal((5, dim)).astype(np.float32))
    assert torch.equal(ref.normalize(raw.clone()), fast.normalize(raw.clone()))
    assert _same_state(ref, fast)


def test_counts_beyond_float32_integers() -> None:
    """Counts above 2**24 enter as float32, rounded, as torch's type promotion rounds them."""
    rng = np.random.default_rng(0)
    ref, fast = Normalizer((28,)), Normalizer((28,))
    fast_normalizer.install(fast)
    first = torch.from_numpy(rng.standard_normal((5, 28)).astype(np.float32))
    ref.normalize(first)
    fast.normalize(first)
    state = ref.state_dict()
    state['_count'] = torch.tensor(2**25 + 1)
    ref.load_state_dict(state)
    fast.load_state_dict(copy.deepcopy(state))
    for _ in range(300):
        raw = rng.standard_normal((int(rng.integers(1, 9)), 28)).astype(np.float32) * 3.0
        assert torch.equal(ref.normalize(torch.from_numpy(raw)),
                           torch.from_numpy(fast_normalizer.normalize(fast, raw)))
        assert _same_state(ref, fast)


def test_other_inputs_take_omnisafes_path() -> None:
    """A float64 batch or a single observation: OmniSafe's own arithmetic and shapes."""
    ref, fast = Normalizer((4,)), Normalizer((4,))
    fast_normalizer.install(fast)
    fast_normalizer.install(fast)  # idempotent: not wrapped twice
    assert fast.__dict__['_push'].normalizer is fast
    for raw in (torch.arange(4, dtype=torch.float32), torch.ones((3, 4), dtype=torch.float64),
                torch.tensor([[1.0, 2.0, 3.0, 5.0]])):
        assert torch.equal(ref.normalize(raw.clone()), fast.normalize(raw.clone()))
        assert _same_state(ref, fast)
    with pytest.raises(AssertionError, match='data shape'):
        fast.normalize(torch.ones((2, 3)))


def test_deepcopy_and_state_dict_keep_working() -> None:
    """Meta-testing deep-copies the normaliser; checkpoints save and load its state dict."""
    fast = Normalizer((3,))
    fast_normalizer.install(fast)
    fast_normalizer.normalize(fast, np.ones((2, 3), dtype=np.float32))
    twin = copy.deepcopy(fast)
    assert twin.__dict__['_push'].normalizer is twin
    fast_normalizer.normalize(twin, np.zeros((1, 3), dtype=np.float32))
    assert int(twin._count) == 3 and int(fast._count) == 2  # pylint: disable=protected-access
    restored = Normalizer((3,))
    fast_normalizer.install(restored)
    restored.load_state_dict(twin.state_dict())
    raw = np.full((1, 3), 0.5, dtype=np.float32)
    assert np.array_equal(fast_normalizer.normalize(restored, raw.copy()),
                          fast_normalizer.normalize(twin, raw.copy()))

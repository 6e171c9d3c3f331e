"""OmniSafe's observation normaliser, updated with numpy: the same bits, at less cost.

The batched sampler updates the shared ``Normalizer`` once per lockstep with the M new
observations. OmniSafe's ``normalize`` is about twenty torch calls on tensors of a few dozen
numbers (``_push``'s running mean and sum of squares, then ``(x - mean) / std`` and a clamp), each
paying torch's dispatch cost for nanoseconds of arithmetic, so it is a sizeable share of a
lockstep; numpy's elementwise arithmetic on the same buffers costs much less.

:class:`FastPush` replaces the normaliser instance's ``_push`` (an instance attribute, so every
caller -- OmniSafe's ``ObsNormalize`` wrapper, the batched sampler, the ranks' recorder in
:class:`~omnisafe_metacpo.distributed.normalizer_sync.NormalizerSync` -- goes through it) and
:func:`normalize` does the output step. The arithmetic is OmniSafe's, operation for operation and
in the same order:

* the two reductions (``torch.mean`` of the batch, ``torch.sum`` of squared deviations) stay torch
  calls: torch's CPU kernels sum rows in an order of their own (interleaved accumulators, not
  numpy's), so numpy's sums would differ in the last bits;
* ``sqrt`` stays torch's too: its vectorised float32 square root is 1 ulp off the correctly
  rounded one in some elements;
* everything else is elementwise float32 ``+ - * /`` and max/min, which IEEE 754 rounds
  correctly in numpy as in torch; integer counts enter as float32, as torch's type promotion
  converts an int64 0-dim tensor or a Python int against a float32 tensor;
* the buffers (``_mean``, ``_sumsq``, ``_var``, ``_std``, ``_count``) are written in place through
  numpy views, so state dicts, checkpoints and resume see the normaliser as before.

Anything else (a non-float32 batch, buffers off the CPU) goes to OmniSafe's own ``_push``. The
tests compare the states and outputs with OmniSafe's ``Normalizer`` bit for bit over thousands of
batches of 1 to 40 rows, a batch of 30,000 rows and counts beyond 2**24.
"""

from __future__ import annotations

import numpy as np
import torch
from omnisafe.common.normalizer import Normalizer

#: ``Normalizer._push``'s floor on the standard deviation (``1e-2 * torch.ones_like(std)``).
_STD_FLOOR = np.float32(1e-2)


class FastPush:
    """``Normalizer._push`` for float32 CPU batches, with numpy for the elementwise arithmetic.

    Args:
        normalizer: The normaliser whose buffers it updates.
    """

    def __init__(self, normalizer: Normalizer) -> None:
        self.normalizer = normalizer

    def __call__(self, raw_data: torch.Tensor) -> None:
        """Update the running mean, sum of squares, variance, std and count by ``raw_data``."""
        norm = self.normalizer
        # the registered tensors themselves, without nn.Module.__getattr__ (whose look-ups cost
        # about as much as the arithmetic)
        buffers = norm._buffers  # pylint: disable=protected-access
        mean_t = buffers['_mean']
        if (raw_data.dtype != torch.float32 or raw_data.device.type != 'cpu'
                or mean_t.device.type != 'cpu' or mean_t.dtype != torch.float32):
            Normalizer._push(norm, raw_data)  # pylint: disable=protected-access
            return
        if raw_data.shape == norm.shape:
            raw_data = raw_data.unsqueeze(0)
        assert raw_data.shape[1:] == norm.shape, 'data shape must be equal to (batch_size, *shape)'
        raw_data = raw_data.detach()
        raw = raw_data.numpy()
        count_raw = raw.shape[0]
        mean, sumsq = mean_t.numpy(), buffers['_sumsq'].numpy()
        mean_raw = torch.mean(raw_data, dim=0).numpy()
        sumq_raw = torch.sum(torch.from_numpy((raw - mean_raw) ** 2), dim=0).numpy()
        if norm._first:  # pylint: disable=protected-access
            mean[...] = mean_raw
            sumsq[...] = sumq_raw
            count = count_raw
            norm._first = False  # pylint: disable=protected-access
        else:
            old = int(buffers['_count'])
            count = old + count_raw
            delta = mean_raw - mean
            new, total = np.float32(count_raw), np.float32(count)
            mean += delta * new / total
            sumsq += sumq_raw + delta**2 * np.float32(old) * new / total
        buffers['_count'].fill_(count)
        var = buffers['_var']
        if count > 1:
            np.divide(sumsq, np.float32(count - 1), out=var.numpy())
        else:  # 0 / 0: NaN, as in torch (np.errstate is costly: only here)
            with np.errstate(divide='ignore', invalid='ignore'):
                np.divide(sumsq, np.float32(count - 1), out=var.numpy())
        # torch's own sqrt: its vectorised float32 sqrt is not correctly rounded (1 ulp apart
        # from numpy's in some elements), so numpy's would change the bits
        std = torch.sqrt(var, out=buffers['_std']).numpy()
        np.maximum(std, _STD_FLOOR, out=std)


def install(normalizer: Normalizer | None) -> None:
    """Make ``normalizer._push`` a :class:`FastPush` (no-op for ``None`` or if already done)."""
    if normalizer is not None and not isinstance(normalizer.__dict__.get('_push'), FastPush):
        normalizer._push = FastPush(normalizer)  # type: ignore[method-assign]


def normalize(normalizer: Normalizer, raw: np.ndarray) -> np.ndarray:
    """``normalizer.normalize(torch.from_numpy(raw)).numpy()``, the output step in numpy.

    Args:
        normalizer: The normaliser (its ``_push``, fast or not, is called as OmniSafe's
            ``normalize`` calls it).
        raw: A float32 batch of observations (rows).
    """
    data = torch.from_numpy(raw)
    buffers = normalizer._buffers  # pylint: disable=protected-access
    if buffers['_mean'].device.type != 'cpu':
        return normalizer.normalize(data).cpu().numpy()
    normalizer._push(data)  # pylint: disable=protected-access
    if int(buffers['_count']) <= 1:
        return raw
    output = (raw - buffers['_mean'].numpy()) / buffers['_std'].numpy()
    clip = buffers['_clip'].numpy()
    return np.minimum(np.maximum(output, -clip), clip)

"""Helpers shared by the modules of :mod:`omnisafe_metacpo.cpo_step`: value checks, dot product."""

from __future__ import annotations

import math

import torch


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Batched inner product over the last dimension."""
    return (x * y).sum(-1)


def _values_message(
    g_finite: bool,
    a_finite: bool,
    b_finite: bool,
    delta_finite: bool,
    delta_positive: bool,
) -> str | None:
    """The ValueError message for bad input values, None if they are fine."""
    bad = [
        name
        for name, ok in (('g', g_finite), ('a', a_finite), ('b', b_finite), ('delta', delta_finite))
        if not ok
    ]
    if bad:
        return f'{", ".join(bad)} must be finite (no NaN or Inf)'
    if not delta_positive:
        return 'delta (the trust-region size) must be > 0 everywhere'
    return None


def _check_values(g: torch.Tensor, a: torch.Tensor, b: torch.Tensor, delta: torch.Tensor) -> None:
    """Raise ValueError for non-finite inputs or ``delta <= 0`` (one host synchronisation)."""
    flags = torch.stack(
        [
            torch.isfinite(g).all(),
            torch.isfinite(a).all(),
            torch.isfinite(b).all(),
            torch.isfinite(delta).all(),
            (delta > 0).all(),
        ],
    ).tolist()
    message = _values_message(*flags)
    if message:
        raise ValueError(message)



def _check_host_values(
    maxabs: list[tuple[float, float]],
    b_host: list[float],
    delta_host: list[float],
) -> None:
    """Raise ValueError for non-finite ``g``, ``a``, ``b``, ``delta`` or ``delta <= 0``."""
    message = _values_message(
        all(math.isfinite(m[0]) for m in maxabs),
        all(math.isfinite(m[1]) for m in maxabs),
        all(math.isfinite(value) for value in b_host),
        all(math.isfinite(value) for value in delta_host),
        all(value > 0.0 for value in delta_host),
    )
    if message:
        raise ValueError(message)

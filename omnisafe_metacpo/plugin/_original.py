"""OmniSafe callables saved before :mod:`omnisafe_metacpo.install` replaced them."""

from __future__ import annotations

from typing import Any

get_default_kwargs_yaml: Any = None
custom_cfgs_to_dict: Any = None

"""Rollouts of pinned tasks: the data type, the two samplers, the environments they step."""

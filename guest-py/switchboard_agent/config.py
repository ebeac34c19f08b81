"""Per-agent settings from the host configuration (only keys the manifest declares)."""

from wit_world.imports import config as _config


def get(key: str, default=None):
    value = _config.get(key)
    return default if value is None else value

"""The agent's persistent key-value store, shared by all its calls (manifest: kv-quota-bytes)."""

import json as _json

from wit_world.imports import kv as _kv

from ._errors import host_call


def get(key: str):
    """The value as bytes, or None."""
    return _kv.get(key)


def get_str(key: str):
    value = _kv.get(key)
    return None if value is None else value.decode("utf-8")


def get_json(key: str):
    value = _kv.get(key)
    return None if value is None else _json.loads(value)


def set(key: str, value) -> None:
    """Store bytes, a str (UTF-8) or, through `set_json`, JSON; raises `NotAllowed` over quota."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    host_call(_kv.set, key, bytes(value))


def set_json(key: str, value) -> None:
    set(key, _json.dumps(value, separators=(",", ":")))


def delete(key: str) -> None:
    _kv.delete(key)


def keys(prefix: str = "") -> list:
    """Keys starting with `prefix`, sorted, at most 1000."""
    return _kv.list_keys(prefix)

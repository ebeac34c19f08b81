"""Errors a host import raises, and the translation from the generated bindings' `Err`."""

from componentize_py_types import Err
from wit_world.imports import types


class HostError(Exception):
    """The host refused a request (the contract's `error`); the agent may recover."""


class NotAllowed(HostError):
    """The manifest does not grant this (transfer target, kv quota, http host...)."""


class Invalid(HostError):
    """The request is malformed or over a size cap."""


class Unavailable(HostError):
    """The far side failed or timed out, or the host does not implement this yet."""


def host_call(function, *args):
    """Call a generated import, turning its `Err(types.Error)` into a `HostError`."""
    try:
        return function(*args)
    except Err as e:
        error = e.value
        if isinstance(error, types.Error_NotAllowed):
            raise NotAllowed(error.value) from None
        if isinstance(error, types.Error_Invalid):
            raise Invalid(error.value) from None
        raise Unavailable(error.value) from None

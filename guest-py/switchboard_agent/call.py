"""Effects on the current call, from any hook. Each is queued and carried out after the hook
returns, before the actions the hook returns. Refusals raise `HostError` subclasses."""

from wit_world.imports import call as _call
from wit_world.imports import types

from ._errors import host_call


def say(text: str) -> None:
    host_call(_call.say, text)


def play(asset: str) -> None:
    host_call(_call.play, asset)


def hangup() -> None:
    _call.hangup()


def transfer(target: str) -> None:
    """Blind transfer; raises `NotAllowed` unless the manifest lists `target`."""
    host_call(_call.transfer, target)


def send_dtmf(digits: str) -> None:
    host_call(_call.send_dtmf, digits)


def set_outcome(outcome: str) -> None:
    """The business outcome stored with the call ("appointment booked"); the last one wins."""
    host_call(_call.set_outcome, outcome)


def context() -> types.CallContext:
    """The call as the host knows it now (`.info`, `.handoff`)."""
    return _call.context()


def headers() -> list:
    """The call's selected signalling headers, as (name, value) pairs."""
    return _call.headers()


def expect_anything() -> None:
    """Free speech again (clears an earlier expectation)."""
    host_call(_call.expect, types.ExpectHint_Anything())


def expect_digits(min: int, max: int) -> None:
    host_call(_call.expect, types.ExpectHint_Digits(types.DigitRange(min, max)))


def expect_yes_no() -> None:
    host_call(_call.expect, types.ExpectHint_YesNo())


def expect_phrases(phrases: list) -> None:
    host_call(_call.expect, types.ExpectHint_Phrases(list(phrases)))

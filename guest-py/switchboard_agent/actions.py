"""What a hook asks the host to do, in order, after it returns."""

from wit_world.imports import types


def say(text: str):
    return types.Action_Say(text)


def play(asset: str):
    return types.Action_Play(asset)


def send_dtmf(digits: str):
    return types.Action_SendDtmf(digits)


def transfer(target: str):
    """Blind transfer; the target must be listed in the manifest."""
    return types.Action_Transfer(target)


def hangup():
    return types.Action_Hangup()


def collect_digits(max_digits: int, timeout_ms: int = 5000, terminator=None, prompt=None):
    """Gather up to `max_digits` keys; they arrive in one `on_dtmf` call."""
    return types.Action_CollectDigits(
        types.DigitRequest(
            max_digits=max_digits, timeout_ms=timeout_ms, terminator=terminator, prompt=prompt
        )
    )

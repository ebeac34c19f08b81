"""Log lines, tagged by the host with the agent, version and call id (cut at 4 KiB)."""

from wit_world.imports import log as _log
from wit_world.imports.types import LogLevel


def trace(message: str) -> None:
    _log.log(LogLevel.TRACE, message)


def debug(message: str) -> None:
    _log.log(LogLevel.DEBUG, message)


def info(message: str) -> None:
    _log.log(LogLevel.INFO, message)


def warn(message: str) -> None:
    _log.log(LogLevel.WARN, message)


def error(message: str) -> None:
    _log.log(LogLevel.ERROR, message)

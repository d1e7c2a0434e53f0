"""Reading one environment variable as a typed setting: the helpers every `from_environment` uses.

Each process builds its settings object once at start from these, so they
all read variables the same way: an unset or blank variable means the named
default; a value that cannot be used raises `SettingsError` whose message
names the variable and the value, and the process stops there instead of
failing later with Python's own words. Flags accept `1/true/yes/on` and
`0/false/no/off` (any case); anything else is an error, not silently false.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from common.errors import AutoscalerError

Number = TypeVar("Number", int, float)
Fallback = TypeVar("Fallback")

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off"})


class SettingsError(AutoscalerError, ValueError):
    """An environment variable holds a value that cannot be used; the message names the variable and the value."""


def _raw(name: str, environ: Mapping[str, str]) -> str | None:
    """The variable's value without surrounding blanks, or None when it is unset or blank."""
    text = environ.get(name, "").strip()
    return text or None


def env_str(name: str, default: Fallback, environ: Mapping[str, str] = os.environ) -> str | Fallback:
    """The variable's text, or `default` when it is unset or blank."""
    text = _raw(name, environ)
    return default if text is None else text


def env_flag(name: str, default: bool, environ: Mapping[str, str] = os.environ) -> bool:
    """The variable as a yes/no switch, or `default` when it is unset or blank."""
    text = _raw(name, environ)
    if text is None:
        return default
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise SettingsError(f"{name}={text!r} is not a switch: use true or false")


def env_int(
    name: str, default: Fallback, *, minimum: int | None = None, environ: Mapping[str, str] = os.environ
) -> int | Fallback:
    """The variable as a whole number of at least `minimum`, or `default` when it is unset or blank."""
    return _number(name, default, int, "a whole number", minimum, None, environ)


def env_float(
    name: str,
    default: Fallback,
    *,
    minimum: float | None = None,
    above: float | None = None,
    environ: Mapping[str, str] = os.environ,
) -> float | Fallback:
    """The variable as a number of at least `minimum` (or strictly above `above`), or `default` when unset/blank."""
    return _number(name, default, float, "a number", minimum, above, environ)


def _number(
    name: str,
    default: Fallback,
    kind: Callable[[str], Number],
    what: str,
    minimum: float | None,
    above: float | None,
    environ: Mapping[str, str],
) -> Number | Fallback:
    text = _raw(name, environ)
    if text is None:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not {what}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name}={text!r} is not a finite number")
    if minimum is not None and value < minimum:
        bound = "negative" if minimum == 0 else f"below {minimum:g}"
        raise SettingsError(f"{name}={text!r} must not be {bound}")
    if above is not None and value <= above:
        raise SettingsError(f"{name}={text!r} must be above {above:g}")
    return value

"""Options in an env id: ``<id>?key=value&key=value``, one syntax for every family.

One string names the env everywhere (training, evaluation, config.json, a resumed run), so the settings
that change the env ride in the id rather than in separate flags::

    dmc:cartpole-balance?action_repeat=4&episode_length=250
    mjx:CartpoleBalance?action_repeat=2&episode_length=500          # MR.Q's DMC protocol on MJX
    mjx:FingerSpin?ctrl_dt=0.01&sim_dt=0.005
    gym:Pendulum-v1?episode_length=100
    jax:PointMass?episode_length=50&terminate_outside=2
    mjx:CheetahRun?switch=reward&every=5000000                      # a non-stationary switch (nonstationary.py)

``episode_length`` counts *agent* steps in every family (= ``EnvSpec.max_episode_steps``); one agent step
is ``action_repeat`` frames (simulator control steps). Left out, it is the task's own time limit in frames
divided by ``action_repeat`` (rounded up, as dm_control and Brax's wrapper do): 1000 frames for the DMC
suite and its Playground ports.

The keys each built-in family accepts are ``FAMILY_OPTIONS``; an env registered with ``envs.register``
accepts its factory's keyword parameters (values are converted by ``literal``). The switch keys of
envs/nonstationary.py (``SWITCH_OPTIONS``) work on every JAX env.
"""

from __future__ import annotations

import math
from typing import Callable

from envs.core import UnknownEnvError


class EnvOptionError(UnknownEnvError):
    """A malformed, unknown or out-of-range option in an env id; the message names the valid keys."""


def parse_query(env_id: str) -> tuple[str, dict[str, str]]:
    """``base?k=v&...`` -> (base, {k: v}) with the values as text; refuses malformed and repeated options."""
    base, _, query = env_id.partition("?")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise EnvOptionError(f"{env_id}: option {item!r} is not key=value")
        if key in options:
            raise EnvOptionError(f"{env_id}: option {key!r} is given twice ({options[key]!r} and {value!r})")
        options[key] = value
    return base, options


def with_query(base: str, options: dict) -> str:
    """The inverse of ``parse_query``: ``base`` followed by ``?k=v&...`` (nothing if there are no options)."""
    return base + ("?" + "&".join(f"{k}={v}" for k, v in options.items()) if options else "")


def integer(env_id: str, key: str, text: str, minimum: int | None = None) -> int:
    """``text`` as an int that fits an int32 on the device (and is >= ``minimum``)."""
    try:
        value = int(text)
    except ValueError:
        raise EnvOptionError(f"{env_id}: {key} must be an integer, got {text!r}") from None
    if abs(value) > 2**31 - 1:
        raise EnvOptionError(f"{env_id}: {key} must be below 2^31 (an int32 on the device), got {value}")
    if minimum is not None and value < minimum:
        raise EnvOptionError(f"{env_id}: {key} must be >= {minimum}, got {value}")
    return value


def positive_number(env_id: str, key: str, text: str) -> float:
    """``text`` as a finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise EnvOptionError(f"{env_id}: {key} must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise EnvOptionError(f"{env_id}: {key} must be a finite number > 0, got {text}")
    return value


def literal(text: str) -> int | float | bool | str:
    """An option's value for a registered env's factory: an int or float where it reads as one, True/False
    for ``true``/``false``, else the text itself."""
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


_positive_int = lambda env_id, key, text: integer(env_id, key, text, minimum=1)  # noqa: E731
Converter = Callable[[str, str, str], object]
# Per built-in family: option key -> its converter. Families are matched on the id's prefix (`jax:PointMass`
# also covers `jax:PointMass1D`).
FAMILY_OPTIONS: dict[str, dict[str, Converter]] = {
    "dmc": {"action_repeat": _positive_int, "episode_length": _positive_int},
    "mjx": {"action_repeat": _positive_int, "episode_length": _positive_int,
            "ctrl_dt": positive_number, "sim_dt": positive_number},
    "gym": {"episode_length": _positive_int},
    "jax:PointMass": {"action_repeat": _positive_int, "episode_length": _positive_int,
                      "terminate_outside": positive_number},
}


def family_of(base_id: str) -> str | None:
    """The ``FAMILY_OPTIONS`` entry that covers ``base_id`` (an id without options), None for other ids."""
    for family in FAMILY_OPTIONS:
        if base_id == family or base_id.startswith(family if ":" in family else family + ":"):
            return family
    return None


def typed_options(env_id: str, options: dict[str, str], switch_keys: tuple[str, ...] = ()) -> dict:
    """The options of a built-in family's id, converted; an unknown key or a bad value raises EnvOptionError
    naming the valid keys (``switch_keys``: keys another layer handles, listed as valid too)."""
    base = env_id.partition("?")[0]
    schema = FAMILY_OPTIONS.get(family_of(base) or "", {})
    unknown = sorted(set(options) - set(schema))
    if unknown:
        valid = ", ".join([*schema, *switch_keys]) or "none"
        raise EnvOptionError(f"{env_id}: unknown option(s) {', '.join(unknown)}; valid keys for "
                             f"{family_of(base) or base}: {valid}")
    return {key: schema[key](env_id, key, text) for key, text in options.items()}

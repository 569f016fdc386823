"""Bring your own environment: ``envs.register(name, factory)`` makes a name valid wherever an env id is.

A registered id works in ``envs.make``, ``run.py --env``, sweeps, evaluation, the multitask and
non-stationary ids, error messages and checkpoints, exactly like a built-in one. ``name`` is either

* a family, e.g. ``"my"``: ids ``my:<anything>`` (and ``my`` alone), built by ``factory(rest, **options)``
  with ``rest`` the part after the colon (``""`` for ``my`` alone); or
* one id, e.g. ``"my:Hover"``: built by ``factory(**options)``, so a class can be registered as it is.

``options`` are the id's ``?key=value&...`` options (envs/options.py), converted by ``options.literal``
(``episode_length=200`` arrives as the int 200); a key the factory has no parameter for is refused in one
line that lists its parameters. The factory returns one of

* a ``gymnasium.Env`` with Box observation and action spaces and finite action bounds, and a time limit (a
  ``TimeLimit`` wrapper, as ``gymnasium.make`` adds): a host env. The factory is called once per instance
  (``num_envs`` of them, instance i seeded ``seed + i`` at its first reset; envs/gym_envs.py);
* an ``envs.PureJaxEnv`` (``spec``, ``reset``, ``step``: envs/core.py) or an ``envs.JaxEnv``: a JAX env for
  the device loop (off-policy agents) and for on-policy agents (PPO, which trains on JAX envs only).

Its spec's ``env_id`` becomes the id it was made from (without options), which config.json and checkpoints
record. A gymnasium id needs no registering at all: ``gym:<id>`` takes any id in gymnasium's registry
(``gymnasium.register`` adds your own).

How the registering code gets imported when a run starts from the command line, with no edit here:

* ``run.py --env-module mypackage.envs`` (or ``sweep.py``) imports the module before the env is made and
  records it in config.json, so ``--resume`` imports it again (``import_modules``);
* an installed package declares an entry point, found when its family is first asked for::

      [project.entry-points."ctrlrl.envs"]
      my = "mypackage.envs:make_env"        # the factory of the family "my"
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import os
import sys
from typing import Any, Callable, Sequence

from envs.core import HostVecEnv, JaxEnv, PureJaxEnv, UnsupportedEnvError, check_jax_env
from envs.options import EnvOptionError, literal, parse_query

ENTRY_POINT_GROUP = "ctrlrl.envs"
BUILT_IN = ("dmc", "gym", "mjx", "jax")
Factory = Callable[..., Any]

_FACTORIES: dict[str, Factory] = {}     # "family" or "family:name" -> factory
_IS_JAX: dict[str, bool] = {}          # id with options -> whether it made a JAX env (for is_jax_env)


class EnvModuleError(ValueError):
    """An ``--env-module`` that cannot be imported; the message names it and the reason."""


def register(name: str, factory: Factory, replace: bool = False) -> None:
    """Make ``name`` (a family ``"my"`` or one id ``"my:Hover"``) an env id built by ``factory`` (see the module
    docstring for how it is called and what it returns)."""
    family, colon, rest = name.partition(":")
    if not family or any(c in name for c in "?&=, ") or (colon and not rest):
        raise ValueError(f"envs.register: {name!r} is not a family ('my') or an id ('my:Hover'); names hold no "
                         "'?', '&', '=', ',' or spaces")
    if family in BUILT_IN:
        raise ValueError(f"envs.register: the families {', '.join(BUILT_IN)} are built in; register under your "
                         f"own family, e.g. 'my:{rest or 'Env'}' (a gymnasium id needs no registering: gym:<id>)")
    if not callable(factory):
        raise TypeError(f"envs.register({name!r}, ...): the factory must be callable, got {type(factory).__name__}")
    if name in _FACTORIES and not replace:
        raise ValueError(f"envs.register: {name!r} is already registered (pass replace=True to replace it)")
    _FACTORIES[name] = factory
    _IS_JAX.clear()


def listed_ids() -> list[str]:
    """Registered ids and families (``my:<name>``), and the families of ``ctrlrl.envs`` entry points."""
    families = {*_FACTORIES, *(ep.name for ep in _entry_points())}
    return sorted(name if ":" in name else f"{name}:<name>" for name in families)


def _entry_points() -> list:
    from importlib.metadata import entry_points

    return list(entry_points(group=ENTRY_POINT_GROUP))


def lookup(base_id: str) -> tuple[Factory, str | None] | None:
    """(factory, rest) for a registered id without options: rest is None for an id registered as it is (the
    factory takes only options), the part after the family's colon otherwise; None if nothing is registered.
    A family named by an entry point is loaded (and registered) the first time it is asked for."""
    if base_id in _FACTORIES:
        return _FACTORIES[base_id], None
    family, _, rest = base_id.partition(":")
    if family in BUILT_IN:
        return None
    if family not in _FACTORIES:
        found = [ep for ep in _entry_points() if ep.name == family]
        if not found:
            return None
        register(family, found[0].load())
    return _FACTORIES[family], rest


def is_registered(base_id: str) -> bool:
    return lookup(base_id) is not None


def is_jax(env_id: str) -> bool:
    """Whether the registered ``env_id`` (with its options) makes a JAX env: it is made once to find out."""
    if env_id not in _IS_JAX:
        env = make(env_id, num_envs=1, seed=0)
        _IS_JAX[env_id] = isinstance(env, JaxEnv)
        if isinstance(env, HostVecEnv):
            env.close()
    return _IS_JAX[env_id]


def make(env_id: str, num_envs: int, seed: int, **kwargs) -> HostVecEnv | JaxEnv:
    """Build the registered ``env_id``: its ``?key=value`` options (converted by ``options.literal``) and
    ``kwargs`` (as they are) are the factory's keyword arguments."""
    base, options = parse_query(env_id)
    factory, rest = lookup(base)
    arguments = {k: literal(v) for k, v in options.items()}
    clash = {k for k in arguments if k in kwargs and kwargs[k] != arguments[k]}
    if clash:
        raise ValueError(f"{env_id}: {', '.join(sorted(clash))} given both in the id and as an argument")
    arguments.update(kwargs)
    positional = () if rest is None else (rest,)
    _check_arguments(env_id, factory, positional, arguments)

    def build():
        return factory(*positional, **arguments)

    made = build()
    if isinstance(made, (PureJaxEnv, JaxEnv)):
        env = made.as_jax_env() if isinstance(made, PureJaxEnv) else made
        env.spec = dataclasses.replace(env.spec, env_id=base)
        if isinstance(made, JaxEnv):          # as_jax_env checked its own
            check_jax_env(env)
        return env
    import gymnasium

    if isinstance(made, gymnasium.Env):
        from envs.gym_envs import make_box_env

        return make_box_env(base, made, build, num_envs, seed)
    raise UnsupportedEnvError(f"{env_id}: its factory returned a {type(made).__name__}; it must return a "
                              "gymnasium.Env, an envs.PureJaxEnv or an envs.JaxEnv")


def _check_arguments(env_id: str, factory: Factory, positional: tuple, arguments: dict) -> None:
    """Refuse, in one line, an option that the factory has no parameter for (before calling it, so that a
    TypeError raised inside a user's factory is never mistaken for a bad option)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):        # some builtins have no signature: let the call decide
        return
    try:
        signature.bind(*positional, **arguments)
    except TypeError as error:
        accepted = [p.name for p in list(signature.parameters.values())[len(positional):]
                    if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        raise EnvOptionError(f"{env_id}: its factory cannot take these options ({error}); its options are: "
                             f"{', '.join(accepted) or 'none'}") from None


def import_modules(modules: Sequence[str]) -> None:
    """Import each module named (e.g. ``mypackage.envs``) so that its ``envs.register`` calls run; the current
    directory is on the path, as for ``python -m``. A module that cannot be found raises EnvModuleError in one
    line; an error inside the module itself propagates with its traceback."""
    if modules and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if not (module == error.name or module.startswith(f"{error.name}.")):   # a missing import inside it
                raise
            raise EnvModuleError(f"--env-module {module}: cannot import it ({error}); put the folder that holds "
                                 "it on PYTHONPATH, or install its package") from None

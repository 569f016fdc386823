"""Hyperparameter fields that declare their valid range, and one check for all of them.

Every int and float field of an agent's `Config` (and of the run's and the
collector's arguments) states its range where it is declared:

    batch_size: int = field(256, ">= 1")                     # then its docstring, as before
    tau: float = field(0.005, "(0, 1]")
    bin_lower: float = field(-10.0, "finite")               # any finite number
    horizon: int | None = field(None, ">= 1")                # None passes; a number must be >= 1
    critic_hidden: tuple[int, ...] = field((256, 256), ">= 1")   # non-empty, every width >= 1
    num_anchors: int = field(1, ">= 1", about="K")           # "--num-anchors (K) must be >= 1, got 0"

Ranges: `finite`, `>= a`, `> a`, `<= a`, `< a`, and intervals `[a, b]`, `(a, b]`,
`[a, b)`, `(a, b)`. `check_fields(config)` -- the first line of every
`Config.validate()` -- refuses, naming the flag, a float that is NaN or
infinite (a comparison such as `x < 0` lets NaN through), an int beyond int32
(JAX's step counters and keys), a bool where a number belongs, an empty tuple,
and any value outside the declared range. Relations between fields (e.g.
`--q-horizon <= --enc-horizon`) stay hand-written in `validate()`.
`tests/test_validation.py` holds every registered agent to this: each numeric
field declares a range, and values outside it are refused by the command line.

Hyperparameters are pytree leaves (as in rejax). An agent's `Config` is
declared with `@hyperparameters` instead of `@dataclasses.dataclass(frozen=True)`:
it stays a frozen, hashable dataclass (tyro parses it, `validate()` checks it,
config.json saves it) and is also a pytree whose leaves are its `float`
fields -- traced under `jit`/`vmap` -- while every other field (ints, bools,
strings, tuples, `float | None`) is static, part of the tree's structure.
Agents keep their config in their state as an ordinary pytree node, so a
sweep of learning rates, coefficients or discounts is a `vmap` over stacked
configs (experiments/loops/lanes.py): one compiled program for every lane. A float
the agent branches on in Python, or that sets a shape, is declared static:

    sigreg_coef: float = field(0.0, ">= 0", static=True)    # `if config.sigreg_coef > 0` builds another loss

Sweeping a static field runs one program per value (experiments/sweep.py).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, NamedTuple

INT32_MAX = 2**31 - 1

_BOUND = re.compile(r"^\s*(>=|>|<=|<)\s*(\S+)\s*$")
_INTERVAL = re.compile(r"^\s*([\[(])\s*([^,\s]+)\s*,\s*([^\])\s]+)\s*([\])])\s*$")


class Range(NamedTuple):
    """low/high (None: unbounded) and whether each end is included."""

    low: float | None
    high: float | None
    low_closed: bool
    high_closed: bool
    text: str

    def contains(self, value: float) -> bool:
        if self.low is not None and not (value >= self.low if self.low_closed else value > self.low):
            return False
        return self.high is None or (value <= self.high if self.high_closed else value < self.high)

    def describe(self) -> str:
        """`>= 1`, `in (0, 1]`, `a finite number`."""
        if self.low is None and self.high is None:
            return "a finite number"
        return self.text if self.low is None or self.high is None else f"in {self.text}"


def parse_range(text: str) -> Range:
    """`"[0, 1]"` -> Range(0, 1, True, True); raises ValueError on anything else."""
    if text.strip() == "finite":
        return Range(None, None, True, True, "finite")
    bound = _BOUND.match(text)
    if bound:
        op, number = bound.group(1), float(bound.group(2))
        if op.startswith(">"):
            return Range(number, None, op == ">=", True, f"{op} {bound.group(2)}")
        return Range(None, number, True, op == "<=", f"{op} {bound.group(2)}")
    interval = _INTERVAL.match(text)
    if interval:
        left, low, high, right = interval.groups()
        return Range(float(low), float(high), left == "[", right == "]", f"{left}{low}, {high}{right}")
    raise ValueError(f"range {text!r}: expected finite, >= a, > a, <= a, < a or an interval such as [0, 1]")


def field(default: Any, valid: str, *, about: str | None = None, static: bool = False, **kwargs) -> Any:
    """A dataclass field with its valid range (`valid`, see the module docstring) and, optionally, a short
    gloss that error messages put after the flag (`about`). `static=True` keeps a float field of a
    `@hyperparameters` config out of the traced leaves (the agent uses it in Python control flow or shapes)."""
    parse_range(valid)          # a malformed range fails at import, not at a user's first bad value
    metadata = {**kwargs.pop("metadata", {}), "valid": valid, "about": about, "static": static}
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def hyperparameters(cls: type) -> type:
    """Declare an agent's `Config`: a frozen dataclass that is also a pytree whose leaves are its traced
    fields (`float`, not declared `static`); every other field is static (see the module docstring).
    A subclass of a config is declared the same way and gets its own pytree registration. A class without
    its own `validate()` (and no base class with one) gets `check_fields` as its `validate()`."""
    def __post_init__(self):
        # A float field given an int (`Config(discount=1)`) would become an int32 leaf under vmap.
        for name in type(self).traced_fields:
            value = object.__getattribute__(self, name)
            if type(value) is int:
                object.__setattr__(self, name, float(value))

    if "__post_init__" not in cls.__dict__:
        cls.__post_init__ = __post_init__
    if not hasattr(cls, "validate"):
        cls.validate = check_fields
    cls = dataclasses.dataclass(frozen=True)(cls)
    hints = typing.get_type_hints(cls)
    fields = dataclasses.fields(cls)
    traced = tuple(f.name for f in fields if hints[f.name] is float and not (f.metadata or {}).get("static"))
    static = tuple(f.name for f in fields if f.name not in traced)
    cls.traced_fields = traced
    cls.static_fields = static
    import jax

    jax.tree_util.register_dataclass(cls, data_fields=list(traced), meta_fields=list(static))
    return cls


def traced_fields(config: Any) -> tuple[str, ...]:
    """The fields of a `@hyperparameters` config that are pytree leaves (traced in a sweep); () for any
    other dataclass."""
    return getattr(type(config), "traced_fields", ())


def flag(name: str) -> str:
    """The command-line flag of a field: `learning_rate` -> `--learning-rate`."""
    return "--" + name.replace("_", "-")


def declared_range(f: dataclasses.Field) -> Range | None:
    valid = f.metadata.get("valid") if f.metadata else None
    return None if valid is None else parse_range(valid)


def check_value(name: str, value: Any, valid: Range, about: str | None = None) -> None:
    """Raise ValueError naming `--name` if `value` (a number or a tuple of numbers) is not valid."""
    label = flag(name) + (f" ({about})" if about else "")
    if value is None:
        return
    if isinstance(value, (tuple, list)):
        if not value:
            raise ValueError(f"{label} needs at least one value, each {valid.describe()}")
        for item in value:
            _check_number(label, item, valid, f" (in {tuple(value)})")
        return
    _check_number(label, value, valid, "")


def _check_number(label: str, value: Any, valid: Range, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{label} must be a number {valid.describe()}, got {value!r}{where}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{label} must be a finite number, got {value}{where}")
    if isinstance(value, int) and abs(value) > INT32_MAX:
        raise ValueError(f"{label} must be at most {INT32_MAX} in magnitude (it is an int32 on the device), "
                         f"got {value}{where}")
    if not valid.contains(value):
        raise ValueError(f"{label} must be {valid.describe()}, got {value}{where}")


def check_fields(config: Any) -> None:
    """Check every field of the dataclass `config` that declares a range; the first bad one raises
    ValueError naming its flag, the range and the value."""
    for f in dataclasses.fields(config):
        valid = declared_range(f)
        if valid is not None:
            check_value(f.name, getattr(config, f.name), valid, f.metadata.get("about"))


def numeric_fields(config_type: type) -> list[dataclasses.Field]:
    """The fields of a dataclass whose type is int or float, optionally None, or a tuple of them."""
    hints = typing.get_type_hints(config_type)
    return [f for f in dataclasses.fields(config_type) if _is_numeric(hints[f.name])]


def _is_numeric(annotation) -> bool:
    if annotation in (int, float):
        return True
    args = [a for a in typing.get_args(annotation) if a is not type(None) and a is not Ellipsis]
    origin = typing.get_origin(annotation)
    if origin in (tuple, typing.Union, types.UnionType) and args:
        return all(_is_numeric(a) for a in args)
    return False

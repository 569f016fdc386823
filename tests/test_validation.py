"""Every numeric flag of every agent declares its range, and run.py and sweep.py refuse anything outside it.

Property-style: for every registered agent, every int and float field of its Config and of the run's
arguments, a generated set of bad values -- NaN, inf, a value just outside each end of the declared
range (zero, negative), huge (beyond int32, or 1e300 above a bounded range), the wrong type ("abc" for a
float, "1.5" for an int) -- must end
with exit code 2, exactly one `error:` line naming the flag, no traceback, and no run directory. Only
validation runs (no env is built, nothing is compiled), in this process.
"""

import dataclasses
import math
import typing

import pytest

import agents
from agents.config import declared_range, numeric_fields
from experiments.collect import CollectArgs
from experiments.train import RunArgs
from tests.cli_utils import run_inprocess, run_main

# Flags that shape what is run rather than a hyperparameter's value; sweep.py is tested on floats only.
RUN_FIELDS = [f for f in numeric_fields(RunArgs)]


def _scalar_type(config_type: type, name: str) -> type:
    hint = typing.get_type_hints(config_type)[name]
    args = [a for a in typing.get_args(hint) if a not in (type(None), Ellipsis)]
    return (args[0] if args else hint) if hint not in (int, float) else hint


def _fmt(value) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def bad_values(kind: type, valid) -> list[str]:
    """Values the field must refuse, as command-line text."""
    values = ["abc", "nan", "inf"] if kind is float else ["1.5", str(2**31)]
    for end, closed, step in ((valid.low, valid.low_closed, -1), (valid.high, valid.high_closed, 1)):
        if end is None:
            continue
        if kind is int:
            values.append(str(int(end) + step if closed else int(end)))
        else:
            values.append(_fmt(end + step * max(1e-3, abs(end) * 1e-3) if closed else float(end)))
    if valid.high is not None and kind is float:
        values.append("1e300")
    return values


def cases():
    out = []
    for name in sorted(agents.AGENTS):
        config_type = agents.get(name).Config
        for owner, fields in (("config", numeric_fields(config_type)), ("run", RUN_FIELDS)):
            if owner == "run" and name != "sac":       # the run's flags are the same for every agent
                continue
            for f in fields:
                valid = declared_range(f)
                kind = _scalar_type(config_type if owner == "config" else RunArgs, f.name)
                is_tuple = typing.get_origin(typing.get_type_hints(
                    config_type if owner == "config" else RunArgs)[f.name]) is tuple
                for value in bad_values(kind, valid):
                    out.append(pytest.param(name, f.name, value, is_tuple, id=f"{name}-{f.name}={value}"))
    return out


def _one_error_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize("agent, field_name, value, is_tuple", cases())
def test_run_refuses_a_bad_value(tmp_path, agent, field_name, value, is_tuple):
    run_dir = tmp_path / "run"
    flag = "--" + field_name.replace("_", "-")
    values = [value, "1"] if is_tuple else [value]
    result = run_inprocess("--agent", agent, flag, *values, "--run-dir", str(run_dir))
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert flag in _one_error_line(result)
    assert not run_dir.exists()


def sweep_cases():
    out = []
    for name in sorted(agents.AGENTS):
        config_type = agents.get(name).Config
        floats = [f for f in numeric_fields(config_type)
                  if _scalar_type(config_type, f.name) is float and not isinstance(f.default, tuple)]
        for f in floats:
            for value in bad_values(float, declared_range(f))[1:]:
                out.append(pytest.param(name, f.name, value, id=f"{name}-{f.name}={value}"))
    return out


@pytest.mark.parametrize("agent, field_name, value", sweep_cases())
def test_sweep_refuses_a_bad_point(tmp_path, agent, field_name, value):
    from experiments import sweep

    run_dir = tmp_path / "sweep"
    result = run_main(sweep.main, "--no-progress", "--agent", agent, "--sweep", f"{field_name}={value}",
                      "--run-dir", str(run_dir))
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "--" + field_name.replace("_", "-") in _one_error_line(result)
    assert not run_dir.exists()


def test_sweep_refuses_a_bad_flag(tmp_path):
    from experiments import sweep

    result = run_main(sweep.main, "--agent", "ppo", "--learning-rate", "nan", "--sweep", "entropy_cost=0,0.01",
                      "--run-dir", str(tmp_path / "sweep"))
    assert result.returncode == 2
    assert "--learning-rate must be a finite number, got nan" in _one_error_line(result)
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("config_type", [RunArgs, CollectArgs] + [agents.get(n).Config for n in sorted(agents.AGENTS)],
                         ids=lambda t: f"{t.__module__}.{t.__name__}")
def test_every_numeric_field_declares_its_range(config_type):
    missing = [f.name for f in numeric_fields(config_type) if declared_range(f) is None]
    assert missing == []
    defaults = config_type()
    for f in numeric_fields(config_type):          # the defaults themselves are in range
        value = getattr(defaults, f.name)
        for item in value if isinstance(value, tuple) else (value,):
            assert item is None or declared_range(f).contains(item), (f.name, item)
    assert len(numeric_fields(config_type)) >= 1


def test_bad_values_cover_nan_zero_negative_huge_and_type():
    from agents.config import parse_range

    assert bad_values(float, parse_range("> 0")) == ["abc", "nan", "inf", "0.0"]
    assert bad_values(int, parse_range(">= 1")) == ["1.5", "2147483648", "0"]
    assert bad_values(float, parse_range("[0, 1]")) == ["abc", "nan", "inf", "-0.001", "1.001", "1e300"]
    assert math.isnan(float(bad_values(float, parse_range("finite"))[1]))


@pytest.mark.parametrize("args, message", [
    (["--learning-starts", "-5"], "--learning-starts must be >= 0, got -5"),
    (["--medium-fraction", "nan"], "--medium-fraction must be a finite number, got nan"),
    (["--env", "jax:PointMass"], "collect.py records host envs"),
    (["--steps", "many"], "--steps"),
])
def test_collect_validates_before_collecting(tmp_path, args, message):
    from experiments import collect

    out = tmp_path / "data.hdf5"
    result = run_main(collect.main, *args, "--out", str(out))
    assert result.returncode == 2
    assert message in _one_error_line(result)
    assert not out.exists() and not (tmp_path / "data.behaviour").exists()


def test_collect_refuses_a_directory_as_out(tmp_path):
    from experiments import collect

    result = run_main(collect.main, "--env", "gym:InvertedPendulum-v5", "--policy", "random", "--out", str(tmp_path),
                      "--overwrite")
    assert result.returncode == 2
    assert "is a directory" in _one_error_line(result)


def test_a_dataclass_field_range_is_checked_on_construction_paths():
    from agents import sac

    with pytest.raises(ValueError, match=r"--updates-per-step.* must be in \(0, 1024\], got 1000000.0"):
        dataclasses.replace(sac.Config(), updates_per_step=1e6).validate()

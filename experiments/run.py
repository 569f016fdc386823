"""Train an agent: `python experiments/run.py --agent mrq --env dmc`.

Every hyperparameter of the chosen agent is a flag of the same command;
`python experiments/run.py --agent mrq --help` lists them.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import re
import sys
from pathlib import Path
from typing import Annotated, Literal

if __package__ in (None, ""):          # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tyro

import agents
from envs import UnknownEnvError, nonstationary, options
from experiments.checkpoint import CheckpointError
from experiments.train import (DivergenceError, RunArgs, RunError, RunIOError, Stopped, from_saved, read_saved_run,
                               train)



def _backend() -> str:
    import jax

    return jax.default_backend()

def _saved_flags(run_dir: str) -> dict | None:
    """The flags of the run saved in `run_dir`, so that `--resume` needs no other flag."""
    if not (Path(run_dir) / "config.json").exists():
        return None
    saved = read_saved_run(Path(run_dir))
    return {"run": dict(saved["run"]), "agent_config": dict(saved["agent_config"])}


def cli(cli_type: type, argv: list[str], description: str):
    """`tyro.cli`, with a parse error turned into one line (RunError): tyro draws a panel over many lines."""
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            parsed = tyro.cli(cli_type, args=argv, description=description)
        sys.stderr.write(captured.getvalue())     # warnings, if any
        return parsed
    except SystemExit as exit_:
        if not exit_.code:
            sys.stderr.write(captured.getvalue())
            raise
        raise RunError(f"{panel_message(captured.getvalue())} (--help lists the flags)") from None


def parse_or_exit(cli_type: type, description: str, argv: list[str] | None = None):
    """`cli` for the entry points whose main takes the parsed flags (bench.py, compare.py): a bad flag prints one
    `error:` line and exits with code 2."""
    try:
        return cli(cli_type, sys.argv[1:] if argv is None else argv, description)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


_PANEL_EDGES = "\u2502\u256d\u256e\u2570\u256f\u2500 "    # a panel's sides, corners and rules


def panel_message(text: str) -> str:
    """A tyro error panel (title, message, help sections; drawn with box characters on a terminal, with
    dashes elsewhere) as one line: its message, plus the flags it suggests ("Perhaps you meant")."""
    sections, current = [], []
    for line in text.splitlines() + [""]:
        content = line.strip().strip(_PANEL_EDGES).strip()
        if set(content) <= {"-"}:                        # a rule drawn in ASCII (no terminal)
            content = ""
        if line.strip().startswith("\u256d"):          # the top border carries the title
            sections += [current, [content]] if current else [[content]]
            current = []
        elif content:
            current.append(content)
        elif current:
            sections.append(current)
            current = []
    if not sections:
        return "bad flags"
    body = sections[1] if len(sections) > 1 else sections[0]      # sections[0] is the panel's title
    message = " ".join(body)
    for section in sections[2:]:
        if section[0].startswith("Perhaps you meant"):
            flags = list(dict.fromkeys(re.findall(r"(--[A-Za-z0-9][\w-]*)", " ".join(section))))
            if flags:
                message += f"; did you mean {' or '.join(flags[:3])}?"
    return message


HELP_FLAGS = ("-h", "--help")


def parse(argv: list[str]):
    """(RunArgs, agent Config) from the command line.

    The agent is read first to pick its flags. With `--resume`, the saved run's
    flags are the defaults, so only what should change (e.g. `--total-steps`)
    needs to be given.
    """
    run_args, config, _ = parse_command(argv)
    return run_args, config


def _run_args_type(agent_name: str) -> type:
    """RunArgs with `--agent` as a choice among the registered agents (computed now: agents.register adds
    some at run time), so that --help lists them."""
    names = tuple(agents.names())
    agent = Annotated[Literal[names], tyro.conf.arg(help=(
        "Agent name; `--agent NAME --help` lists NAME's hyperparameters and its defaults for these flags."))]
    cls = dataclasses.make_dataclass("RunArgs", [("agent", agent, dataclasses.field(default=agent_name))],
                                     bases=(RunArgs,), frozen=True)
    cls.__doc__ = RunArgs.__doc__
    return cls


def _as_run_args(parsed) -> RunArgs:
    return RunArgs(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(RunArgs)})


def parse_command(argv: list[str], verb: str = "Train", extra: type | None = None):
    """(RunArgs, agent Config, the `extra` flags) from the command line: `parse` for run.py, and for a command
    with flags of its own (sweep.py's --sweep), given as the dataclass `extra` (None: none), which --help shows
    with the run's. `verb` starts the help's description ("Train ppo ...", "Sweep ppo ...").

    `--help` without `--agent` lists the agents and the run's flags; with `--agent NAME`, NAME's flags too.
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--agent", default=None)
    pre.add_argument("--run-dir", default=None)
    pre.add_argument("--resume", action="store_true")
    pre.add_argument("--preset", default=None)
    pre.add_argument("--env", default=None)
    pre.add_argument("--distributed", action="store_true")
    known, _ = pre.parse_known_args(argv)
    if known.distributed:
        # Before anything touches a JAX backend; the cluster is detected from the environment
        # (SLURM, Cloud TPU, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
        import jax

        jax.distributed.initialize()
    saved = _saved_flags(known.run_dir) if known.resume and known.run_dir else None
    helping = any(a in HELP_FLAGS for a in argv)
    if helping and known.agent is None and saved is None:
        _agent_list_help(argv, verb, extra)
    agent_name = known.agent or (saved["run"].get("agent", RunArgs.agent) if saved else RunArgs.agent)
    agent = agents.get(agent_name)
    # Agents may set their own run defaults (PPO: 60M steps) and named presets of their flags.
    run_defaults = RunArgs(agent=agent_name, **agent.RUN_DEFAULTS)
    presets = agent.PRESETS
    preset = known.preset
    if preset is None and saved is None:
        preset = agent.preset()
        if preset is not None and not helping:
            # The default may depend on the backend (PPO: cpu on a CPU, playground on GPU/TPU): say which.
            print(f"preset: {preset} (the default for {agent_name} on this {_backend()} backend; choose one with "
                  f"--preset {'|'.join(sorted(presets))}; it is saved in config.json)", file=sys.stderr)
    if preset is not None and preset not in presets:
        valid = ", ".join(sorted(presets)) or "none for this agent"
        raise RunError(f"unknown --preset {preset!r} for {agent_name}; valid: {valid}")
    run_defaults = dataclasses.replace(run_defaults, preset=preset)
    config_defaults = agent.Config(**presets.get(preset, {}))
    # A preset's per-task changes (PPO's `playground`: Playground's per-task config), as defaults that flags
    # given on the command line still override; an env option (action_repeat) is added to the env id.
    task = {} if saved is not None or agent.task_preset is None else dict(agent.task_preset(
        preset, known.env or run_defaults.env))
    task_env_options = {k: task.pop(k) for k in list(task) if k in options.FAMILY_OPTIONS["mjx"]}
    run_fields = {f.name for f in dataclasses.fields(RunArgs)}
    run_defaults = dataclasses.replace(run_defaults, **{k: v for k, v in task.items() if k in run_fields})
    config_defaults = dataclasses.replace(config_defaults, **{k: v for k, v in task.items() if k not in run_fields})
    if saved is not None and saved["run"].get("agent") == agent_name:
        # The compile cache is this machine's, not the experiment's: its flags come from this command.
        run_defaults = dataclasses.replace(from_saved(RunArgs, saved["run"]), resume=False, resume_from=None,
                                           overwrite=False, compile_cache=RunArgs.compile_cache,
                                           compile_cache_dir=RunArgs.compile_cache_dir)
        config_defaults = from_saved(agent.Config, saved["agent_config"])
    run_type = _run_args_type(agent_name)
    fields = [("run", Annotated[run_type, tyro.conf.OmitArgPrefixes],
               dataclasses.field(default=run_type(**dataclasses.asdict(run_defaults)))),
              ("agent_config", Annotated[agent.Config, tyro.conf.OmitArgPrefixes],
               dataclasses.field(default=config_defaults))]
    if extra is not None:
        fields.append((verb.lower(), Annotated[extra, tyro.conf.OmitArgPrefixes], dataclasses.field(default=extra())))
    cli_type = dataclasses.make_dataclass("Args", fields, frozen=True)
    description = f"{verb} {agent_name} ({agent.__name__})."
    if presets:
        description += f" Presets (--preset): {', '.join(sorted(presets))}."
    if preset is not None:
        # The defaults shown are the preset's, not the Config's own (PPO's `cpu` on a CPU, not Playground's).
        chosen = "" if known.preset else f", the default for {agent_name} on this {_backend()} backend"
        description += f" The defaults shown are those of --preset {preset}{chosen}."
    parsed = cli(cli_type, argv, description)
    run_args = _as_run_args(parsed.run)
    env_options = options.parse_query(nonstationary.split_env_id(run_args.env)[0])[1] if task_env_options else {}
    missing = {k: v for k, v in task_env_options.items() if k not in env_options}
    if missing:
        base, sep, query = run_args.env.partition("?")
        added = "&".join(f"{k}={v}" for k, v in missing.items())
        run_args = dataclasses.replace(run_args, env=f"{base}?{added}" + (f"&{query}" if query else ""))
    if saved is None and agent.curve_points:
        run_args = curve_intervals(agent, parsed.agent_config, run_args, argv)
    if run_args.preset is not None and saved is None:
        print(f"preset: {run_args.preset} (flags given on the command line override it)", flush=True)
        if task or missing:
            changes = ", ".join(f"{k}={v}" for k, v in {**task, **missing}.items())
            print(f"preset {run_args.preset} for this task: {changes} (env: {run_args.env})", flush=True)
    return run_args, parsed.agent_config, getattr(parsed, verb.lower()) if extra is not None else None


def given(argv: list[str], name: str) -> bool:
    """Whether the flag of field `name` is on the command line (tyro takes --eval-every and --eval_every)."""
    flags = {"--" + name.replace("_", "-"), "--" + name}
    return any(a in flags or a.split("=", 1)[0] in flags for a in argv)


def curve_intervals(agent, config, run_args: RunArgs, argv: list[str]) -> RunArgs:
    """An agent's default --eval-every and --log-every (RUN_DEFAULTS: PPO evaluates every 1M steps) shrunk to
    --total-steps / agent.curve_points, in whole updates, where the flag was not given: a 200k-step PPO run
    otherwise evaluates once. Says what it chose."""
    try:
        config.validate()
        steps_per_update = agent.layout(config).steps_per_update if isinstance(agent, agents.OnPolicyAgent) else 1
    except ValueError:
        return run_args            # a bad value, or a layout that does not divide: validation names it next
    interval = -(-run_args.total_steps // agent.curve_points)
    interval = max(1, -(-interval // steps_per_update)) * steps_per_update
    changes = {name: interval for name in ("eval_every", "log_every")
               if not given(argv, name) and interval < getattr(run_args, name)}
    if changes:
        print(", ".join(f"--{k.replace('_', '-')} {v}" for k, v in changes.items()) + f" (about {agent.curve_points} "
              f"points over --total-steps {run_args.total_steps}, in whole updates of {steps_per_update} steps; "
              "pass the flags to choose)", flush=True)
    return dataclasses.replace(run_args, **changes)


def _agent_list_help(argv: list[str], verb: str, extra: type | None) -> None:
    """--help without --agent: the run's flags (with the default agent's defaults), the agents to choose from,
    and how to see one agent's flags. Exits (SystemExit(0), as tyro's help does)."""
    run_type = _run_args_type(RunArgs.agent)
    fields = [("run", Annotated[run_type, tyro.conf.OmitArgPrefixes], dataclasses.field(default=run_type()))]
    if extra is not None:
        fields.append((verb.lower(), Annotated[extra, tyro.conf.OmitArgPrefixes], dataclasses.field(default=extra())))
    description = (f"{verb} an agent. Agents (--agent): {', '.join(agents.names())}. "
                   f"`--agent NAME --help` lists NAME's hyperparameters, which are flags of this command too, "
                   f"and its defaults for the flags below (shown here for {RunArgs.agent}).")
    cli(dataclasses.make_dataclass("Args", fields, frozen=True), argv, description)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(arg.startswith("--video-every") for arg in argv):
        from experiments import video

        video.configure_headless()      # before anything imports mujoco, which then keeps its GL backend
    try:
        run_args, config = parse(argv)
        run_dir = train(run_args, config)
    except (RunError, UnknownEnvError, agents.UnknownAgentError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except DivergenceError as error:
        print(f"error: training diverged: {error}", file=sys.stderr)
        return 1
    except RunIOError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except Stopped as stopped:
        print(f"error: {stopped}", file=sys.stderr)
        return stopped.code
    except KeyboardInterrupt:
        print("error: interrupted; the last checkpoint written is kept (--resume continues from it)", file=sys.stderr)
        return 130
    print(f"run finished: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

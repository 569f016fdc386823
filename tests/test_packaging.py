"""Packaging: the console scripts (pyproject.toml -> ctrlrl_commands.py) are in the distribution's metadata, each
resolves to its command, one runs with --help in a new process; the wheel holds the subpackages (experiments.loops);
another project's package under one of ctrlrl's generic import names is one `error:` line, before its code runs."""

import shutil
import subprocess
import sys
import textwrap
import tomllib

import pytest

import ctrlrl_commands
from tests.cli_utils import ROOT

EXPECTED = {f"ctrlrl-{name.replace('_', '-')}": f"ctrlrl_commands:{name}"
            for name in ("run", "sweep", "evaluate", "plot", "collect", "bench", "compare", "claims", "arm_claims")}


def test_console_scripts_name_every_main_command():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == EXPECTED
    for target in scripts.values():
        assert callable(getattr(ctrlrl_commands, target.split(":")[1]))
    import importlib

    for module, function in ctrlrl_commands.COMMANDS.values():
        assert callable(getattr(importlib.import_module(module), function)), (module, function)


def test_the_distribution_metadata_holds_the_scripts_and_the_subpackages(tmp_path):
    """setuptools' own metadata, built from a copy of the sources."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("agents", "envs", "networks", "replay", "experiments"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    for name in ("pyproject.toml", "README.md", "ctrlrl_commands.py"):
        shutil.copy(ROOT / name, source / name)
    # setuptools' egg_info: the metadata step of `pip install` (entry points, the files of the distribution), without
    # needing the wheel package.
    (tmp_path / "meta").mkdir()
    result = subprocess.run([sys.executable, "-c", "from setuptools import setup; setup()", "egg_info", "--egg-base",
                             str(tmp_path / "meta")], cwd=source, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    info = tmp_path / "meta" / "ctrlrl.egg-info"
    entry_points = (info / "entry_points.txt").read_text()
    for script, target in EXPECTED.items():
        assert f"{script} = {target}" in entry_points
    sources = (info / "SOURCES.txt").read_text().split()
    assert {"experiments/loops/__init__.py", "experiments/loops/on_policy.py", "ctrlrl_commands.py"} <= set(sources)
    assert not any(path.startswith(("tests/", "notebooks/")) for path in sources)


def test_a_command_runs_with_help_in_a_new_process():
    launch = "import sys, ctrlrl_commands; sys.argv = ['ctrlrl-sweep', '--help']; sys.exit(ctrlrl_commands.sweep())"
    result = subprocess.run([sys.executable, "-c", launch], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--sweep" in result.stdout and "Sweep an agent" in result.stdout


def test_ctrlrls_own_packages_are_the_ones_imported_here():
    import experiments

    assert experiments.foreign_packages() == {}


@pytest.mark.parametrize("name, message", [
    ("agents", "error: ctrlrl's import names are taken by another project's packages ('agents' is {where}"),
    ("experiments", "error: ctrlrl's import name 'experiments' is taken by another project's package ({where}"),
])
def test_another_projects_package_is_one_error_line(tmp_path, name, message):
    other = tmp_path / "site" / name
    other.mkdir(parents=True)
    # The other project's agents must not even be imported; its experiments is (that is how it is told apart).
    (other / "__init__.py").write_text("print('the other project ran')\n" if name == "experiments" else
                                       "raise SystemExit('the other project ran')\n")
    launch = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(tmp_path / 'site')!r}, {str(ROOT)!r}]
        sys.argv = ['ctrlrl-run', '--help']
        import ctrlrl_commands
        sys.exit(ctrlrl_commands.run())
    """)
    result = subprocess.run([sys.executable, "-c", launch], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    where = other / "__init__.py" if name == "experiments" else other.resolve()
    assert len(lines) == 1 and lines[0].startswith(message.format(where=where)), result.stderr
    assert "install ctrlrl into its own virtual environment" in lines[0]
    assert "the other project ran" not in result.stderr

"""Entry points and the machinery around training: loops, logging, checkpoints.

ctrlrl installs generic top-level packages (agents, envs, networks, replay, experiments). Where another project's
package of one of these names comes first on the import path (e.g. installed into the same environment, where
site-packages precedes an editable install's finder), Python would import it in ours' place and fail later in a
puzzling way; importing `experiments` says so at once instead (ForeignPackageError, one line naming the package,
where it was found and the remedy). The README's "Import names" section says how the collision is avoided.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent       # the folder that holds ctrlrl's packages
SIBLING_PACKAGES = ("agents", "envs", "networks", "replay")
REMEDY = ("install ctrlrl into its own virtual environment (README, Set up), or uninstall the other project "
          "from this one")


class ForeignPackageError(ImportError):
    """A top-level package that ctrlrl imports is another project's."""


def foreign_packages() -> dict[str, str]:
    """{name: where it is} for the packages of SIBLING_PACKAGES that resolve to a place other than ROOT/<name>:
    where one is imported already, its path; otherwise where the import system would find it (found, not
    imported: nothing of the other project runs). A package that is not found at all is left to the import that
    needs it."""
    foreign = {}
    for name in SIBLING_PACKAGES:
        module = sys.modules.get(name)
        if module is not None:
            locations = list(getattr(module, "__path__", None) or [getattr(module, "__file__", None)])
        else:
            spec = importlib.util.find_spec(name)
            if spec is None:
                continue
            locations = list(spec.submodule_search_locations or [spec.origin])
        locations = [Path(p).resolve() for p in locations if p]
        if (ROOT / name).resolve() not in locations:
            foreign[name] = str(locations[0]) if locations else "a module without a file"
    return foreign


def check_packages() -> None:
    """ForeignPackageError if any of SIBLING_PACKAGES is another project's."""
    foreign = foreign_packages()
    if foreign:
        found = ", ".join(f"{name!r} is {where}" for name, where in foreign.items())
        raise ForeignPackageError(f"ctrlrl's import names are taken by another project's packages ({found}; ctrlrl's "
                                  f"are in {ROOT}): {REMEDY}")


check_packages()

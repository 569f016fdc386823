"""The notebooks run (with CTRLRL_NOTEBOOK_TINY=1: budgets of seconds) and match their plain-text pairs."""

from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_every_notebook_has_a_text_pair():
    assert {p.stem for p in NOTEBOOKS} == {"quickstart", "extend_an_agent", "sweep", "bring_your_own_env"}
    import jupytext

    for path in NOTEBOOKS:
        paired = jupytext.read(path.with_suffix(".py"))
        notebook = jupytext.read(path)
        sources = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]
        assert sources(paired) == sources(notebook), f"{path.name} and {path.stem}.py differ: run jupytext --sync"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("CTRLRL_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]

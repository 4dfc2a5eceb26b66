"""The quickstart notebook runs from top to bottom (in a scratch directory) and shows its pictures."""

import nbformat
from nbclient import NotebookClient

from tests.helpers import ROOT


def test_the_quickstart_notebook_runs_and_draws_its_pictures(tmp_path):
    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    pictures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(pictures) == 3  # loss curves, sample grid, confusion matrix
    text = "".join(output.get("text", "") for output in outputs)
    assert "test accuracy on 500 held-out digits" in text and "precision,recall,f1" in text
    assert (tmp_path / "runs" / "quickstart").is_dir()

"""The notebooks' diagrams (notebooks/figures/*.png) and generated tables are committed, shown, and up to date.

Each figure is drawn again from notebooks/figures/make_figures.py into a temporary folder and compared pixel by
pixel with the committed file (pixels, not bytes, so a different zlib cannot fail it). Each table (and each piece
of reference.py's source shown in the markdown) is written again and compared with the text between its markers
in the notebook. After changing the script or reference.py, run `python notebooks/figures/make_figures.py` and
commit the PNG files and notebooks it rewrites.
"""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from checkpoints import require

require("matplotlib", "nbformat")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import nbformat  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIGURE_DIR = ROOT / "notebooks" / "figures"
SCRIPT = FIGURE_DIR / "make_figures.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


FIGURES = sorted(load_script().FIGURES)
TABLES = sorted(load_script().TABLES)


@pytest.mark.parametrize("name", FIGURES)
def test_committed_figure_matches_its_script(name, tmp_path):
    committed = FIGURE_DIR / name
    assert committed.is_file(), f"{committed} is missing: run python notebooks/figures/make_figures.py"
    fresh = matplotlib.image.imread(load_script().render(name, tmp_path))
    stored = matplotlib.image.imread(committed)
    assert fresh.shape == stored.shape and np.array_equal(fresh, stored), (
        f"{name} is out of date with make_figures.py: run python notebooks/figures/make_figures.py and commit it"
    )


def embedded_images():
    """Every image path the notebooks' markdown embeds, relative to notebooks/."""
    found = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                found.update(re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", cell.source))
    return found


def test_every_figure_is_embedded_and_every_embedded_image_exists():
    embedded = embedded_images()
    assert {f"figures/{name}" for name in FIGURES} <= embedded, "a figure no notebook shows"
    missing = [image for image in embedded if not (ROOT / "notebooks" / image).is_file()]
    assert not missing, f"notebooks embed images that do not exist: {missing}"
    strays = {path.name for path in FIGURE_DIR.glob("*.png")} - set(FIGURES)
    assert not strays, f"PNG files in notebooks/figures/ that make_figures.py does not draw: {sorted(strays)}"


@pytest.mark.parametrize("name", TABLES)
def test_committed_table_matches_its_script(name):
    script = load_script()
    notebook_name, make = script.TABLES[name]
    notebook = nbformat.read(ROOT / "notebooks" / notebook_name, as_version=4)
    shown = [script.marked_table(cell.source, name) for cell in notebook.cells if cell.cell_type == "markdown"]
    shown = [text for text in shown if text is not None]
    assert len(shown) == 1, f"{notebook_name} should hold the markers of {name} in exactly one markdown cell"
    assert shown[0] == make(), f"{name} in {notebook_name} is out of date: run python notebooks/figures/make_figures.py"


def test_every_figure_is_shown_once():
    """One picture, one place: a reader meets each figure where it is explained, not three times."""
    counts = {}
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "markdown":
                for image in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", cell.source):
                    counts[image] = counts.get(image, 0) + 1
    assert {image: n for image, n in counts.items() if n > 1} == {}


def test_every_notebook_before_training_shows_a_figure():
    for path in sorted((ROOT / "notebooks").glob("0[0-7]_*.ipynb")):
        markdown = "".join(
            cell.source for cell in nbformat.read(path, as_version=4).cells if cell.cell_type == "markdown"
        )
        assert "](figures/" in markdown, f"{path.name} embeds no figure"

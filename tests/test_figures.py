"""The notebooks' diagrams (notebooks/figures/*.png) are committed, embedded in the markdown, and up to date.

Each figure is drawn again from notebooks/figures/make_figures.py into a temporary folder and compared pixel by
pixel with the committed file (pixels, not bytes, so a different zlib cannot fail it). After changing the script,
run `python notebooks/figures/make_figures.py` and commit the PNG files it rewrites.
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

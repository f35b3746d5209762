"""The notebooks' diagrams (notebooks/figures/*.png) are committed, embedded in the markdown, and up to date.

Each figure is drawn again from notebooks/figures/make_figures.py into a temporary folder and compared pixel by
pixel with the committed file (pixels, not bytes, so a different zlib cannot fail it). After changing the script,
run `python notebooks/figures/make_figures.py` and commit the PNG files it rewrites.
"""

import importlib.util
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.image  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

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

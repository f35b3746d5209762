"""What every notebook needs before its first step, imported in one line: `from nb_setup import PROMPT, check`.

Importing this module makes `import neo_numpy` work from a checkout that is not installed, and shows matplotlib
figures inline. `check` and `transformers_model` serve each notebook's final "Checks" section.
"""

import sys
import warnings
from pathlib import Path

import numpy as np

try:
    import neo_numpy  # noqa: F401  (installed, or already importable)
except ImportError:  # not installed: use the checkout these notebooks sit in
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

try:
    from IPython import get_ipython

    if get_ipython() is not None:
        get_ipython().run_line_magic("matplotlib", "inline")
except ImportError:  # plain Python, no IPython: figures go wherever matplotlib's backend sends them
    pass

PROMPT = "In Kraków, Łukasz told me that the Eiffel Tower is in the city of"


def check(what, ours, reference, rtol=1e-5):
    """Assert ours == reference up to float32 rounding (rtol, relative to the reference's largest value) and say so."""
    ours, reference = np.asarray(ours, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    error = np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-30)
    assert error <= rtol, f"{what}: relative difference {error:.1e} > {rtol:.0e}"
    print(f"✓ matches {what}  (max |difference| / max |reference| = {error:.1e})")


def transformers_model(folder):
    """transformers' GPTNeoForCausalLM on the same checkpoint folder (eager attention, fp32), or None without it."""
    warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets
    try:
        from transformers import GPTNeoForCausalLM
        from transformers.utils import logging
    except ImportError:
        print("torch / transformers are not installed: the checks against transformers are skipped")
        return None
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    return GPTNeoForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()

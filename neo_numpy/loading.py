"""`load_model`: a model name or folder in, a ready NeoModel out."""

from .backend import get_backend
from .checkpoint import load_weights
from .config import NeoConfig
from .hub import DEFAULT_MODEL, resolve_model_dir
from .model import NeoModel
from .threads import ThreadPlan


def load_model(name_or_path=DEFAULT_MODEL, backend: str = "numpy", dtype: str = "float32", threads=None) -> NeoModel:
    """Load a GPT-Neo checkpoint: "125M", "1.3B", "2.7B", a hub id, or a local folder with config.json + safetensors.

    backend: "numpy" (CPU) or "cupy" (NVIDIA GPU); dtype: weight storage, "float32" (or "float16" on the GPU);
    threads: BLAS threads, None for the default plan, an int for all work, or a threads.ThreadPlan.
    """
    plan = ThreadPlan.choose(threads)  # bad values are refused before anything is read
    chosen = get_backend(backend, dtype)
    folder = resolve_model_dir(name_or_path)
    config = NeoConfig.from_file(folder / "config.json")
    weights = load_weights(folder, config, chosen.asarray)
    return NeoModel(config, weights, chosen, folder, plan)

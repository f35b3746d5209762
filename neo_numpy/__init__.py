"""neo_numpy: EleutherAI's GPT-Neo in plain NumPy (and, optionally, CuPy)."""

from .config import NeoConfig
from .errors import BackendError, CheckpointError, InputError, ModelNotFoundError, NeoNumpyError
from .loading import load_model
from .model import NeoModel
from .settings import GenerationSettings
from .tokenizer import NeoTokenizer, load_tokenizer

__all__ = [
    "GenerationSettings",
    "NeoConfig",
    "NeoModel",
    "load_model",
    "load_tokenizer",
    "NeoTokenizer",
    "NeoNumpyError",
    "CheckpointError",
    "ModelNotFoundError",
    "InputError",
    "BackendError",
]

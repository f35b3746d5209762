"""neo_numpy: EleutherAI's GPT-Neo in plain NumPy (and, optionally, CuPy)."""

from .config import NeoConfig
from .errors import BackendError, CheckpointError, InputError, ModelNotFoundError, NeoNumpyError
from .model import NeoModel, load_model
from .tokenizer import NeoTokenizer, load_tokenizer

__all__ = [
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

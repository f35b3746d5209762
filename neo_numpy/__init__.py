"""neo_numpy: EleutherAI's GPT-Neo in plain NumPy (and, optionally, CuPy)."""

from .config import NeoConfig
from .errors import BackendError, CheckpointError, InputError, ModelNotFoundError, NeoNumpyError
from .loading import Checkpoint, load_model, load_tokenizer, open_checkpoint
from .model import NeoModel
from .settings import GenerationSettings
from .tokenizer import NeoTokenizer

__all__ = [
    "Checkpoint",
    "open_checkpoint",
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

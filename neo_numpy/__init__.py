"""neo_numpy: EleutherAI's GPT-Neo in plain NumPy (and, optionally, CuPy)."""

from .config import NeoConfig
from .errors import BackendError, CheckpointError, InputError, ModelNotFoundError, NeoNumpyError
from .model import NeoModel, load_model

__all__ = ["NeoConfig", "NeoModel", "load_model", "NeoNumpyError", "CheckpointError", "ModelNotFoundError", "InputError", "BackendError"]

"""The exceptions neo_numpy raises. Each message is one sentence that names the file, tensor or value at fault."""


class NeoNumpyError(Exception):
    """Base class: catch this to handle every error neo_numpy reports on purpose."""


class CheckpointError(NeoNumpyError):
    """A checkpoint folder, config.json or weights file is missing, unreadable or does not fit GPT-Neo."""


class ModelNotFoundError(CheckpointError):
    """A model name could not be resolved to a local folder or downloaded from the Hugging Face Hub."""


class InputError(NeoNumpyError, ValueError):
    """Token ids, a prompt or a generation setting is outside what the model can take.

    `parameter` names the argument at fault, when there is one, so that the command line can name its flag instead.
    """

    def __init__(self, message: str, parameter: str = None):
        super().__init__(message)
        self.parameter = parameter


class BackendError(NeoNumpyError):
    """The requested compute backend (for example CuPy on a GPU) is not available."""

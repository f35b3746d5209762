"""The one place that picks the array library: NumPy on the CPU, or CuPy on an NVIDIA GPU.

The model allocates through `backend.xp` (caches, masks, inputs) and moves weights with `backend.asarray`; the layer
math calls NumPy functions that CuPy arrays also answer (see layers.py). Nothing else asks which one it is.
"""

from dataclasses import dataclass

import numpy as np

from .errors import BackendError

DTYPES = ("float32", "float16")  # weight storage (bfloat16 files load too, widened or narrowed to one of these)


@dataclass(frozen=True)
class Backend:
    name: str  # "numpy" or "cupy"
    xp: object  # the array module: numpy or cupy
    dtype: object  # storage dtype of the weights; activations, scores and softmax are float32

    def asarray(self, host_array):
        """Move a host (NumPy) array onto the backend's device, in the weights' dtype when it is floating point."""
        dtype = self.dtype if np.issubdtype(host_array.dtype, np.floating) else None
        return self.xp.asarray(host_array, dtype=dtype)

    def to_host(self, array) -> np.ndarray:
        """Bring a backend array back as a NumPy array (a no-op on the CPU)."""
        return array.get() if hasattr(array, "get") else np.asarray(array)


def get_backend(name: str = "numpy", dtype: str = "float32") -> Backend:
    """Return the backend `name` ("numpy" or "cupy") storing weights in `dtype`."""
    if dtype == "bfloat16":
        raise BackendError(
            "bfloat16 weight storage is not supported (NumPy and CuPy have no bfloat16 type); "
            "bfloat16 checkpoint files load as float32, or as float16 on the GPU."
        )
    if dtype not in DTYPES:
        raise BackendError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}.")
    if name == "numpy":
        if dtype != "float32":
            raise BackendError(f"the NumPy backend computes in float32 only; dtype {dtype!r} is for the CuPy backend.")
        return Backend("numpy", np, np.float32)
    if name == "cupy":
        return _cupy_backend(dtype)
    raise BackendError(f"backend {name!r} is unknown; choose 'numpy' or 'cupy'.")


def _cupy_backend(dtype: str) -> Backend:
    try:
        import cupy
    except ImportError:
        raise BackendError(
            "the CuPy backend needs CuPy: pip install cupy-cuda12x (for CUDA 12) and an NVIDIA GPU."
        ) from None
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise BackendError("the CuPy backend needs an NVIDIA GPU, and CUDA reports none.")
    except cupy.cuda.runtime.CUDARuntimeError as error:
        raise BackendError(f"the CuPy backend cannot reach a GPU ({error}).") from None
    # float32 matmuls stay exact float32: CuPy only uses TF32 tensor cores when CUPY_TF32=1 is set by the user.
    storage = {"float32": cupy.float32, "float16": cupy.float16}[dtype]
    return Backend("cupy", cupy, storage)

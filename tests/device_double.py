"""A strict stand-in for CuPy, to run the CuPy backend's code paths on a machine without a GPU.

`FakeCupy()` is a module-like object that the tests put in sys.modules["cupy"], so that
`neo_numpy.load_model(..., backend="cupy")` goes through the real backend selection and gets it. Its arrays
(`DeviceArray`) hold NumPy arrays and compute with NumPy, so results equal the NumPy backend's exactly, but they
behave like CuPy arrays where NumPy code breaks on a GPU:

- implicit conversion to NumPy (`np.asarray(device_array)`, anything that calls `__array__`) raises TypeError,
  and so does mixing a NumPy array into a device operation, as CuPy does;
- every device-to-host copy is recorded: `.get()`, `cupy.asnumpy`, and the scalar conversions of 0-d arrays
  (`float()`, `int()`, `bool()`, `.item()`, `.tolist()`), which CuPy allows but which synchronise the device and copy;
  so is every host-to-device copy (`cupy.asarray` of host data, NumPy arrays used as indices or assigned);
- reductions return 0-d device arrays, not host scalars, as CuPy's do;
- a NumPy function reaches a device array (through `__array_function__` / `__array_ufunc__`), a `cupy.*`
  function or an array method only when CuPy has the same name and accepts the keyword arguments given;
  anything else raises TypeError naming what CuPy lacks.

CuPy's names and parameters come from the installed `cupy` package when it imports (it does without a GPU), else
from tests/cupy_names.json, written by `python tests/device_double.py` from an installed CuPy (see NAMES_SOURCE).

What it cannot catch: bugs in CuPy's own kernels, float16 numerics on the GPU (it computes what NumPy computes),
GPU memory limits, asynchronous-execution and stream effects, and speed.
"""

import inspect
import json
import re
import sys
import types
from pathlib import Path

import numpy as np

NAMES_FILE = Path(__file__).with_name("cupy_names.json")
CREATION_FROM_HOST = {"array", "asarray", "asanyarray", "ascontiguousarray"}  # the cupy functions that take host data
UFUNC_KEYWORDS = {"out", "dtype", "casting"}  # cupy.ufunc.__call__ refuses others ("Wrong arguments"), e.g. where=
UFUNC_METHODS = {  # ufunc methods CuPy implements, and for which ufuncs (None: all)
    "__call__": None,
    "outer": None,
    "reduce": {"add", "multiply"},
    "accumulate": {"add", "multiply"},
    "reduceat": {"add"},
    "at": {"add", "maximum", "minimum"},  # the ufuncs with a scatter operation
}


# ---------------------------------------------------------------------------------------------- CuPy's names


def parameters(function):
    """Parameter names of a callable, or None when it takes any keyword (**kwargs) or cannot be read.

    CuPy's Python functions have signatures; its Cython methods have one on their docstring's first line,
    e.g. "_ndarray_base.sum(self, axis=None, dtype=None, out=None, keepdims=False) -> _ndarray_base".
    A "*" among the names marks a function that takes any number of positional arguments (`reshape(*shape)`).
    """
    try:
        found = list(inspect.signature(function).parameters.values())
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in found):
            return None
        return ["*" if p.kind is inspect.Parameter.VAR_POSITIONAL else p.name for p in found]
    except (TypeError, ValueError):
        pass
    first_line = (getattr(function, "__doc__", None) or "").strip().split("\n")[0]
    found = re.match(r"[\w.]+\((.*)\)", first_line)
    if not found:
        return None
    names = []
    for part in found.group(1).split(","):
        name = part.split("=")[0].split(":")[0].strip().split(" ")[-1]  # "Py_ssize_t axis1" -> "axis1"
        if name.startswith("**"):
            return None
        if name.startswith("*") and len(name) > 1:
            names.append("*")
        elif name and name not in ("self", "*", "/"):
            names.append(name)
    return names


def cupy_names(cupy) -> dict:
    """What an installed CuPy offers: {"version", "functions": {name: parameters}, "ufuncs": [names],
    "ndarray": {attribute: parameters, or "property"}, "other": [dtypes, constants, ...]}."""
    functions, ufuncs, other = {}, [], []
    for name in dir(cupy):
        if name.startswith("_"):
            continue
        value = getattr(cupy, name)
        if isinstance(value, cupy.ufunc):
            ufuncs.append(name)
        elif callable(value) and not isinstance(value, type):
            functions[name] = parameters(value)
        elif not isinstance(value, types.ModuleType):
            other.append(name)
    ndarray = {}
    for name in dir(cupy.ndarray):
        value = getattr(cupy.ndarray, name)
        ndarray[name] = parameters(value) if callable(value) and not isinstance(value, type) else "property"
    return {"version": cupy.__version__, "functions": functions, "ufuncs": ufuncs, "ndarray": ndarray, "other": other}


def load_names():
    """(names, where they came from): the installed CuPy when it imports, else the committed tests/cupy_names.json."""
    try:
        import cupy
    except ImportError:
        names = json.loads(NAMES_FILE.read_text())
        return names, f"tests/cupy_names.json (written from CuPy {names['version']})"
    return cupy_names(cupy), f"the installed CuPy {cupy.__version__}"


# ---------------------------------------------------------------------------------------------- the device


class Transfers:
    """Every copy between host and device, in order: (direction "to host" or "to device", how, shape)."""

    def __init__(self):
        self.log = []

    def record(self, direction: str, how: str, shape) -> None:
        self.log.append((direction, how, tuple(shape)))

    def to_host(self):
        return [entry for entry in self.log if entry[0] == "to host"]

    def to_device(self):
        return [entry for entry in self.log if entry[0] == "to device"]

    def clear(self):
        self.log.clear()


class StrictnessError(TypeError):
    """What CuPy would refuse (a TypeError, as CuPy raises), or a function it does not have."""


def _check_call(what: str, params, args, kwargs) -> None:
    """Refuse keyword arguments CuPy's `what` does not take, and more positional arguments than it has."""
    if params is None:
        return
    unknown = sorted(set(kwargs) - set(params) - {"*"})
    if unknown:
        raise StrictnessError(f"CuPy's {what} takes no argument {', '.join(unknown)} (it takes {', '.join(params)})")
    if "*" not in params and len(args) > len(params):
        raise StrictnessError(f"CuPy's {what} takes at most {len(params)} positional arguments, got {len(args)}")


class FakeCupy:
    """The `cupy` module as the backend sees it: dtypes, array creation, functions, ufuncs, asnumpy, cuda."""

    def __init__(self):
        self.names, self.names_source = NAMES
        self.transfers = Transfers()
        self.ndarray = DeviceArray
        self.cuda = types.SimpleNamespace(
            runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=RuntimeError)
        )
        self.__version__ = f"device double of CuPy {self.names['version']}"

    def asnumpy(self, array):
        return array.get() if isinstance(array, DeviceArray) else np.asarray(array)

    def __getattr__(self, name):
        names = self.names
        if name in names["ufuncs"]:
            return lambda *args, **kwargs: self.apply_ufunc(getattr(np, name), "__call__", args, kwargs)
        if name in names["functions"]:
            return lambda *args, **kwargs: self.call_function(name, getattr(np, name, None), args, kwargs)
        if name in names["other"] and hasattr(np, name):
            return getattr(np, name)  # dtypes and constants: CuPy's are NumPy's own
        raise AttributeError(f"module 'cupy' has no attribute {name!r}")

    # --- moving arrays and checking operands

    def to_device(self, value, how: str):
        """A host value made a device array (recorded) when it is a NumPy array; anything else as it is."""
        if isinstance(value, np.ndarray):
            self.transfers.record("to device", how, value.shape)
            return DeviceArray(value.copy(), self)
        return value

    def device_data(self, value, what: str, allow_host: bool = False):
        """The NumPy data behind device arrays in `value` (nested in lists, tuples and dicts), for NumPy to compute
        with. A NumPy array among them is refused, as CuPy refuses host arrays, unless `allow_host` (a copy)."""
        if isinstance(value, DeviceArray):
            return value._data
        if isinstance(value, np.ndarray):
            if not allow_host:
                raise StrictnessError(
                    f"{what} was given a NumPy (host) array; CuPy refuses host arrays in device operations "
                    "(move it with cupy.asarray first)"
                )
            self.transfers.record("to device", what, value.shape)
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(self.device_data(item, what, allow_host) for item in value)
        if isinstance(value, dict):
            return {key: self.device_data(item, what, allow_host) for key, item in value.items()}
        return value

    def wrap(self, result, originals=()):
        """NumPy results as device arrays (host scalars become 0-d arrays, as CuPy returns); `originals` maps
        NumPy data back to the device array it came from (an `out=` argument)."""
        for original in originals:
            if isinstance(original, DeviceArray) and result is original._data:
                return original
        if isinstance(result, (np.ndarray, np.generic)):
            return DeviceArray(np.asarray(result), self)
        if isinstance(result, (list, tuple)):
            return type(result)(self.wrap(item, originals) for item in result)
        return result

    # --- the three ways NumPy code reaches CuPy

    def apply_ufunc(self, ufunc, method: str, inputs, kwargs):
        name = ufunc.__name__
        if name in self.names["functions"]:  # CuPy implements it otherwise (matmul is a generalised ufunc)
            if method != "__call__":
                raise StrictnessError(f"CuPy's {name!r} has no method {method!r}")
            return self.call_function(name, ufunc, inputs, kwargs)
        if name not in self.names["ufuncs"]:
            raise StrictnessError(f"CuPy has no ufunc {name!r} (numpy.{name} was called on a device array)")
        supported = UFUNC_METHODS.get(method, set())
        if method not in UFUNC_METHODS or (supported is not None and name not in supported):
            raise StrictnessError(f"CuPy's ufunc {name!r} has no method {method!r}")
        if method == "__call__":
            unknown = sorted(set(kwargs) - UFUNC_KEYWORDS)
            if unknown:
                raise StrictnessError(f"CuPy's ufunc {name!r} takes no argument {', '.join(unknown)}")
        what = f"numpy.{name}" if method == "__call__" else f"numpy.{name}.{method}"
        outs = kwargs.get("out", ())
        outs = outs if isinstance(outs, tuple) else (outs,)
        result = getattr(ufunc, method)(*self.device_data(inputs, what), **self.device_data(kwargs, what))
        return self.wrap(result, outs)

    def call_function(self, name: str, numpy_function, args, kwargs):
        """cupy.<name>(...), or numpy.<name>(...) on device arrays, computed by NumPy's function of that name."""
        if name not in self.names["functions"]:
            raise StrictnessError(f"CuPy has no function {name!r} (numpy.{name} was called on a device array)")
        _check_call(f"cupy.{name}", self.names["functions"][name], args, kwargs)
        if numpy_function is None:
            raise StrictnessError(f"cupy.{name} has no NumPy twin, so the double cannot run it")
        from_host = name in CREATION_FROM_HOST
        result = numpy_function(
            *self.device_data(args, f"cupy.{name}", from_host), **self.device_data(kwargs, f"cupy.{name}", from_host)
        )
        if from_host and isinstance(result, np.ndarray) and any(result is arg for arg in args):
            result = result.copy()  # cupy.asarray(host) is a new device array, never the host memory
        return self.wrap(result, [kwargs.get("out")])


# binary operators and the ufuncs they call, as CuPy's ndarray maps them
BINARY = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.divide, "floordiv": np.floor_divide,
    "mod": np.remainder, "pow": np.power, "matmul": np.matmul, "and": np.bitwise_and, "or": np.bitwise_or,
    "xor": np.bitwise_xor, "lshift": np.left_shift, "rshift": np.right_shift,
}  # fmt: skip
COMPARISONS = {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
               "ne": np.not_equal}  # fmt: skip
UNARY = {"neg": np.negative, "pos": np.positive, "abs": np.absolute, "invert": np.invert}


class DeviceArray:
    """An array on the pretend device: NumPy data that NumPy code cannot reach without an explicit copy."""

    __array_priority__ = 100  # NumPy defers binary operators to this class

    def __init__(self, data: np.ndarray, device: FakeCupy):
        self._data = data
        self._device = device

    # --- what CuPy refuses or counts

    def __array__(self, *args, **kwargs):
        raise StrictnessError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array "
            "explicitly."
        )

    def _to_host(self, how: str):
        self._device.transfers.record("to host", how, self._data.shape)
        return self._data

    def get(self, stream=None, order="C", out=None, blocking=True):
        return self._to_host("get").copy(order=order)

    def item(self):
        return self._to_host("item").item()

    def tolist(self):
        return self._to_host("tolist").tolist()

    def __float__(self):
        return float(self._to_host("float")[()] if self.ndim == 0 else self._single("float"))

    def __int__(self):
        return int(self._to_host("int")[()] if self.ndim == 0 else self._single("int"))

    def __bool__(self):
        return bool(self._to_host("bool")[()] if self.ndim == 0 else self._single("bool"))

    def __complex__(self):
        return complex(self._to_host("complex")[()] if self.ndim == 0 else self._single("complex"))

    def _single(self, how: str):
        if self.size != 1:
            raise TypeError(f"only arrays of one element can be converted with {how}()")
        return self._to_host(how).reshape(())[()]

    def __repr__(self):
        return f"device_array({self._to_host('repr')!r})"

    __str__ = __repr__

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        return (DeviceArray(row, self._device) for row in self._data)

    # --- what NumPy hands over

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        return self._device.apply_ufunc(ufunc, method, inputs, kwargs)

    def __array_function__(self, func, types, args, kwargs):
        module = func.__module__.removeprefix("numpy").strip(".")
        name = f"{module}.{func.__name__}" if module and module != "_core" else func.__name__
        return self._device.call_function(name, func, args, kwargs)

    # --- indexing (NumPy index arrays are copied to the device, as CuPy does)

    def __getitem__(self, key):
        return self._device.wrap(self._data[self._device.device_data(key, "indexing", allow_host=True)])

    def __setitem__(self, key, value):
        device = self._device
        self._data[device.device_data(key, "indexing", allow_host=True)] = device.device_data(
            value, "assignment", allow_host=True
        )

    # --- attributes and methods: only CuPy's

    def __getattr__(self, name):
        if name.startswith("__") or name not in self._device.names["ndarray"]:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        params = self._device.names["ndarray"][name]
        value = getattr(self._data, name)
        if params == "property":
            return self._device.wrap(value)

        def method(*args, **kwargs):
            _check_call(f"ndarray.{name}", params, args, kwargs)
            what = f"ndarray.{name}"
            device = self._device
            out = kwargs.get("out")
            return device.wrap(value(*device.device_data(args, what), **device.device_data(kwargs, what)), [out])

        return method

    # shape and friends are asked so often that they skip the look-up
    shape = property(lambda self: self._data.shape)
    dtype = property(lambda self: self._data.dtype)
    ndim = property(lambda self: self._data.ndim)
    size = property(lambda self: self._data.size)
    nbytes = property(lambda self: self._data.nbytes)


def _binary(ufunc, reflected=False, in_place=False):
    def operator(self, other):
        if isinstance(other, np.ndarray):  # CuPy refuses host arrays here too
            raise StrictnessError(f"a NumPy (host) array in a {ufunc.__name__} with a device array")
        inputs = (other, self) if reflected else (self, other)
        kwargs = {"out": (self,)} if in_place else {}
        return self._device.apply_ufunc(ufunc, "__call__", inputs, kwargs)

    return operator


for _name, _ufunc in BINARY.items():
    setattr(DeviceArray, f"__{_name}__", _binary(_ufunc))
    setattr(DeviceArray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    setattr(DeviceArray, f"__i{_name}__", _binary(_ufunc, in_place=True))
for _name, _ufunc in COMPARISONS.items():
    setattr(DeviceArray, f"__{_name}__", _binary(_ufunc))
for _name, _ufunc in UNARY.items():
    setattr(
        DeviceArray,
        f"__{_name}__",
        lambda self, _ufunc=_ufunc: self._device.apply_ufunc(_ufunc, "__call__", (self,), {}),
    )
DeviceArray.__hash__ = None

NAMES = load_names()


if __name__ == "__main__":  # regenerate the committed list from an installed CuPy
    import cupy

    json.dump(cupy_names(cupy), sys.stdout, indent=0, sort_keys=True)
    sys.stdout.write("\n")

"""Helpers shared by the benchmark scripts: model shapes, checkpoint folders, timing, machine description, tables.

The scripts are run as `python benchmarks/<script>.py` from anywhere; this module puts the project root on
sys.path so `import neo_numpy` finds the working tree without installing it.
"""

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
CACHE_DIR = BENCH_DIR / ".cache"  # random-weight checkpoints, git-ignored
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the benchmarks never download anything
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

VOCAB_SIZE = 50257
POSITIONS = 2048
WINDOW = 256

# The released models' shapes (their config.json files). A random checkpoint of one of these runs at the same speed
# as the released weights: the cost of every product depends on the shapes only.
SHAPES = {
    "125M": dict(hidden_size=768, num_layers=12, num_heads=12),
    "1.3B": dict(hidden_size=2048, num_layers=24, num_heads=16),
    "2.7B": dict(hidden_size=2560, num_layers=32, num_heads=20),
}


def shape_name(name: str):
    """'125m' -> '125M' (a key of SHAPES), or None when `name` is not one of the released sizes."""
    return {key.lower(): key for key in SHAPES}.get(str(name).lower())


def config_dict(size: str) -> dict:
    """config.json of a GPT-Neo of the released size `size`, as transformers writes it (the fields that matter)."""
    shape = SHAPES[size]
    return {
        "model_type": "gpt_neo",
        "architectures": ["GPTNeoForCausalLM"],
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": POSITIONS,
        "hidden_size": shape["hidden_size"],
        "num_layers": shape["num_layers"],
        "num_heads": shape["num_heads"],
        "intermediate_size": None,
        "window_size": WINDOW,
        "attention_types": [[["global", "local"], shape["num_layers"] // 2]],
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
        "embed_dropout": 0.0,
        "attention_dropout": 0.0,
        "resid_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "bos_token_id": 50256,
        "eos_token_id": 50256,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
    }


def tensor_shapes(size: str) -> dict:
    """name -> shape of every tensor in a GPT-Neo checkpoint of size `size` (tied head: no lm_head.weight)."""
    from neo_numpy.checkpoint import expected_shapes
    from neo_numpy.config import NeoConfig

    return expected_shapes(NeoConfig.from_dict(config_dict(size)))


def float32_bytes(size: str) -> int:
    """Bytes of every tensor of size `size` in float32 (the safetensors file is this plus a small header)."""
    total = 0
    for shape in tensor_shapes(size).values():
        count = 1
        for n in shape:
            count *= n
        total += 4 * count
    return total


def safetensors_bytes(folder: Path) -> int:
    """Total size of the .safetensors files in a checkpoint folder."""
    return sum(path.stat().st_size for path in Path(folder).glob("*.safetensors"))


def released_folder(size: str):
    """The released checkpoint of size `size` when it is already on this machine (weights/ or the HF cache), else None.

    Uses neo_numpy's own resolution with HF_HUB_OFFLINE=1, so nothing is ever downloaded.
    """
    from neo_numpy.errors import ModelNotFoundError
    from neo_numpy.hub import resolve_model_dir

    offline = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        return resolve_model_dir(size)
    except ModelNotFoundError:
        return None
    finally:
        if offline is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = offline


def check_disk(folder: Path, needed: int) -> None:
    """Exit with a message when the file system holding `folder` has less than `needed` bytes free."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        sys.exit(
            f"not enough disk space in {folder}: {gb(needed)} GB needed, {gb(free)} GB free. "
            "Free some space or pass a smaller --model."
        )


def build_random_checkpoint(size: str, folder: Path, seed: int = 0) -> Path:
    """GPTNeoForCausalLM(GPTNeoConfig(<size's shape>)).save_pretrained(folder), random weights, float32.

    Written into a temporary folder first and renamed at the end, so an interrupted build is never reused.
    """
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    check_disk(folder.parent, int(float32_bytes(size) * 1.05) + (1 << 30))
    available = memory_available()
    if available is not None and available < float32_bytes(size) * 1.3:
        sys.exit(
            f"building a random {size} checkpoint needs about {gb(float32_bytes(size) * 1.3)} GB of free memory; "
            f"{gb(available)} GB is available."
        )
    started = time.perf_counter()
    print(f"building a random-weight {size} checkpoint in {folder} (once; later runs reuse it) ...", flush=True)
    raw = {k: v for k, v in config_dict(size).items() if k not in ("model_type", "architectures", "torch_dtype")}
    torch.manual_seed(seed)
    model = GPTNeoForCausalLM(GPTNeoConfig(**raw)).eval()
    temporary = folder.with_name(folder.name + ".partial")
    if temporary.exists():
        shutil.rmtree(temporary)
    model.save_pretrained(temporary)
    del model
    temporary.rename(folder)
    print(f"  built in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def random_checkpoint_folder(size: str) -> Path:
    return CACHE_DIR / f"gpt-neo-{size}-random"


# ---------------------------------------------------------------------------------------------- measuring


def median(values):
    return statistics.median(values) if values else float("nan")


def timed(function, *args, **kwargs):
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def settle(seconds: float = 0.2) -> None:
    """Pause before a timed run so the other library's spinning worker threads go to sleep first.

    OpenBLAS (NumPy) and OpenMP (torch) threads busy-wait for a while after each parallel region; on a 2-core
    machine a run that starts while the other library still spins loses a core to it.
    """
    time.sleep(seconds)


def memory_available():
    """MemAvailable from /proc/meminfo in bytes, or None off Linux."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def load_average():
    """The 1-minute load average (runnable processes), or None where the OS does not say."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def cpu_usage() -> dict:
    """Busy and stolen CPU seconds of the whole machine (/proc/stat) and of this process's finished children.

    Take one before and one after starting a measurement's process; other_cpu() turns the pair into how many
    cores other programs kept busy meanwhile. Empty off Linux.
    """
    import resource

    try:
        fields = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return {}
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    ticks = os.sysconf("SC_CLK_TCK")
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "busy": (user + nice + system + irq + softirq) / ticks,
        "steal": steal / ticks,  # time the hypervisor gave this virtual machine's cores to someone else
        "children": children.ru_utime + children.ru_stime,
    }


def other_cpu(before: dict, after: dict, wall_seconds: float) -> dict:
    """Average cores used by other programs (busy time not spent by our child) and stolen, over wall_seconds."""
    if not before or not after:
        return {"other_cores": 0.0, "steal_cores": 0.0}
    ours = after["children"] - before["children"]
    others = max(0.0, after["busy"] - before["busy"] - ours)
    return {
        "other_cores": others / wall_seconds,
        "steal_cores": (after["steal"] - before["steal"]) / wall_seconds,
        "wall_seconds": wall_seconds,
    }


def gb(n_bytes) -> str:
    return f"{n_bytes / 1e9:.1f}"


# ---------------------------------------------------------------------------------------------- reporting


def cpu_model() -> str:
    """lscpu's vendor, model name and caches ("GenuineIntel Intel(R) Xeon(R) ..., L2 4 MiB, L3 ...")."""
    try:
        fields = dict(
            line.split(":", 1) for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        )
        fields = {key.strip(): value.strip() for key, value in fields.items()}
        caches = ", ".join(f"{level} {fields[level]}" for level in ("L2 cache", "L3 cache") if level in fields)
        return " ".join(part for part in (fields.get("Vendor ID"), fields.get("Model name")) if part) + (
            f" ({caches})" if caches else ""
        )
    except (OSError, ValueError):
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(with_torch: bool = True) -> dict:
    """CPU, cores, memory, library versions and the BLAS NumPy uses (threadpoolctl), for the report."""
    import numpy as np
    from threadpoolctl import threadpool_info

    from neo_numpy.threads import available_cores

    numpy_dir = Path(np.__file__).resolve().parent
    blas = []
    for pool in threadpool_info():
        if pool.get("user_api") != "blas":
            continue
        library = Path(pool["filepath"]).name
        path = Path(pool["filepath"]).resolve()  # NumPy's wheel keeps its OpenBLAS in numpy.libs/ (or numpy/.libs/)
        owner = "numpy" if path.is_relative_to(numpy_dir) or path.parent.name == "numpy.libs" else "other"
        blas.append(
            dict(
                owner=owner,
                library=library,
                internal_api=pool.get("internal_api"),
                version=pool.get("version"),
                architecture=pool.get("architecture"),
                threading_layer=pool.get("threading_layer"),
                num_threads=pool.get("num_threads"),
            )
        )
    info = {
        "cpu": cpu_model(),
        "cores_available": available_cores(),
        "cpu_count": os.cpu_count(),
        "memory_total_gb": None,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numpy_blas": [b for b in blas if b["owner"] == "numpy"] or blas,
        "blas_environment": {
            name: os.environ[name]
            for name in (
                "OPENBLAS_CORETYPE",
                "OPENBLAS_L2_SIZE",
                "OPENBLAS_NUM_THREADS",
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
            )
            if name in os.environ
        },
        "load_average_1min_at_end": load_average(),
    }
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_total_gb"] = round(int(line.split()[1]) * 1024 / 1e9, 1)
    except OSError:
        pass
    if with_torch:
        import torch
        import transformers

        config = torch.__config__.show()
        blas_info = next(
            (part.split("=", 1)[1] for part in config.replace(",", " ").split() if part.startswith("BLAS_INFO=")), "?"
        )
        info.update(torch=torch.__version__, torch_blas=blas_info, transformers=transformers.__version__)
    return info


def machine_lines(info: dict) -> list:
    """The machine description as markdown bullet lines."""
    blas = (
        ", ".join(
            f"{b['internal_api']} {b['version']} ({b['architecture']}, {b['threading_layer']}, {b['library']})"
            for b in info["numpy_blas"]
        )
        or "none found by threadpoolctl"
    )
    lines = [
        f"- CPU: {info['cpu']}, {info['cores_available']} cores available ({info['cpu_count']} online), "
        f"{info['memory_total_gb']} GB RAM",
        f"- Python {info['python']}, NumPy {info['numpy']} with BLAS: {blas}",
    ]
    settings = info.get("blas_environment")
    lines.append(
        "- BLAS environment: "
        + (", ".join(f"{name}={value}" for name, value in settings.items()) if settings else "none set")
        + " (the architecture in brackets above is the kernel OpenBLAS runs)"
    )
    if "torch" in info:
        lines.append(f"- torch {info['torch']} (BLAS: {info['torch_blas']}), transformers {info['transformers']}")
    start, end = info.get("load_average_1min_at_start"), info.get("load_average_1min_at_end")
    if start is not None:
        busy = start > 0.5 * info["cores_available"]
        lines.append(
            f"- 1-minute load average: {start:.2f} before the run, {end:.2f} at the end (this run itself adds 1 to 2)"
            + (". Other programs were using the CPU before the run: these timings are not reliable." if busy else "")
        )
    return lines


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path, data) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"raw numbers written to {path}")

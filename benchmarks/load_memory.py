"""Peak memory of neo_numpy.load_model, as a multiple of the checkpoint's size on disk (target: at most 1.1x).

    python benchmarks/load_memory.py                    # 2.7B shape: writes a 10.7 GB file once, then measures
    python benchmarks/load_memory.py --model 125M       # 0.5 GB, quick
    python benchmarks/load_memory.py --folder weights/gpt-neo-1.3B   # any checkpoint folder already on disk

The checkpoint of the chosen shape is written once into benchmarks/.cache/memory-<size>/ (config.json and one
model.safetensors of random float32 numbers, written with NumPy directly: much faster than building the model
with transformers) and reused later. Then a fresh Python process imports neo_numpy, notes its resident memory,
runs load_model(folder) and reports its own peak resident set size: VmHWM, read from /proc/self/status inside that
process. (Not getrusage's ru_maxrss: it survives exec, so a process started by a large parent inherits the parent's
peak and reports it as its own.)
The page cache is not part of a process's RSS, so a warm or cold file cache gives the same peak.
"""

import argparse
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the project root on sys.path)

TARGET = 1.1  # peak RSS / file size


def write_random_checkpoint(size: str, folder: Path) -> Path:
    """config.json + model.safetensors of the released `size` shape, filled with random float32 (std 0.02)."""
    import numpy as np

    shapes = common.tensor_shapes(size)
    header, offset = {}, 0
    for name, shape in shapes.items():
        length = 4 * int(np.prod(shape))
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + length]}
        offset += length
    header["__metadata__"] = {"format": "pt"}
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # the data starts 8-byte aligned, as safetensors writes it

    common.check_disk(folder.parent, offset + (1 << 30))
    print(
        f"writing a random {size}-shaped checkpoint ({common.gb(offset)} GB) into {folder} "
        "(once; later runs reuse it) ...",
        flush=True,
    )
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    pool = rng.standard_normal(1 << 24, dtype=np.float32) * np.float32(0.02)  # 64 MB of random numbers, reused
    temporary = folder.with_name(folder.name + ".partial")
    temporary.mkdir(parents=True, exist_ok=True)
    written, next_report = 0, 1 << 30
    with open(temporary / "model.safetensors", "wb") as file:
        file.write(struct.pack("<Q", len(header_bytes)))
        file.write(header_bytes)
        for shape in shapes.values():
            remaining = int(np.prod(shape))
            start = int(rng.integers(pool.size))  # each tensor starts somewhere else in the pool
            while remaining:
                count = min(remaining, pool.size - start)
                file.write(memoryview(pool[start : start + count]))
                remaining -= count
                written += 4 * count
                start = 0
            if written >= next_report:
                print(f"  {common.gb(written)} / {common.gb(offset)} GB", flush=True)
                next_report += 1 << 30
    (temporary / "config.json").write_text(json.dumps(common.config_dict(size), indent=2) + "\n", encoding="utf-8")
    temporary.rename(folder)
    print(f"  written in {time.perf_counter() - started:.0f} s", flush=True)
    return folder


def status_bytes(field: str) -> int:
    """A field of /proc/self/status (VmRSS, VmHWM, ...) in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(folder: str) -> None:
    """Run in the fresh process: load the model and print one JSON line with the memory figures."""
    import neo_numpy

    before_rss, before_peak = status_bytes("VmRSS"), status_bytes("VmHWM")
    started = time.perf_counter()
    model = neo_numpy.load_model(folder)
    seconds = time.perf_counter() - started
    result = {
        "rss_before_load": before_rss,
        "peak_before_load": before_peak,
        "peak_rss": status_bytes("VmHWM"),
        "rss_after_load": status_bytes("VmRSS"),
        "load_seconds": seconds,
        "layers": model.config.num_layers,
    }
    print(json.dumps(result))


def measure(folder: Path) -> dict:
    """Load `folder` with neo_numpy in a fresh process; return its memory figures and the file size."""
    file_bytes = common.safetensors_bytes(folder)
    available = common.memory_available()
    if available is not None and available < file_bytes * TARGET + (1 << 29):
        sys.exit(
            f"loading {folder} needs about {common.gb(file_bytes * TARGET)} GB of memory, "
            f"but only {common.gb(available)} GB is available; close other programs or pick a smaller --model."
        )
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(folder)], capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"the loading process failed (exit status {done.returncode}):\n{done.stderr.strip()}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    peak = result["peak_rss"]  # the child's own VmHWM
    result.update(
        folder=str(folder),
        file_bytes=file_bytes,
        peak_over_file=peak / file_bytes,
        load_growth_over_file=(peak - result["rss_before_load"]) / file_bytes,
        target=TARGET,
    )
    return result


def report_rows(result: dict, label: str) -> list:
    """metric | value | target rows for the markdown table."""
    verdict = "PASS" if result["peak_over_file"] <= TARGET else "MISS"
    return [
        [f"checkpoint ({label})", f"{common.gb(result['file_bytes'])} GB safetensors", ""],
        ["RSS before load_model (Python + NumPy + neo_numpy)", f"{result['rss_before_load'] / 1e6:.0f} MB", ""],
        ["peak RSS during load_model", f"{result['peak_rss'] / 1e9:.2f} GB", ""],
        ["**peak RSS / file size**", f"**{result['peak_over_file']:.3f}x**", f"<= {TARGET}x {verdict}"],
        ["(peak RSS - RSS before load) / file size", f"{result['load_growth_over_file']:.3f}x", ""],
        ["load time (this cold process; file probably in the page cache)", f"{result['load_seconds']:.2f} s", ""],
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="2.7B", help="shape of the random checkpoint: 125M, 1.3B or 2.7B (default 2.7B)"
    )
    parser.add_argument("--folder", type=Path, help="measure this existing checkpoint folder instead of a random one")
    parser.add_argument("--json", type=Path, help="also write the raw numbers to this JSON file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return 0

    if args.folder:
        folder, label = args.folder, str(args.folder)
        if not (folder / "config.json").is_file():
            sys.exit(f"{folder} has no config.json: pass a checkpoint folder.")
    else:
        size = common.shape_name(args.model)
        if size is None:
            sys.exit(f"--model must be one of {', '.join(common.SHAPES)} (or use --folder PATH), got {args.model!r}.")
        folder = common.CACHE_DIR / f"memory-{size}"
        if not (folder / "model.safetensors").is_file():
            write_random_checkpoint(size, folder)
        label = f"{size} shape, random float32, {folder}"
    result = measure(folder)

    info = common.machine_info(with_torch=False)
    print()
    print("### neo_numpy.load_model peak memory")
    print()
    print(common.markdown_table(["metric", "value", "target"], report_rows(result, label)))
    print()
    print("\n".join(common.machine_lines(info)))
    if args.json:
        common.write_json(args.json, {"machine": info, "load_memory": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())

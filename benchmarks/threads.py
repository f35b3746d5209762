"""How fast NumPy's BLAS runs GPT-Neo's MLP product with 1, 2, ... threads, to choose neo_numpy's thread counts.

    python benchmarks/threads.py                     # 125M shape: hidden 768, inner 3072
    python benchmarks/threads.py --model 2.7B --repeats 30

Two products, both x @ W.T with W in the checkpoint's [out, in] layout, as neo_numpy computes them:
  decode  [1, hidden] @ [hidden, 4 hidden]    one token: matrix-vector, limited by memory bandwidth
  prefill [512, hidden] @ [hidden, 4 hidden]  a 512-token prompt: matrix-matrix, limited by arithmetic
Extra threads help the second; on small machines they often slow the first (thread start-up and
synchronisation cost more than the product itself). The fastest count for each is printed at the end.

A decode step reads every layer's weights once, so the one c_fc matrix (9 MB at 125M) is never in the CPU cache
when it is needed. The decode product is therefore timed over one distinct matrix per layer (num_layers of them,
113 MB at 125M), as a model would read them; the same product repeated on one cache-resident matrix is shown
too, for comparison: it is the figure a naive micro-benchmark reports.
"""

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the project root on sys.path)

PRODUCTS = (
    ("decode", 1, "per layer"),
    ("decode_cached", 1, "one"),
    ("prefill", 512, "one"),
)  # name, rows of x, matrices
MIN_SAMPLE_SECONDS = 0.02  # a fast product is repeated inside one sample until the sample takes this long


def time_product(x, weights: list, threads: int, repeats: int) -> list:
    """Seconds per x @ W.T with `threads` BLAS threads, W cycling through `weights`: one value per sample."""
    from neo_numpy.threads import blas_threads

    def sweep():
        for weight in weights:
            x @ weight.T

    with blas_threads(threads):
        sweep()  # warm-up (starts the thread pool)
        started = time.perf_counter()
        sweep()
        sweeps = max(1, math.ceil(MIN_SAMPLE_SECONDS / max(time.perf_counter() - started, 1e-7)))
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(sweeps):
                sweep()
            samples.append((time.perf_counter() - started) / (sweeps * len(weights)))
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="125M", help="shape: 125M, 1.3B or 2.7B (default 125M)")
    parser.add_argument(
        "--repeats", type=int, default=20, help="samples per thread count; medians are printed (default 20)"
    )
    parser.add_argument("--max-threads", type=int, help="sweep 1 .. this many threads (default: the cores available)")
    parser.add_argument("--json", type=Path, help="also write the raw times to this JSON file")
    args = parser.parse_args(argv)
    size = common.shape_name(args.model)
    if size is None:
        sys.exit(f"--model must be one of {', '.join(common.SHAPES)}, got {args.model!r}.")

    import numpy as np

    from neo_numpy.threads import ThreadPlan, available_cores

    load_at_start = common.load_average()
    hidden = common.SHAPES[size]["hidden_size"]
    inner = 4 * hidden
    cores = available_cores()
    counts = range(1, (args.max_threads or cores) + 1)
    rng = np.random.default_rng(0)
    layers = common.SHAPES[size]["num_layers"]
    per_layer = [rng.standard_normal((inner, hidden), dtype=np.float32) for _ in range(layers)]  # c_fc: [out, in]
    weight_bytes = per_layer[0].nbytes

    results = {}
    for name, rows, matrices in PRODUCTS:
        x = rng.standard_normal((rows, hidden), dtype=np.float32)
        weights = per_layer if matrices == "per layer" else per_layer[:1]
        results[name] = {}
        for threads in counts:
            print(
                f"{name}: [{rows}, {hidden}] @ [{hidden}, {inner}], "
                f"{len(weights)} matri{'ces' if len(weights) > 1 else 'x'}, "
                f"{threads} thread(s) ...",
                file=sys.stderr,
                flush=True,
            )
            results[name][threads] = time_product(x, weights, threads, args.repeats)

    rows_out, best = [], {}
    for name, _, _ in PRODUCTS:
        medians = {threads: common.median(times) for threads, times in results[name].items()}
        best[name] = min(medians, key=medians.get)

    def cell(name, threads, digits):
        value = common.median(results[name][threads])
        return f"{value * 1e3:.{digits}f}" + (" (fastest)" if threads == best[name] and len(counts) > 1 else ""), value

    for threads in counts:
        decode, decode_seconds = cell("decode", threads, 3)
        cached, cached_seconds = cell("decode_cached", threads, 3)
        prefill, prefill_seconds = cell("prefill", threads, 2)
        rows_out.append(
            [
                threads,
                decode,
                f"{weight_bytes / decode_seconds / 1e9:.1f}",
                cached,
                f"{weight_bytes / cached_seconds / 1e9:.1f}",
                prefill,
                f"{2 * 512 * hidden * inner / prefill_seconds / 1e9:.1f}",
            ]
        )

    default = ThreadPlan.choose()
    info = common.machine_info(with_torch=False)
    info["load_average_1min_at_start"] = load_at_start
    print()
    print(f"### BLAS threads for GPT-Neo {size} (hidden {hidden}): median of {args.repeats} samples")
    print()
    print(
        common.markdown_table(
            [
                "threads",
                f"decode [1, {hidden}] @ [{hidden}, {inner}], {layers} matrices in turn (ms)",
                "GB/s",
                "same, one cache-resident matrix (ms)",
                "GB/s",
                f"prefill [512, {hidden}] @ [{hidden}, {inner}] (ms)",
                "GFLOP/s",
            ],
            rows_out,
        )
    )
    print()
    print(f"- Fastest: {best['decode']} thread(s) for decode steps, {best['prefill']} for prefill.")
    print(
        f"- neo_numpy's default plan on this machine: {default.prefill} for prefill; for decode it times 1, half "
        "and all cores on the model's own MLP weights at the first decode step and keeps the fastest "
        "(neo_numpy/threads.py)."
    )
    print(
        f"- To use the measured counts: neo_numpy.load_model(..., threads=ThreadPlan(prefill={best['prefill']}, "
        f"decode={best['decode']})); `--threads N` (CLI, bench_cpu.py) sets one count N for both."
    )
    print("\n".join(common.machine_lines(info)))
    if args.json:
        common.write_json(
            args.json,
            {
                "machine": info,
                "model": size,
                "hidden": hidden,
                "inner": inner,
                "seconds": {name: {str(t): v for t, v in per.items()} for name, per in results.items()},
                "fastest": best,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""neo_numpy's CuPy backend against transformers on the same GPU (CUDA, eager attention), fp32 and fp16.

    python benchmarks/bench_gpu.py                      # 125M and 2.7B shapes, 5 repeats
    python benchmarks/bench_gpu.py --model 125M --repeats 3 --json gpu.json

For each model shape and dtype: decode tokens/s (greedy, batch 1, 32-token prompt, 64 new tokens, prefill
excluded as in bench_cpu.py), prefill tokens/s (forward on 512 tokens, all logits), and the GPU memory each library
holds after loading (CuPy's memory pool / torch.cuda.memory_allocated) and at its peak during decode.
Checkpoints are found or built as bench_cpu.py does. Needs CuPy, torch with CUDA and a GPU.
"""

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
from bench_cpu import NEW_TOKENS, PREFILL_TOKENS, PROMPT_TOKENS, resolve_checkpoint  # noqa: E402
from common import median  # noqa: E402


def synchronized(function):
    """Time a GPU call end to end: both libraries queue work asynchronously, so wait for the device each time."""
    import cupy
    import torch

    def run():
        torch.cuda.synchronize()
        cupy.cuda.Device().synchronize()
        started = time.perf_counter()
        result = function()
        torch.cuda.synchronize()
        cupy.cuda.Device().synchronize()
        return time.perf_counter() - started, result

    return run


def load_pair(folder, dtype):
    import cupy
    import torch
    from transformers import GPTNeoForCausalLM

    import neo_numpy

    pool = cupy.get_default_memory_pool()
    neo = neo_numpy.load_model(folder, backend="cupy", dtype=dtype)
    neo_bytes = pool.used_bytes()
    torch.cuda.reset_peak_memory_stats()
    tf = (
        GPTNeoForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype), attn_implementation="eager")
        .cuda()
        .eval()
    )
    tf_bytes = torch.cuda.memory_allocated()
    return neo, tf, neo_bytes, tf_bytes


def measure(neo, tf, repeats):
    import cupy
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    prompt = rng.integers(0, 50256, (1, PROMPT_TOKENS))
    long_ids = rng.integers(0, 50256, (1, PREFILL_TOKENS))
    tf_prompt, tf_long = torch.from_numpy(prompt).cuda(), torch.from_numpy(long_ids).cuda()

    def tf_generate(n):
        with torch.inference_mode():
            return tf.generate(
                tf_prompt,
                attention_mask=torch.ones_like(tf_prompt),
                do_sample=False,
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=0,
            )

    def tf_prefill():
        with torch.inference_mode():
            return tf(tf_long).logits

    runs = {
        ("neo", "decode", 1): synchronized(lambda: neo.generate(prompt, max_new_tokens=1, eos_token_id=None)),
        ("neo", "decode", NEW_TOKENS): synchronized(
            lambda: neo.generate(prompt, max_new_tokens=NEW_TOKENS, eos_token_id=None)
        ),
        ("tf", "decode", 1): synchronized(lambda: tf_generate(1)),
        ("tf", "decode", NEW_TOKENS): synchronized(lambda: tf_generate(NEW_TOKENS)),
        ("neo", "prefill", 0): synchronized(lambda: neo.forward(long_ids, return_backend_array=True)),
        ("tf", "prefill", 0): synchronized(tf_prefill),
    }
    for run in runs.values():  # warm-up: kernels compiled, memory pools filled
        run()
    times = {key: [] for key in runs}
    for repeat in range(repeats):
        for key in list(runs) if repeat % 2 == 0 else list(runs)[::-1]:
            times[key].append(runs[key]()[0])
    result = {}
    for lib in ("neo", "tf"):
        per_step = (median(times[(lib, "decode", NEW_TOKENS)]) - median(times[(lib, "decode", 1)])) / (NEW_TOKENS - 1)
        result[lib] = {
            "decode_tokens_per_second": 1.0 / per_step,
            "prefill_tokens_per_second": PREFILL_TOKENS / median(times[(lib, "prefill", 0)]),
        }
    same = np.array_equal(
        runs[("neo", "decode", NEW_TOKENS)]()[1], runs[("tf", "decode", NEW_TOKENS)]()[1].cpu().numpy()
    )
    result["greedy_ids_identical"] = same
    result["neo_peak_pool_bytes"] = cupy.get_default_memory_pool().total_bytes()
    result["tf_peak_bytes"] = torch.cuda.max_memory_allocated()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", action="append", help="125M, 1.3B, 2.7B or a folder (repeatable; default 125M and 2.7B)"
    )
    parser.add_argument("--dtype", action="append", choices=("float32", "float16"), help="default: both")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    try:
        import cupy
        import torch

        if not torch.cuda.is_available() or cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
        device = cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as error:
        sys.exit(f"bench_gpu.py needs CuPy, torch with CUDA and a GPU ({error}).")

    rows, raw = [], {}
    for name in args.model or ["125M", "2.7B"]:
        folder, description = resolve_checkpoint(name)
        print(f"{name}: {description}", file=sys.stderr)
        for dtype in args.dtype or ["float32", "float16"]:
            neo, tf, neo_bytes, tf_bytes = load_pair(folder, dtype)
            result = measure(neo, tf, args.repeats)
            result.update(neo_weights_bytes=neo_bytes, tf_weights_bytes=tf_bytes)
            raw[f"{name} {dtype}"] = result
            for metric in ("decode_tokens_per_second", "prefill_tokens_per_second"):
                ours, theirs = result["neo"][metric], result["tf"][metric]
                rows.append(
                    [
                        f"{name} {dtype}",
                        metric.replace("_", " "),
                        f"{ours:.1f}",
                        f"{theirs:.1f}",
                        f"{ours / theirs:.2f}x",
                    ]
                )
            rows.append(
                [
                    f"{name} {dtype}",
                    "GPU memory after load / peak (GB)",
                    f"{common.gb(neo_bytes)} / {common.gb(result['neo_peak_pool_bytes'])}",
                    f"{common.gb(tf_bytes)} / {common.gb(result['tf_peak_bytes'])}",
                    "",
                ]
            )
            rows.append(
                [f"{name} {dtype}", "greedy ids identical", "yes" if result["greedy_ids_identical"] else "no", "", ""]
            )
            del neo, tf
            gc.collect()
            cupy.get_default_memory_pool().free_all_blocks()
            torch.cuda.empty_cache()
    print(
        f"GPU: {device}; CuPy {cupy.__version__}, torch {torch.__version__}; "
        f"median of {args.repeats} alternating runs\n"
    )
    print(common.markdown_table(["model", "metric", "neo_numpy (CuPy)", "transformers (CUDA, eager)", "ratio"], rows))
    if args.json:
        common.write_json(args.json, raw)
    return 0


if __name__ == "__main__":
    sys.exit(main())

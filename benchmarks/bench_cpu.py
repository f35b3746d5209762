"""neo_numpy against transformers on the CPU, in one process, on the same checkpoint and the same threads.

    python benchmarks/bench_cpu.py                           # 125M, 5 repeats, every section
    python benchmarks/bench_cpu.py --model 1.3B --repeats 3 --only decode,bound,prefill
    python benchmarks/bench_cpu.py --model path/to/checkpoint --threads 2 --json results.json

--model 125M / 1.3B / 2.7B uses the released checkpoint when it is already on this machine (weights/ or the
Hugging Face cache; nothing is downloaded), otherwise a random-weight checkpoint of exactly that shape, built once
with transformers into benchmarks/.cache/ (speed depends on the shapes only, not on the numbers in them).

Sections (--only picks some): memory, load, decode, bound, batch, prefill, long. Every timing is the median over
--repeats runs, neo_numpy and transformers alternating. Progress goes to stderr; the markdown table to stdout.
"""

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the project root on sys.path, sets HF_HUB_OFFLINE=1)
from common import median, settle, timed  # noqa: E402

SECTIONS = ("memory", "load", "decode", "bound", "batch", "prefill", "long")
PROMPT_TOKENS = 32  # decode prompts
NEW_TOKENS = 64  # decode length; per-token time = (t[64 new] - t[1 new]) / 63, so the prefill cancels out
BATCH = 8
PREFILL_TOKENS = 512
LONG_PROMPT, SHORT_PROMPT, TIMED_STEPS = 1984, 48, 16  # decode steps at positions 1984..1999 versus 48..63
EOS = 50256

# Targets from the "Performance" issue. Only these two have a number; the other rows are reported against
# transformers in the same run (the ratio column) without a pass/fail line.
TARGETS = {
    "long_over_short": 1.25,  # decode time per token at position ~2000 within 25% of position ~50
    "load_peak_over_file": 1.1,  # peak RSS while loading <= 1.1 x the checkpoint file
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- setup


def resolve_checkpoint(name: str):
    """(folder, description): the released checkpoint if present, else a cached random one, or a given folder."""
    size = common.shape_name(name)
    if size is not None:
        released = common.released_folder(size)
        if released is not None:
            return Path(released), f"released EleutherAI/gpt-neo-{size} weights from {released}"
        folder = common.random_checkpoint_folder(size)
        if not (folder / "config.json").is_file():
            common.build_random_checkpoint(size, folder)
        return folder, (
            f"random-weight checkpoint of the {size} shape from {folder} "
            f"(the released one is not on this machine; the speed depends on the shapes only)"
        )
    folder = Path(name).expanduser()
    if not (folder / "config.json").is_file():
        sys.exit(f"--model must be 125M, 1.3B, 2.7B or a checkpoint folder with config.json; {folder} is neither.")
    return folder, f"checkpoint folder {folder}"


def transformers_from_neo(model, folder: Path):
    """A GPTNeoForCausalLM whose parameters are torch.from_numpy views of neo_numpy's arrays (no second copy).

    Used when the machine cannot hold two copies of the weights (2.7B: 2 x 10.7 GB). The arrays have
    transformers' own [out, in] layout, so its products run exactly as after from_pretrained.
    """
    import torch
    from transformers import GPTNeoConfig, GPTNeoForCausalLM
    from transformers.models.gpt_neo.modeling_gpt_neo import GPTNeoSelfAttention

    from neo_numpy.checkpoint import LAYER_TENSORS

    config = GPTNeoConfig.from_pretrained(folder)
    config._attn_implementation = "eager"
    with torch.device("meta"):  # parameters and buffers without storage
        tf_model = GPTNeoForCausalLM(config)
    weights = model.weights
    state = {
        "transformer.wte.weight": weights.wte,
        "transformer.wpe.weight": weights.wpe,
        "transformer.ln_f.weight": weights.ln_f_weight,
        "transformer.ln_f.bias": weights.ln_f_bias,
        "lm_head.weight": weights.lm_head,
    }
    for i, layer in enumerate(weights.layers):
        for field, (name, _) in LAYER_TENSORS.items():
            state[f"transformer.h.{i}.{name}"] = getattr(layer, field)
    tf_model.load_state_dict({name: torch.from_numpy(array) for name, array in state.items()}, assign=True, strict=True)
    for module in tf_model.modules():  # the causal-mask buffers are not in the state dict: build them as __init__ does
        if isinstance(module, GPTNeoSelfAttention):
            positions = config.max_position_embeddings
            bias = torch.tril(torch.ones((positions, positions), dtype=torch.bool)).view(1, 1, positions, positions)
            if module.attention_type == "local":
                bias = torch.bitwise_xor(bias, torch.tril(bias, -config.window_size))
            module.bias = bias
    left = [
        name for name, tensor in list(tf_model.named_parameters()) + list(tf_model.named_buffers()) if tensor.is_meta
    ]
    if left:
        sys.exit(f"could not build transformers' model on neo_numpy's arrays: {left[0]} has no data.")
    return tf_model.eval()


def load_both(folder: Path, args, sections, results):
    """Load transformers' model (from_pretrained) and neo_numpy's, timing the loads when 'load' is asked for."""
    import torch
    import transformers
    from transformers import GPTNeoForCausalLM

    import neo_numpy

    transformers.utils.logging.disable_progress_bar()
    need_transformers = bool(sections & {"load", "decode", "batch", "prefill"})
    loads = 2 if "load" in sections else 1
    file_bytes = common.safetensors_bytes(folder)
    available = common.memory_available()
    share = args.transformers_weights == "share"
    if args.transformers_weights == "auto" and available is not None and need_transformers:
        share = available < 2.3 * file_bytes + (1 << 30)
    if share and need_transformers:
        why = (
            "--transformers-weights share"
            if args.transformers_weights == "share"
            else f"{common.gb(available)} GB of memory is available, too little for two copies of {common.gb(file_bytes)} GB"
        )
        log(f"transformers will use neo_numpy's weight arrays ({why}).")

    tf_model, tf_times = None, []
    if need_transformers and not share:  # first, so that only one copy exists while the other library loads
        for _ in range(loads):
            tf_model = None
            gc.collect()
            seconds, tf_model = timed(
                GPTNeoForCausalLM.from_pretrained, folder, dtype=torch.float32, attn_implementation="eager"
            )
            tf_times.append(seconds)
        tf_model.eval()
    model, neo_times = None, []
    for _ in range(loads):
        model = None
        gc.collect()
        seconds, model = timed(neo_numpy.load_model, folder, threads=args.threads)
        neo_times.append(seconds)
    if need_transformers and share:
        tf_model = transformers_from_neo(model, folder)
    if "load" in sections:
        results["load"] = {"neo_seconds": neo_times, "transformers_seconds": tf_times, "file_bytes": file_bytes}
    results["transformers_weights"] = (
        "not loaded (no section needs it)"
        if not need_transformers
        else "shared with neo_numpy (torch.from_numpy)"
        if share
        else "from_pretrained"
    )
    if tf_model is not None:
        assert tf_model.config._attn_implementation == "eager", tf_model.config._attn_implementation
        torch.set_num_threads(args.torch_threads or model.threads.prefill)
    return model, tf_model


# ---------------------------------------------------------------------------------------------- the measurements


def neo_generate(model, ids, new_tokens):
    return model.generate(ids, max_new_tokens=new_tokens, eos_token_id=None)


def tf_generate(tf_model, ids, new_tokens):
    import torch

    with torch.inference_mode():
        tensor = torch.from_numpy(ids)
        out = tf_model.generate(
            tensor,
            attention_mask=torch.ones_like(tensor),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=0,
        )
    return out.numpy()


def measure_decode(model, tf_model, ids, repeats):
    """Greedy generation of 1 and of NEW_TOKENS tokens, alternating the libraries; per-token time excludes prefill."""
    runners = {"neo": lambda n: neo_generate(model, ids, n)}
    if tf_model is not None:
        runners["transformers"] = lambda n: tf_generate(tf_model, ids, n)
    outputs = {name: run(NEW_TOKENS) for name, run in runners.items()}  # warm-up, and the ids to compare
    times = {name: {1: [], NEW_TOKENS: []} for name in runners}
    for repeat in range(repeats):
        order = list(runners) if repeat % 2 == 0 else list(runners)[::-1]
        for new_tokens in (NEW_TOKENS, 1):
            for name in order:
                settle()
                seconds, _ = timed(runners[name], new_tokens)
                times[name][new_tokens].append(seconds)
    result = {"batch": ids.shape[0], "prompt_tokens": ids.shape[1], "new_tokens": NEW_TOKENS}
    for name in runners:
        per_step = (median(times[name][NEW_TOKENS]) - median(times[name][1])) / (NEW_TOKENS - 1)
        result[name] = {
            "seconds_new_64": times[name][NEW_TOKENS],
            "seconds_new_1": times[name][1],
            "seconds_per_step": per_step,
            "tokens_per_second": ids.shape[0] / per_step,
        }
    if tf_model is not None:
        result["ids_identical"] = bool((outputs["neo"] == outputs["transformers"]).all())
        if not result["ids_identical"]:
            differ = (outputs["neo"] != outputs["transformers"]).any(axis=0).nonzero()[0]
            result["first_difference_at_new_token"] = int(differ[0]) - ids.shape[1]
            result["neo_chose_eos_there"] = bool((outputs["neo"][:, differ[0]] == EOS).any())
    return result


def measure_bound(model, repeats):
    """Matrix-vector products x @ W.T over every weight matrix, as one decode step reads them: the memory-bandwidth bound."""
    import numpy as np

    from neo_numpy.threads import blas_threads

    matrices = []
    for layer in model.weights.layers:
        matrices += [
            layer.q_proj,
            layer.k_proj,
            layer.v_proj,
            layer.out_proj_weight,
            layer.c_fc_weight,
            layer.c_proj_weight,
        ]
    matrices.append(model.weights.lm_head)  # [vocab, hidden]
    rng = np.random.default_rng(0)
    inputs = {width: rng.standard_normal((1, width), dtype=np.float32) for width in {m.shape[1] for m in matrices}}

    def sweep():
        for weight in matrices:
            inputs[weight.shape[1]] @ weight.T  # [1, in] @ [in, out]

    sweeps = max(10, 2 * repeats)
    with blas_threads(model.blas_threads_for(1)):
        sweep()
        times = []
        for _ in range(sweeps):
            times.append(timed(sweep)[0])
    total_bytes = sum(m.nbytes for m in matrices)
    seconds = median(times)
    return {
        "threads": model.blas_threads_for(1),
        "matrices": len(matrices),
        "bytes": total_bytes,
        "sweep_seconds": times,
        "tokens_per_second": 1.0 / seconds,
        "gigabytes_per_second": total_bytes / seconds / 1e9,
    }


def measure_prefill(model, tf_model, repeats):
    import numpy as np
    import torch

    ids = np.random.default_rng(1).integers(0, EOS, size=(1, PREFILL_TOKENS))
    runners = {"neo": lambda: model.forward(ids)}
    if tf_model is not None:

        def tf_forward():
            with torch.inference_mode():
                return tf_model(torch.from_numpy(ids)).logits

        runners["transformers"] = tf_forward
    outputs = {name: run() for name, run in runners.items()}  # warm-up
    times = {name: [] for name in runners}
    for repeat in range(repeats):
        for name in list(runners) if repeat % 2 == 0 else list(runners)[::-1]:
            settle()
            times[name].append(timed(runners[name])[0])
    result = {"tokens": PREFILL_TOKENS}
    for name in runners:
        result[name] = {"seconds": times[name], "tokens_per_second": PREFILL_TOKENS / median(times[name])}
    if tf_model is not None:
        reference = outputs["transformers"].numpy().astype(np.float64)
        result["logits_max_relative_difference"] = float(
            np.abs(outputs["neo"] - reference).max() / np.abs(reference).max()
        )
    return result


def measure_long_context(model, repeats):
    """neo_numpy's decode step time after a 1984-token prompt versus after a 48-token prompt (median over steps)."""
    import numpy as np

    rng = np.random.default_rng(2)

    def step_times(prompt_tokens):
        ids = rng.integers(0, EOS, size=(1, prompt_tokens))
        steps = model.generate_tokens(ids, max_new_tokens=TIMED_STEPS + 1, eos_token_id=None)
        next(steps)  # the prefill and the first token
        times = []
        for _ in range(TIMED_STEPS):  # each next() is one decode step (one position through every layer)
            started = time.perf_counter()
            next(steps)
            times.append(time.perf_counter() - started)
        return times

    step_times(SHORT_PROMPT)  # warm-up
    long_times, short_times = [], []
    for _ in range(repeats):
        long_times += step_times(LONG_PROMPT)
        short_times += step_times(SHORT_PROMPT)
    return {
        "long_positions": [LONG_PROMPT, LONG_PROMPT + TIMED_STEPS - 1],
        "short_positions": [SHORT_PROMPT, SHORT_PROMPT + TIMED_STEPS - 1],
        "long_step_seconds": long_times,
        "short_step_seconds": short_times,
        "long_over_short": median(long_times) / median(short_times),
    }


# ---------------------------------------------------------------------------------------------- the report


def fmt(value, digits=1, suffix=""):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{suffix}"


def ratio(a, b, digits=2):
    return f"{a / b:.{digits}f}x" if a is not None and b else "—"


def verdict(value, target, lower_is_better=True):
    ok = value <= target if lower_is_better else value >= target
    return f"{'<=' if lower_is_better else '>='} {target}x {'PASS' if ok else 'MISS'}"


def table_rows(results):
    rows = []
    decode, bound = results.get("decode"), results.get("bound")
    if decode:
        neo, tf = decode["neo"]["tokens_per_second"], decode.get("transformers", {}).get("tokens_per_second")
        rows.append(
            [
                f"decode, batch 1, greedy (tokens/s; {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new, prefill excluded)",
                fmt(neo),
                fmt(tf),
                ratio(neo, tf),
                "",
            ]
        )
        if "ids_identical" in decode:
            same = (
                "yes"
                if decode["ids_identical"]
                else (
                    f"NO: from new token {decode['first_difference_at_new_token']}"
                    + (
                        " (neo_numpy chose EOS; transformers' min_new_tokens forbids it)"
                        if decode["neo_chose_eos_there"]
                        else ""
                    )
                )
            )
            rows.append(["decode, batch 1: generated ids identical", same, "", "", ""])
    if bound:
        rows.append(
            [
                f"bandwidth bound: one x @ W.T sweep over all {bound['matrices']} weight matrices "
                f"({common.gb(bound['bytes'])} GB, {bound['threads']} thread{'s' if bound['threads'] > 1 else ''}) (tokens/s)",
                fmt(bound["tokens_per_second"]),
                "",
                "",
                "",
            ]
        )
        rows.append(["bandwidth of that sweep (GB/s)", fmt(bound["gigabytes_per_second"]), "", "", ""])
    if decode and bound:
        tf = decode.get("transformers", {}).get("tokens_per_second")
        rows.append(
            [
                "decode, batch 1, as % of the bandwidth bound",
                fmt(100 * decode["neo"]["tokens_per_second"] / bound["tokens_per_second"], 0, "%"),
                fmt(100 * tf / bound["tokens_per_second"], 0, "%") if tf else "",
                "",
                "",
            ]
        )
    batch = results.get("batch")
    if batch:
        neo, tf = batch["neo"]["tokens_per_second"], batch.get("transformers", {}).get("tokens_per_second")
        rows.append(
            [
                f"decode, batch {BATCH} (tokens/s counting {BATCH} x new tokens, prefill excluded)",
                fmt(neo),
                fmt(tf),
                ratio(neo, tf),
                "",
            ]
        )
        if decode:
            tf1 = decode.get("transformers", {}).get("tokens_per_second")
            rows.append(
                [
                    f"batch {BATCH} / batch 1 throughput",
                    ratio(neo, decode["neo"]["tokens_per_second"]),
                    ratio(tf, tf1) if tf and tf1 else "",
                    "",
                    "",
                ]
            )
        if "ids_identical" in batch:
            rows.append(
                [
                    f"decode, batch {BATCH}: generated ids identical",
                    "yes" if batch["ids_identical"] else "NO",
                    "",
                    "",
                    "",
                ]
            )
    prefill = results.get("prefill")
    if prefill:
        neo, tf = prefill["neo"]["tokens_per_second"], prefill.get("transformers", {}).get("tokens_per_second")
        rows.append([f"prefill, {PREFILL_TOKENS} tokens, all logits (tokens/s)", fmt(neo), fmt(tf), ratio(neo, tf), ""])
        if "logits_max_relative_difference" in prefill:
            rows.append(
                [
                    "prefill logits: max abs difference / max abs transformers logit",
                    f"{prefill['logits_max_relative_difference']:.1e}",
                    "",
                    "",
                    "",
                ]
            )
    long = results.get("long")
    if long:
        far, near = median(long["long_step_seconds"]), median(long["short_step_seconds"])
        rows.append(
            [
                f"decode step at positions {long['long_positions'][0]}-{long['long_positions'][1]} (ms/token)",
                fmt(1000 * far, 2),
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                f"decode step at positions {long['short_positions'][0]}-{long['short_positions'][1]} (ms/token)",
                fmt(1000 * near, 2),
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                "long-context slowdown: position ~2000 / position ~50",
                f"{long['long_over_short']:.2f}x",
                "",
                "",
                verdict(long["long_over_short"], TARGETS["long_over_short"]),
            ]
        )
    load = results.get("load")
    if load:
        neo = load["neo_seconds"][-1]
        tf = load["transformers_seconds"][-1] if load["transformers_seconds"] else None
        rows.append(
            [
                f"load, warm page cache, 2nd of 2 loads ({common.gb(load['file_bytes'])} GB file) (s, lower is better)",
                fmt(neo, 2),
                fmt(tf, 2) if tf is not None else "not timed (weights shared)",
                ratio(neo, tf),
                "",
            ]
        )
    memory = results.get("memory")
    if memory:
        rows.append(
            [
                "peak RSS of a fresh process running load_model / file size",
                f"{memory['peak_over_file']:.3f}x",
                "",
                "",
                verdict(memory["peak_over_file"], TARGETS["load_peak_over_file"]),
            ]
        )
        rows.append(
            ["(peak RSS - RSS before load_model) / file size", f"{memory['load_growth_over_file']:.3f}x", "", "", ""]
        )
    return rows


def parse_only(text):
    if not text:
        return set(SECTIONS)
    chosen = {part.strip() for part in text.split(",") if part.strip()}
    unknown = chosen - set(SECTIONS)
    if unknown:
        sys.exit(
            f"--only takes a comma-separated list of {', '.join(SECTIONS)}; {', '.join(sorted(unknown))} is not one."
        )
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", default="125M", help="125M, 1.3B, 2.7B or a checkpoint folder (default 125M)")
    parser.add_argument(
        "--repeats", type=int, default=5, help="timed runs per measurement; medians are reported (default 5)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="BLAS threads for neo_numpy (prefill and decode) and torch; "
        "default: neo_numpy's plan (all cores for prefill, measured best for decode)",
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads for transformers (default: neo_numpy's prefill count)"
    )
    parser.add_argument("--only", help=f"comma-separated sections to run: {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--json", type=Path, help="also write every raw time to this JSON file")
    parser.add_argument(
        "--transformers-weights",
        choices=("auto", "load", "share"),
        default="auto",
        help="load: from_pretrained (a second copy of the weights); share: transformers' parameters are "
        "views of neo_numpy's arrays; auto: load unless memory is short for two copies (default)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        sys.exit("--repeats must be at least 1.")
    sections = parse_only(args.only)
    load_at_start = common.load_average()  # before this run adds its own load

    import numpy as np

    folder, description = resolve_checkpoint(args.model)
    log(f"checkpoint: {description}")
    results = {}
    if "memory" in sections:  # a fresh process, before this one holds any weights
        import load_memory

        log("memory: load_model in a fresh process ...")
        results["memory"] = load_memory.measure(folder)

    if sections == {"memory"}:  # nothing else to load
        return report(args, argv, folder, description, results, None, None, load_at_start, sections)
    log("loading the models ...")
    model, tf_model = load_both(folder, args, sections, results)
    import torch

    threads = {
        "neo_prefill": model.threads.prefill,
        "neo_decode": model.blas_threads_for(1),
        "torch": torch.get_num_threads() if tf_model is not None else None,
    }
    log(
        f"threads: neo_numpy prefill {threads['neo_prefill']}, decode {threads['neo_decode']}; torch {threads['torch']}"
    )

    rng = np.random.default_rng(0)
    if "decode" in sections:
        log("decode, batch 1 ...")
        results["decode"] = measure_decode(model, tf_model, rng.integers(0, EOS, size=(1, PROMPT_TOKENS)), args.repeats)
    if "bound" in sections:
        log("bandwidth bound ...")
        results["bound"] = measure_bound(model, args.repeats)
    if "batch" in sections:
        log(f"decode, batch {BATCH} ...")
        results["batch"] = measure_decode(
            model, tf_model, rng.integers(0, EOS, size=(BATCH, PROMPT_TOKENS)), args.repeats
        )
    if "prefill" in sections:
        log(f"prefill, {PREFILL_TOKENS} tokens ...")
        results["prefill"] = measure_prefill(model, tf_model, args.repeats)
    if "long" in sections:
        log("long context (neo_numpy only) ...")
        results["long"] = measure_long_context(model, args.repeats)

    return report(args, argv, folder, description, results, model, threads, load_at_start, sections)


def report(args, argv, folder, description, results, model, threads, load_at_start, sections) -> int:
    """Print the markdown report (and write the JSON file)."""
    info = common.machine_info()
    info["load_average_1min_at_start"] = load_at_start
    print()
    print(f"### neo_numpy vs transformers, GPT-Neo {args.model} on the CPU")
    print()
    print(
        f"- Checkpoint: {description}"
        + (
            f": hidden {model.config.hidden_size}, {model.config.num_layers} layers, {model.config.num_heads} heads, float32"
            if model
            else ""
        )
    )
    if threads:
        torch_part = (
            (
                f"torch.set_num_threads({threads['torch']}) for everything; transformers attention: eager; "
                f"transformers weights: {results['transformers_weights']}"
            )
            if threads["torch"]
            else "transformers not loaded"
        )
        print(
            f"- Threads: neo_numpy {threads['neo_prefill']} BLAS threads for prefill and {threads['neo_decode']} for decode steps; "
            + torch_part
        )
    command = " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"- Medians over {args.repeats} run(s), the two libraries alternating; command: "
        f"`python benchmarks/bench_cpu.py{' ' + command if command else ''}`"
    )
    print()
    print(
        common.markdown_table(
            ["metric", "neo_numpy", "transformers", "ratio (neo_numpy / transformers)", "target"], table_rows(results)
        )
    )
    print()
    print("\n".join(common.machine_lines(info)))
    if args.json:
        common.write_json(
            args.json,
            {
                "machine": info,
                "checkpoint": {"folder": str(folder), "description": description},
                "settings": {"repeats": args.repeats, "threads": threads, "sections": sorted(sections)},
                "results": results,
            },
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

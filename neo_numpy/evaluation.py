"""Evaluation with EleutherAI's lm-evaluation-harness (lm-eval), the harness behind the GPT-Neo model cards.

    pip install -r requirements-eval.txt
    python -m neo_numpy eval --model 125M --tasks lambada_openai,wikitext

Importing this module registers neo_numpy with lm-eval as the model "neo_numpy" (the class is
neo_numpy.lm_eval_model.NeoNumpyLM, loaded on first use, as lm-eval loads its own models):

    import lm_eval, neo_numpy.evaluation
    lm_eval.simple_evaluate(model="neo_numpy", model_args="pretrained=125M", tasks=["lambada_openai"])

lm-eval is optional: without it this module still imports (the command line builds its parser from it) and the
`eval` command says how to install it. Nothing here imports lm-eval's evaluator until a command runs.
"""

import json
import sys
from pathlib import Path

from .errors import InputError, NeoNumpyError
from .hub import DEFAULT_MODEL

MODEL_NAME = "neo_numpy"  # the name lm-eval knows the model by
MODEL_CLASS = "neo_numpy.lm_eval_model:NeoNumpyLM"
INSTALL_HINT = "pip install -r requirements-eval.txt (or pip install lm-eval==0.4.13)"


def register_with_lm_eval() -> bool:
    """Register "neo_numpy" in lm-eval's model registry as a lazy entry; False when lm-eval is not installed."""
    try:
        import lm_eval.models  # noqa: F401  (its built-in names first: lm-eval adds them only to an empty registry)
        from lm_eval.api.registry import model_registry
    except ImportError:
        return False
    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target=MODEL_CLASS)
    return True


def add_eval_arguments(parser) -> None:
    """The `eval` subcommand's arguments, added to an argparse parser."""
    parser.add_argument(
        "-m",
        "--model",
        default=DEFAULT_MODEL,
        help=f"125M, 1.3B, 2.7B, a hub id or a folder (default: {DEFAULT_MODEL})",
    )
    parser.add_argument(
        "-t", "--tasks", required=True, help="comma-separated lm-eval task names, e.g. lambada_openai,wikitext"
    )
    parser.add_argument("--include-path", type=Path, help="a folder of task YAMLs of your own (e.g. on local files)")
    parser.add_argument(
        "--num-fewshot", type=int, help="examples before each question (default: the task's own, usually 0)"
    )
    parser.add_argument("--limit", type=float, help="at most this many documents per task (a fraction if < 1)")
    parser.add_argument("-b", "--batch-size", type=int, default=1, help="requests per forward pass (default: 1)")
    parser.add_argument("-o", "--output", type=Path, help="also write the results (without samples) to this JSON file")
    parser.add_argument(
        "--backend", choices=("numpy", "cupy"), default="numpy", help="numpy (CPU, default) or cupy (NVIDIA GPU)"
    )
    parser.add_argument(
        "--dtype", choices=("float32", "float16"), default="float32", help="weight storage (default: float32)"
    )
    parser.add_argument("--threads", type=int, help="BLAS threads (default: all cores)")


def run_eval(args) -> int:
    """Run lm-eval's simple_evaluate on neo_numpy, print its results table, optionally write them as JSON."""
    check_eval_arguments(args)
    simple_evaluate, task_manager = load_harness(args.include_path)
    tasks = [name.strip() for name in args.tasks.split(",") if name.strip()]
    known = set(task_manager.match_tasks(tasks))
    unknown = [name for name in tasks if name not in known]
    if not tasks or unknown:
        raise InputError(
            f"lm-eval has no task {unknown[0] if unknown else args.tasks!r} "
            "(`lm-eval ls tasks` lists them; --include-path adds a folder of your own task YAMLs)."
        )
    from .lm_eval_model import NeoNumpyLM

    model = NeoNumpyLM(
        args.model, batch_size=args.batch_size, backend=args.backend, dtype=args.dtype, threads=args.threads
    )
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    try:
        results = simple_evaluate(
            model=model,
            tasks=tasks,
            task_manager=task_manager,
            num_fewshot=args.num_fewshot,
            limit=limit,
            log_samples=False,
        )
    except (ConnectionError, FileNotFoundError) as error:  # what `datasets` raises for data it cannot fetch or find
        raise InputError(data_error_message(error, tasks)) from None
    print(results_table(results))
    if args.output is not None:
        write_results(results, args.output)
    return 0


def check_eval_arguments(args) -> None:
    for flag, value in (("--batch-size", args.batch_size), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}.")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise InputError(f"--num-fewshot must be 0 or more, got {args.num_fewshot}.")
    if args.limit is not None and args.limit <= 0:
        raise InputError(f"--limit must be positive, got {args.limit:g}.")
    if args.include_path is not None and not args.include_path.is_dir():
        raise InputError(f"--include-path {args.include_path} is not a folder.")
    if args.output is not None and not args.output.absolute().parent.is_dir():  # found out now, not after hours
        raise InputError(f"--output must be in an existing folder, got {args.output}.")
    if args.output is not None and args.output.is_dir():
        raise InputError(f"--output must name a file, but {args.output} is a folder.")


def load_harness(include_path):
    """(lm_eval.simple_evaluate, a TaskManager that also reads `include_path`); one sentence if lm-eval is missing."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as error:
        raise NeoNumpyError(missing_harness_message(error)) from None
    register_with_lm_eval()
    return lm_eval.simple_evaluate, TaskManager(include_path=str(include_path) if include_path else None)


def missing_harness_message(error: ImportError) -> str:
    if (error.name or "").split(".")[0] == "lm_eval":
        return f"the eval command needs EleutherAI's lm-evaluation-harness, which is not installed: {INSTALL_HINT}."
    return f"lm-eval could not be imported ({error}): {INSTALL_HINT}."


def data_error_message(error: Exception, tasks) -> str:
    """One sentence for task data that could not be loaded: the Hub unreachable or offline, or files not found."""
    names = ", ".join(tasks)
    if isinstance(error, ConnectionError):
        return (
            f"the data of {names} could not be downloaded ({first_line(error)}): the Hugging Face Hub is unreachable "
            "or offline mode is on; run once on a connected machine to cache it, or use --include-path with task "
            "YAMLs on local files."
        )
    return f"the data of {names} could not be found ({first_line(error)})."


def first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def results_table(results) -> str:
    from lm_eval.utils import make_table

    table = make_table(results)
    return table + ("\n" + make_table(results, "groups") if results.get("groups") else "")


def write_results(results, path: Path) -> None:
    from lm_eval.utils import handle_non_serializable

    kept = {key: value for key, value in results.items() if key != "samples"}
    try:
        path.write_text(json.dumps(kept, indent=2, default=handle_non_serializable) + "\n", encoding="utf-8")
    except OSError as error:
        raise InputError(f"could not write {path} ({error.strerror or error}).") from None
    if sys.stderr is not None:
        print(f"results written to {path}", file=sys.stderr)


register_with_lm_eval()

"""Evaluation with EleutherAI's lm-evaluation-harness (lm-eval), the harness behind the GPT-Neo model cards.

    pip install -r requirements-eval.txt
    python -m neo_numpy eval --model 125M --tasks lambada_openai,wikitext

Importing this module registers neo_numpy with lm-eval as the model "neo_numpy" (the class is
neo_numpy.lm_eval_model.NeoNumpyLM, loaded on first use, as lm-eval loads its own models):

    import lm_eval, neo_numpy.evaluation
    lm_eval.simple_evaluate(model="neo_numpy", model_args="pretrained=125M", tasks=["lambada_openai"])

lm-eval is optional: without it this module still imports and the `eval` command says how to install it. Nothing
here imports lm-eval's evaluator until a command runs. The command line imports this module only for `eval`.
"""

import json
import math
import os
import sys
import tempfile
from pathlib import Path

from .errors import InputError, NeoNumpyError
from .paths import kind_of, shown

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
    from .cli import show_warnings

    show_warnings()  # the model loaded: its warnings now, before the run
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
    except NeoNumpyError:
        raise
    except Exception as error:  # lm-eval and `datasets` on task data they cannot use: one sentence each
        message = task_failure_message(error, tasks, args.num_fewshot)
        if message is None:
            raise
        raise InputError(message) from None
    if args.output is not None:  # first, so that the results are kept whatever happens to stdout
        write_results(results, args.output)
    print(results_table(results))
    return 0


def check_eval_arguments(args) -> None:
    """The eval command's own flags, before lm-eval loads (the model's arguments are NeoNumpyLM's to check)."""
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise InputError(f"--num-fewshot must be 0 or more, got {args.num_fewshot}.")
    if args.limit is not None and not 0 < args.limit < math.inf:
        raise InputError(
            f"--limit must be a positive number (of documents, or a fraction below 1), got {args.limit:g}."
        )
    if args.include_path is not None and kind_of(args.include_path) != "folder":
        raise InputError(f"--include-path {shown(args.include_path)} is not a folder.")
    if args.output is not None:
        check_writable(args.output)


def check_writable(path: Path) -> None:
    """Refuse an --output that could not be written, now rather than after hours of evaluation: the name must not
    be a folder, and its folder must exist and take a new file (tried with a temporary one)."""
    kind = kind_of(path)
    if kind not in ("missing", "file"):
        raise InputError(f"--output must name a file, but {shown(path)} is a {kind}.")
    if kind_of(path.absolute().parent) != "folder":
        raise InputError(f"--output must be in an existing folder, got {shown(path)}.")
    try:
        with tempfile.NamedTemporaryFile(dir=path.absolute().parent, prefix=f".{path.name}.", suffix=".tmp"):
            pass
    except OSError as error:
        raise InputError(f"--output {shown(path)} cannot be written ({error.strerror or error}).") from None


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


def task_failure_message(error: Exception, tasks, num_fewshot):
    """One sentence for what lm-eval or `datasets` raises on a task that cannot run; None for anything else."""
    from datasets.exceptions import DatasetGenerationError
    from jinja2.exceptions import UndefinedError

    names = ", ".join(tasks)
    if isinstance(error, (ConnectionError, FileNotFoundError)):  # data it cannot fetch or find
        return data_error_message(error, tasks)
    if isinstance(error, DatasetGenerationError):  # a data file it cannot parse, such as malformed JSON Lines
        return f"the data of {names} could not be read ({first_line(error.__cause__ or error)})."
    if isinstance(error, UndefinedError):  # a doc_to_text / doc_to_target template
        return f"a template of {names} names a field that its documents do not have ({first_line(error)})."
    if isinstance(error, ValueError) and "larger than population" in str(error):  # random.sample, for few-shot
        asked = f"--num-fewshot {num_fewshot}" if num_fewshot is not None else "the task's num_fewshot"
        return f"{asked} asks for more examples than {names} has documents to draw them from."
    return None


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
    """The results without the per-document samples, as JSON."""
    from lm_eval.utils import handle_non_serializable

    kept = {key: value for key, value in results.items() if key != "samples"}
    try:
        write_whole(path, json.dumps(kept, indent=2, default=handle_non_serializable) + "\n")
    except OSError as error:
        raise InputError(f"could not write {shown(path)} ({error.strerror or error}).") from None
    if sys.stderr is not None:
        print(f"results written to {path}", file=sys.stderr)


def write_whole(path: Path, text: str) -> None:
    """Write `text` to a temporary file in the same folder, then rename it to `path`: a file already there is
    replaced whole or not at all."""
    with tempfile.NamedTemporaryFile(
        "w", encoding="utf-8", dir=path.absolute().parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
    ) as temporary:
        try:
            temporary.write(text)
            temporary.close()
            os.chmod(temporary.name, 0o666 & ~current_umask())  # as open() would create it, not tempfile's 0o600
            os.replace(temporary.name, path)
        except BaseException:
            os.unlink(temporary.name)
            raise


def current_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: put it back at once
    os.umask(mask)
    return mask


register_with_lm_eval()

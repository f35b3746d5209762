"""The command line: `python -m neo_numpy generate "EleutherAI has" -n 50`, `python -m neo_numpy download 125M` and
`python -m neo_numpy eval --tasks lambada_openai` (neo_numpy/evaluation.py, imported only by `eval`, so lm-eval and
its dependencies never load for the other commands).

Text goes to stdout as it is generated; a one-line summary and any error go to stderr. Errors are one sentence
and a non-zero exit status, never a traceback; an error about a parameter names the flag that sets it.
"""

import argparse
import logging
import os
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from .errors import InputError, NeoNumpyError
from .generation import stream_text
from .hub import DEFAULT_MODEL, SHORT_NAMES, missing_from_checkpoint, resolve_model_dir
from .loading import load_model, open_checkpoint
from .settings import GenerationSettings
from .threads import ThreadPlan
from .tokenizer import checked_text, text_from_bytes

INTERRUPTED = 130  # the conventional exit status after Ctrl-C
BROKEN_PIPE = 128 + 13  # the status a shell reports for a writer whose reader went away (SIGPIPE is signal 13)
LONGEST_TOKEN_BYTES = 128  # GPT-2's longest token: N positions never hold more than N * 128 bytes of text

# The flag that sets each Python parameter, so that an error about `max_new_tokens` says `-n/--max-new-tokens`.
FLAGS = {
    "generate": {
        "max_new_tokens": "-n/--max-new-tokens",
        "min_new_tokens": "--min-new-tokens",
        "temperature": "--temperature",
        "top_k": "--top-k",
        "top_p": "--top-p",
        "repetition_penalty": "--repetition-penalty",
        "seed": "--seed",
        "threads": "--threads",
    },
    "eval": {"batch_size": "-b/--batch-size", "threads": "--threads"},
    "finetune": {"seed": "--seed", "threads": "--threads"},
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad command line is one `error:` line (and exit status 2), not the whole usage block."""

    def error(self, message):
        report(f"error: {message} (see {self.prog} --help)")
        sys.exit(2)


def report(line: str) -> None:
    """Write a summary or error line to stderr; with stderr closed (`2>&-`) say nothing rather than use stdout."""
    if sys.stderr is not None:
        print(line, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m neo_numpy", description="GPT-Neo in NumPy: generate text, download checkpoints, evaluate."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    add_generate_command(commands)
    add_download_command(commands)
    add_eval_command(commands)
    add_finetune_command(commands)
    return parser


def add_model_options(command, gpu: bool = True) -> None:
    """The options of every command that runs a model: -m/--model, --threads and, where the command can run on a
    GPU, --backend and --dtype."""
    names = ", ".join(name.upper() for name in SHORT_NAMES)
    command.add_argument(
        "-m",
        "--model",
        default=DEFAULT_MODEL,
        help=f"{names}, a Hugging Face repo id, or a local checkpoint folder (default: {DEFAULT_MODEL})",
    )
    command.add_argument(
        "--threads", type=int, help="BLAS threads (default: all cores for prompts, the fastest count for decoding)"
    )
    if gpu:
        command.add_argument(
            "--backend", choices=("numpy", "cupy"), default="numpy", help="numpy (CPU, default) or cupy (NVIDIA GPU)"
        )
        command.add_argument(
            "--dtype",
            choices=("float32", "float16"),
            default="float32",
            help="weight storage on the GPU (default: float32)",
        )


def add_seed_option(command, what: str) -> None:
    command.add_argument("--seed", type=int, help=f"make {what} repeatable")


def add_generate_command(commands) -> None:
    gen = commands.add_parser(
        "generate",
        help="continue a prompt",
        description=(
            "Continue a prompt with a GPT-Neo model, streaming the text to stdout. The prompt comes from the argument, "
            "from --file, or from standard input. Greedy by default; --do-sample samples."
        ),
    )
    gen.add_argument("prompt", nargs="?", help="the text to continue (omit it to use --file or standard input)")
    gen.add_argument("-f", "--file", type=Path, help="read the prompt from this text file")
    add_model_options(gen)
    gen.add_argument("-n", "--max-new-tokens", type=int, default=50, help="at most this many new tokens (default: 50)")
    gen.add_argument(
        "--min-new-tokens", type=int, default=0, help="hold the end-of-text token back until this many (default: 0)"
    )
    gen.add_argument(
        "--do-sample", action="store_true", help="sample from the distribution instead of taking the most likely token"
    )
    gen.add_argument(
        "--temperature", type=float, default=1.0, help="divide the logits by this before sampling; > 0 (default: 1.0)"
    )
    gen.add_argument(
        "--top-k",
        type=int,
        default=50,
        help="sample among the k most likely tokens; 0 disables (default: 50, as transformers)",
    )
    gen.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="sample from the smallest set of tokens with probability >= p, in (0, 1] (default: 1.0)",
    )
    gen.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="penalise tokens already in the text; 1.0 disables (default: 1.0)",
    )
    add_seed_option(gen, "sampling")
    gen.add_argument("--ignore-eos", action="store_true", help="keep generating past the end-of-text token")
    gen.add_argument("--no-echo", action="store_true", help="print only the continuation, not the prompt")


def add_download_command(commands) -> None:
    down = commands.add_parser(
        "download",
        help="download a checkpoint into weights/",
        description=(
            "Download a released GPT-Neo checkpoint (only config, safetensors weights and tokenizer files) "
            "into weights/."
        ),
    )
    down.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL, help=f"125M, 1.3B, 2.7B or a repo id (default: {DEFAULT_MODEL})"
    )


def add_eval_command(commands) -> None:
    evaluate = commands.add_parser(
        "eval",
        help="score a model on lm-eval tasks",
        description="Evaluate a model with EleutherAI's lm-evaluation-harness (pip install -r requirements-eval.txt).",
    )
    add_model_options(evaluate)
    evaluate.add_argument(
        "-t", "--tasks", required=True, help="comma-separated lm-eval task names, e.g. lambada_openai,wikitext"
    )
    evaluate.add_argument("--include-path", type=Path, help="a folder of task YAMLs of your own (e.g. on local files)")
    evaluate.add_argument(
        "--num-fewshot", type=int, help="examples before each question (default: the task's own, usually 0)"
    )
    evaluate.add_argument("--limit", type=float, help="at most this many documents per task (a fraction if < 1)")
    evaluate.add_argument("-b", "--batch-size", type=int, default=1, help="requests per forward pass (default: 1)")
    evaluate.add_argument(
        "-o", "--output", type=Path, help="also write the results (without samples) to this JSON file"
    )


def add_finetune_command(commands) -> None:
    """`finetune`: its options here, its work in neo_numpy/finetune.py (run_finetune)."""
    tune = commands.add_parser(
        "finetune",
        help="fine-tune a model on a text file",
        description="Fine-tune a GPT-Neo checkpoint on a UTF-8 text file with AdamW, in NumPy, and save the result.",
    )
    add_model_options(tune, gpu=False)
    add_seed_option(tune, "the choice of training windows")
    tune.add_argument("--data", type=Path, required=True, help="the training text: a UTF-8 file")
    tune.add_argument("--out", type=Path, required=True, help="the folder to write the fine-tuned checkpoint into")
    tune.add_argument("--steps", type=int, default=100, help="optimizer steps (default: 100)")
    tune.add_argument("--batch-size", type=int, default=4, help="windows per step (default: 4)")
    tune.add_argument("--context", type=int, default=128, help="tokens per window (default: 128)")
    tune.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (default: 5e-5)")
    tune.add_argument("--warmup", type=int, help="linear warm-up steps (default: a tenth of --steps)")
    tune.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decay of matrices (default: 0.01)")
    tune.add_argument("--eval-every", type=int, default=0, help="validation loss every N steps (default: start, end)")
    tune.add_argument("--val-fraction", type=float, default=0.1, help="held-out share of the windows (default: 0.1)")
    tune.add_argument("--overwrite", action="store_true", help="replace --out even if it is not empty")


def in_flags(error: NeoNumpyError, command: str) -> str:
    """The error's message, naming flags (`-n/--max-new-tokens`) where it names this command's parameters."""
    message = str(error)
    if getattr(error, "parameter", None) not in FLAGS.get(command, {}):
        return message
    for parameter, flag in FLAGS[command].items():
        message = re.sub(rf"\b{parameter}\b", flag, message)
    return message


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    show_unencodable_characters_as_escapes()
    with warnings_held_back():
        try:
            status = run_command(args)
        except NeoNumpyError as error:
            report(f"error: {in_flags(error, args.command)}")
            return 1
        except KeyboardInterrupt:  # Ctrl-C before generation began (loading, downloading): no traceback either
            report("interrupted")
            return INTERRUPTED
        except BrokenPipeError:  # `... | head`: the reader has gone, so stop quietly (Python's docs on SIGPIPE)
            discard_stdout()
            return BROKEN_PIPE
        show_warnings()  # the command went ahead: any warning not shown yet is shown now
        return status


def run_command(args) -> int:
    if args.command == "download":
        return run_download(args)
    if args.command == "eval":
        from .evaluation import run_eval  # lm-eval (and with it torch) loads only here

        return run_eval(args)
    if args.command == "finetune":
        from .finetune import run_finetune

        return run_finetune(args)
    return run_generate(args)


class HeldWarnings(logging.Handler):
    """neo_numpy's logged warnings as `warning: ...` lines on stderr, held back until the command goes ahead
    (show_held; Handler.release is logging's lock), so that a command that fails prints its `error:` line alone."""

    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.held = []  # lines not printed yet; None once shown

    def emit(self, record) -> None:
        line = f"warning: {record.getMessage()}"
        if self.held is None:
            report(line)
        else:
            self.held.append(line)

    def show_held(self) -> None:
        for line in self.held or []:
            report(line)
        self.held = None


@contextmanager
def warnings_held_back():
    """While a command runs, the "neo_numpy" logger writes through HeldWarnings only (the Python API keeps logging's
    own handlers: this is the command line's choice)."""
    logger = logging.getLogger("neo_numpy")
    handler, propagate = HeldWarnings(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def show_warnings() -> None:
    """Print the warnings held so far and any later ones at once: loading succeeded, the command goes ahead."""
    for handler in logging.getLogger("neo_numpy").handlers:
        if isinstance(handler, HeldWarnings):
            handler.show_held()


def run_download(args) -> int:
    """Fetch a checkpoint (or find it already here) and print its folder."""
    folder = resolve_model_dir(args.model)
    missing = missing_from_checkpoint(folder)
    if missing:
        raise InputError(f"{folder} is not a checkpoint folder (it has no {' and no '.join(missing)}).")
    write(f"{folder}\n")
    return 0


def show_unencodable_characters_as_escapes() -> None:
    """On a stdout whose encoding lacks a character (PYTHONIOENCODING=ascii, a legacy console), print it as an
    escape such as \\xe9 instead of failing, as Python's own stderr does."""
    if sys.stdout is not None and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")


def discard_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit cannot fail again on a broken pipe or a full disk."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def write(text: str) -> None:
    """Print generated text at once. A full disk or an unwritable stdout is one error; a broken pipe propagates."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as error:
        discard_stdout()
        raise NeoNumpyError(f"could not write to standard output ({error.strerror or error}).") from None


def open_prompt(args):
    """Where the prompt comes from: the argument itself (a str), or a binary file (--file, or standard input).

    Opened before the model is loaded, so a missing file or an absent prompt is reported at once; read later, by
    read_prompt, once the model's context says how much text can matter.
    """
    if args.prompt is not None and args.file is not None:
        raise InputError("give the prompt either as an argument or with --file, not both.")
    if args.file is not None:
        try:
            return open(args.file, "rb")
        except OSError as error:
            raise InputError(f"could not read the prompt file {args.file} ({error.strerror or error}).") from None
    if args.prompt is not None:
        return args.prompt
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("no prompt: pass it as an argument, with --file, or on standard input.")
    return sys.stdin.buffer


def read_prompt(source, args, context: int) -> str:
    """The prompt's text, reading at most what `context` positions can hold (never all of /dev/zero)."""
    where = "the prompt" if args.file is None else f"the prompt file {args.file}"
    if isinstance(source, str):
        if not source.strip():
            raise InputError(f"{where} is empty.")
        return checked_text(source)
    most = context * LONGEST_TOKEN_BYTES
    try:
        data = source.read(most + 1)
    except OSError as error:
        raise InputError(f"could not read {where} ({error.strerror or error}).") from None
    finally:
        if args.file is not None:
            source.close()
    if len(data) > most:
        raise InputError(
            f"{where} is longer than {most} bytes, more text than the model's {context}-position context holds."
        )
    return checked_text(text_from_bytes(data, where))


def run_generate(args) -> int:
    settings = GenerationSettings(  # every setting is checked here, before anything is read
        max_new_tokens=args.max_new_tokens,
        min_new_tokens=args.min_new_tokens,
        do_sample=args.do_sample,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )
    threads = ThreadPlan.choose(args.threads)
    if sys.stdout is None:  # started with stdout closed (`>&-`)
        raise NeoNumpyError("standard output is closed, so the generated text has nowhere to go.")
    source = open_prompt(args)
    started = time.perf_counter()
    checkpoint = open_checkpoint(args.model)
    context = checkpoint.config.max_position_embeddings
    settings = replace(settings, eos_token_id=None if args.ignore_eos else checkpoint.config.eos_token_id)
    tokenizer = checkpoint.tokenizer
    prompt_ids = tokenizer.encode(read_prompt(source, args, context))
    settings.check_room(len(prompt_ids), context)  # before the weights are read
    model = load_model(checkpoint, backend=args.backend, dtype=args.dtype, threads=threads)
    load_seconds = time.perf_counter() - started
    show_warnings()

    if not args.no_echo:
        write(tokenizer.decode(prompt_ids))
    new_tokens, interrupted = 0, False
    start = first_token_at = time.perf_counter()
    try:
        for token, piece in stream_text(model, tokenizer, prompt_ids, settings):
            if token is not None:
                first_token_at = first_token_at if new_tokens else time.perf_counter()
                new_tokens += 1
            write(piece)
    except KeyboardInterrupt:
        interrupted = True
    finished_at = time.perf_counter()
    write("\n")
    prefill_rate = len(prompt_ids) / max(first_token_at - start, 1e-9)
    decode_rate = max(new_tokens - 1, 0) / max(finished_at - first_token_at, 1e-9)
    report(
        f"[{checkpoint.folder.name} {args.backend}] loaded in {load_seconds:.2f} s | "
        f"prompt {len(prompt_ids)} tokens at {prefill_rate:.1f} tok/s | "
        f"{new_tokens} new tokens at {decode_rate:.1f} tok/s" + (" | interrupted" if interrupted else "")
    )
    return INTERRUPTED if interrupted else 0

"""`python -m neo_numpy finetune`: fine-tune a GPT-Neo checkpoint on a text file, entirely in NumPy.

    python -m neo_numpy finetune --model 125M --data notes.txt --out my-neo --steps 200 --batch-size 4 --context 128

The text is read as UTF-8, split into documents on blank lines, tokenized with the checkpoint's own tokenizer,
joined with <|endoftext|> after each document and cut into windows of --context tokens, as GPT-Neo was trained.
The last --val-fraction of the windows is held out for a validation loss. Each step takes --batch-size random
training windows, computes the loss and gradients (training.loss_and_grads), clips them to global norm 1 and takes an
AdamW step with linear warm-up then cosine decay. The result is a checkpoint folder (config.json, model.safetensors,
tokenizer files) that neo_numpy and transformers both load.

Nothing is lost and nothing half-done is written: every input is checked, and the output folder is created under a
temporary name beside --out, before the model is loaded; Ctrl-C saves the last completed step (an update in progress
finishes first, so weights are never half-updated); a training or validation loss, gradient or weight that is not
finite stops training and nothing is saved; the checkpoint is written whole under the temporary name and renamed to
--out (with --overwrite, replacing the old folder, which is removed only then).
"""

import contextlib
import math
import re
import signal
import sys
import time
from pathlib import Path

import numpy as np

from .errors import InputError, NeoNumpyError
from .loading import load_model, open_checkpoint
from .paths import kind_of, read_bounded, shown
from .saving import StagedFolder, save_checkpoint
from .settings import GenerationSettings
from .threads import ThreadPlan, blas_threads
from .tokenizer import text_from_bytes
from .training import AdamW, clip_grad_norm, learning_rate, loss_and_grads, named_parameters

INTERRUPTED = 130
CLIP_NORM = 1.0  # as nanoGPT
# The largest training text read. 100 MB is about 25 million tokens: more than a NumPy fine-tune gets through in days,
# while its token stream (Python ints, then int64 windows) already takes a few GB of memory.
MAX_TEXT_BYTES = 100_000_000


def check_settings(args) -> None:
    """Every number on the command line, before anything is read or created."""
    ThreadPlan.choose(args.threads)  # the one check of a threads value (its error names the flag in the CLI)
    GenerationSettings(seed=args.seed)  # the one check of a seed, the one `generate` makes
    if args.steps < 1:
        raise InputError(f"--steps must be at least 1, got {args.steps}.")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {args.batch_size}.")
    if args.context < 2:
        raise InputError(
            f"--context must be at least 2 tokens (one to predict from, one to predict), got {args.context}."
        )
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise InputError(f"--lr must be a positive number, got {args.lr}.")
    if args.warmup is not None and args.warmup < 0:
        raise InputError(f"--warmup must be 0 or more steps, got {args.warmup}.")
    if not (math.isfinite(args.weight_decay) and args.weight_decay >= 0):
        raise InputError(f"--weight-decay must be 0 or a positive number, got {args.weight_decay}.")
    if args.eval_every < 0:
        raise InputError(
            f"--eval-every must be 0 (start and end only) or a positive number of steps, got {args.eval_every}."
        )
    if not 0 <= args.val_fraction < 1:
        raise InputError(f"--val-fraction must be at least 0 and below 1, got {args.val_fraction}.")


def check_output_folder(out: Path, overwrite: bool) -> None:
    """--out may be absent or an empty folder; a checkpoint folder (one with a config.json) needs --overwrite and is
    then replaced whole. Any other non-empty folder is refused: replacing it would delete files that are no model's."""
    kind = kind_of(out)
    if kind not in ("missing", "folder"):
        raise InputError(f"--out {shown(out)} is a {kind}, not a folder.")
    if kind == "missing":
        return
    try:
        empty = next(out.iterdir(), None) is None
    except OSError as error:
        raise InputError(f"--out {shown(out)} could not be listed ({error.strerror or error}).") from None
    if empty:
        return
    if kind_of(out / "config.json") != "file":
        raise InputError(f"--out {shown(out)} holds files but no config.json, so it is no checkpoint to replace.")
    if not overwrite:
        raise InputError(f"--out {shown(out)} holds a checkpoint; pass --overwrite to replace it.")


def read_text(path: Path) -> str:
    """The training text: a regular UTF-8 file of at most MAX_TEXT_BYTES (a device such as /dev/zero is refused)."""
    if kind_of(path) == "missing":
        raise InputError(f"could not read the training text {shown(path)} (it does not exist).")
    data = read_bounded(path, MAX_TEXT_BYTES, "it is the training text (--data)")
    return text_from_bytes(data, f"the training text {path}")


def documents(text: str) -> list:
    """The text split on blank lines (a file without one is one document); empty pieces dropped."""
    return [piece.strip() for piece in re.split(r"\n[ \t\r]*\n", text) if piece.strip()]


def token_windows(text: str, tokenizer, end_of_text: int, context: int, source: Path):
    """int [W, context]: each document's tokens followed by <|endoftext|>, all in one stream, cut into windows."""
    stream = []
    for document in documents(text):
        stream.extend(tokenizer.encode(document))
        stream.append(end_of_text)
    count = len(stream) // context
    if count == 0:
        raise InputError(
            f"the training text {source} is {len(stream)} tokens long, shorter than one window of --context {context}."
        )
    return np.asarray(stream[: count * context], dtype=np.int64).reshape(count, context)


def split_windows(windows, val_fraction: float):
    """(training windows, validation windows): the last val_fraction of them held out, at least one when there are
    two or more windows and val_fraction > 0, never all of them."""
    count = len(windows)
    held_out = 0 if val_fraction == 0 or count < 2 else min(count - 1, max(1, round(count * val_fraction)))
    return windows[: count - held_out], windows[count - held_out :]


def mean_loss(model, windows, batch: int) -> float:
    """The mean next-token cross-entropy over `windows` (the engine's forward pass, batch windows at a time)."""
    total, count = 0.0, 0
    for start in range(0, len(windows), batch):
        ids = windows[start : start + batch]  # [b, T]
        logits = model.forward(ids)[:, :-1]  # [b, T - 1, V]
        logits -= logits.max(axis=-1, keepdims=True)
        target = np.take_along_axis(logits, ids[:, 1:, None], axis=-1)[..., 0]  # [b, T - 1]
        total += float((np.log(np.exp(logits).sum(axis=-1)) - target).astype(np.float64).sum())
        count += target.size
    return total / count


class DeferredInterrupt:
    """`with DeferredInterrupt():` holds Ctrl-C back until the block ends, then raises KeyboardInterrupt: an AdamW
    update is never cut in half. (Only the main thread can set signal handlers; elsewhere this does nothing.)"""

    def __enter__(self):
        self.pending = False
        self.previous = None
        with contextlib.suppress(ValueError):  # signal handlers can only be set in the main thread
            self.previous = signal.signal(signal.SIGINT, self._hold)
        return self

    def _hold(self, signum, frame):
        self.pending = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        if self.pending and exc[0] is None:
            raise KeyboardInterrupt
        return False


def run_finetune(args) -> int:
    """The finetune subcommand: check everything, train, save. Returns the exit status.

    The output is written into a folder created beside --out before anything is loaded (so an unwritable --out fails
    at once, not after training) and renamed to --out when complete; on any error it is removed.
    """
    check_settings(args)
    check_output_folder(args.out, args.overwrite)
    staged = StagedFolder(args.out)
    try:
        # a non-finite loss is checked for and stops training, so NumPy's overflow warnings would only repeat it
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return train_and_save(args, staged)
    finally:
        staged.discard()


def finite_validation(loss, when: str, lr: float):
    """The validation loss, refused when it is not finite (None: there is no validation set)."""
    if loss is not None and not math.isfinite(loss):
        raise NeoNumpyError(
            f"the validation loss became {loss} {when}; training stopped and nothing was saved. "
            f"Lower --lr (it is {lr:g})."
        )
    return loss


def train_and_save(args, staged: StagedFolder) -> int:
    from tqdm.auto import tqdm

    from .cli import report

    checkpoint = open_checkpoint(args.model)
    config = checkpoint.config
    if args.context > config.max_position_embeddings:
        raise InputError(
            f"--context {args.context} is beyond the model's {config.max_position_embeddings} positions "
            "(max_position_embeddings)."
        )
    tokenizer = checkpoint.tokenizer
    end_of_text = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else config.eos_token_id
    windows = token_windows(read_text(args.data), tokenizer, end_of_text, args.context, args.data)
    train, validation = split_windows(windows, args.val_fraction)
    model = load_model(checkpoint, threads=args.threads)
    warmup = args.steps // 10 if args.warmup is None else args.warmup
    params = named_parameters(model.weights)
    optimizer = AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    rng = np.random.default_rng(args.seed)  # --seed None: fresh entropy, as for sampling
    tokens_per_step = args.batch_size * args.context

    def validate(when):
        loss = mean_loss(model, validation, args.batch_size) if len(validation) else None
        return finite_validation(loss, when, args.lr)

    first_validation = validate("before training")
    losses, completed, training_seconds = [], 0, 0.0
    bar = tqdm(total=args.steps, desc="finetune", unit="step", file=sys.stderr, dynamic_ncols=True)
    try:
        with blas_threads(model.threads.prefill):
            for step in range(args.steps):
                started = time.perf_counter()
                ids = train[rng.integers(0, len(train), size=args.batch_size)]  # [B, T] random training windows
                loss, grads = loss_and_grads(ids, model.weights, model.config)
                norm = clip_grad_norm(grads, CLIP_NORM)
                if not (math.isfinite(loss) and math.isfinite(norm)):
                    bar.close()
                    raise NeoNumpyError(
                        f"the loss became {loss} (gradient norm {norm}) at step {step + 1}; training stopped and "
                        f"nothing was saved. Lower --lr (it is {args.lr:g})."
                    )
                with DeferredInterrupt():
                    optimizer.step(grads, lr=learning_rate(step, args.lr, warmup, args.steps))
                completed, training_seconds = step + 1, training_seconds + time.perf_counter() - started
                losses.append(loss)
                postfix = f"loss {loss:.3f}, {completed * tokens_per_step / training_seconds:.0f} tok/s"
                if args.eval_every and completed % args.eval_every == 0 and completed < args.steps and len(validation):
                    postfix += f", val {validate(f'after step {completed}'):.3f}"
                bar.set_postfix_str(postfix)
                bar.update(1)
    except KeyboardInterrupt:
        bar.close()
        if not completed:
            report("interrupted before the first step finished; nothing was saved.")
            return INTERRUPTED
        save(model, params, checkpoint, staged)
        report(f"interrupted: saved the weights after step {completed} of {args.steps} to {args.out}")
        return INTERRUPTED
    bar.close()
    last_validation = validate(f"after step {completed}")
    save(model, params, checkpoint, staged)
    rate = completed * tokens_per_step / training_seconds
    summary = (
        f"finetuned {checkpoint.folder.name} for {completed} steps of {args.batch_size} x {args.context} tokens "
        f"in {training_seconds:.1f} s ({rate:.0f} tokens/s); training loss {losses[0]:.4f} -> {losses[-1]:.4f}"
    )
    if first_validation is not None:
        summary += f"; validation loss {first_validation:.4f} -> {last_validation:.4f} ({len(validation)} windows)"
    else:
        summary += "; no validation (one window of text, or --val-fraction 0)"
    report(summary)
    report(f"saved to {args.out}")
    return 0


def save(model, params, checkpoint, staged: StagedFolder) -> None:
    """The fine-tuned weights (never non-finite ones) with the source's tokenizer files, written complete into the
    staged folder, which then replaces --out."""
    for name, array in params.items():
        if not np.isfinite(array).all():
            raise NeoNumpyError(
                f"tensor {name} holds values that are not finite; nothing was saved. Lower --lr and train again."
            )
    save_checkpoint(staged.folder, params, model.config, tokenizer_folder=checkpoint.folder)
    staged.install()

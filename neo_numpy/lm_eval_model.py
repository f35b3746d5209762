"""neo_numpy as a model of EleutherAI's lm-evaluation-harness (lm-eval), registered there as "neo_numpy".

    import lm_eval, neo_numpy.evaluation       # importing neo_numpy.evaluation registers the name
    lm_eval.simple_evaluate(model="neo_numpy", model_args="pretrained=125M,batch_size=8", tasks=["lambada_openai"])

Every convention is the one lm-eval's own Hugging Face model follows (HFLM in lm_eval/models/huggingface.py), so a
score here is comparable with the GPT-Neo model cards' (which come from that harness):

- the context is the model's `max_position_embeddings` (2048); the end-of-text token (50256) is the prefix of an
  empty context and of every rolling window's first token;
- loglikelihood(context, continuation): trailing spaces of the context move to the continuation, the pair is
  encoded whole and the continuation is its tail (lm-eval's TemplateLM does that part); the model reads the last
  `max_length` tokens of context + continuation minus its last token, the score is the sum of the continuation
  tokens' log-softmax, and `is_greedy` says each of them is the argmax;
- loglikelihood_rolling(text): lm-eval's own get_rolling_token_windows / make_disjoint_window split a long text
  into windows that score every token exactly once;
- generate_until: greedy unless the task asks to sample, stopped by EOS, `max_gen_toks` (256) or a stop string,
  and cut at the first stop string.

Speed: requests whose model input is the same (the options of most multiple-choice questions) share one forward
pass, longest first, as HFLM's Collator orders them; a batch is one left-padded forward pass with no decode loop,
and the vocabulary-sized output head runs only on the continuation's positions.
"""

import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import Collator, handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from . import generation
from .errors import CheckpointError, InputError
from .loading import load_model, open_checkpoint
from .settings import GenerationSettings
from .tokenizer import END_OF_TEXT, left_padded
from .values import is_int

MAX_GEN_TOKS = 256  # lm-eval's default for generate_until, as HFLM
ROWS_PER_BLOCK = 8  # log_sum_exp works on 8 x 50257 float32 (1.6 MB) at a time
GENERATE_SETTINGS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty", "min_new_tokens")


class NeoNumpyLM(TemplateLM):
    """lm-eval's LM interface on a neo_numpy model.

    pretrained: as for load_model ("125M", "1.3B", "2.7B", a hub id or a checkpoint folder); batch_size: requests
    per forward pass; backend ("numpy" or "cupy"), dtype and threads: as for load_model. `device` and
    `max_batch_size`, which lm-eval passes to every model, are not used: the backend decides where it runs.
    """

    def __init__(
        self,
        pretrained="125M",
        batch_size=1,
        backend="numpy",
        dtype="float32",
        threads=None,
        device=None,
        max_batch_size=None,
        **unknown,
    ):
        super().__init__()
        if unknown:
            raise InputError(
                f"the neo_numpy lm-eval model has no argument {sorted(unknown)[0]!r}; "
                "it takes pretrained, batch_size, backend, dtype and threads."
            )
        on_gpu = backend == "cupy"
        if device not in (None, "cpu") and not (on_gpu and str(device).startswith("cuda")):
            raise InputError(
                f"device {device!r} does not fit backend {backend!r}: neo_numpy picks its device with backend= "
                "('numpy' for the CPU, 'cupy' for an NVIDIA GPU)."
            )
        self.batch_size = batch_size_of(batch_size)
        checkpoint = open_checkpoint(pretrained)
        self.tokenizer = checkpoint.tokenizer
        if self.tokenizer.eos_token_id is None:
            raise CheckpointError(
                f"the tokenizer in {checkpoint.folder} has no {END_OF_TEXT} token, which lm-eval needs: it pads "
                "batches, begins every rolling window and ends generated text."
            )
        self.model = load_model(checkpoint, backend=backend, dtype=dtype, threads=threads)
        self.pretrained = str(pretrained)

    # ------------------------------------------------------------------ what TemplateLM asks for

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """The token put before an empty context and each rolling window: bos, else eos, as HFLM chooses it."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self.model.config.max_position_embeddings

    @property
    def max_gen_toks(self) -> int:
        return MAX_GEN_TOKS

    @property
    def tokenizer_name(self) -> str:
        return str(self.model.path).replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens=None, left_truncate_len=None, **kwargs) -> list:
        """GPT-2's BPE adds no special tokens, so `add_special_tokens` changes nothing (as in HFLM for GPT-Neo)."""
        ids = self.tokenizer.encode(string)
        return ids[-left_truncate_len:] if left_truncate_len else ids

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # ------------------------------------------------------------------ loglikelihood

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list:
        """TemplateLM's loglikelihood (it encodes each (context, continuation) pair), after checking that each pair
        is two strings with a continuation to score: TemplateLM fails on an empty one with an IndexError, as HFLM."""
        for request in requests:
            pair = request.args
            texts = isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(text, str) for text in pair)
            if not (texts and pair[1]):
                raise InputError(
                    "a loglikelihood request must be (context, continuation), two strings with a non-empty "
                    f"continuation, got {pair!r:.80}."
                )
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list:
        """(sum of log-probabilities, is_greedy) for each (request, context ids, continuation ids), in order.

        The model reads context + continuation without its last token, cut to its last max_length tokens, and the
        continuation is scored at the last len(continuation) positions. Requests that give the model the same input
        share one row (HFLM's logits cache); rows go longest first (HFLM's Collator order), batch_size at a time.
        """
        readers = {}  # model input (tuple of ids) -> indices of the requests that read it
        for index, (_, context, continuation) in enumerate(requests):
            if not context or not continuation or len(continuation) > self.max_length:
                raise InputError(
                    f"a loglikelihood request needs a non-empty context and 1 to {self.max_length} continuation "
                    f"tokens, got {len(context)} and {len(continuation)}."
                )
            readers.setdefault(tuple((context + continuation)[:-1][-self.max_length :]), []).append(index)
        inputs = sorted(readers, key=lambda ids: (-len(ids), ids))
        results = [None] * len(requests)
        with progress_bar(len(requests), disable_tqdm, "Running loglikelihood requests") as progress:
            for start in range(0, len(inputs), self.batch_size):
                batch = inputs[start : start + self.batch_size]
                scored = max(len(requests[index][2]) for ids in batch for index in readers[ids])
                logits = self.last_logits(batch, scored)  # [B, scored, V]
                for row_logits, ids in zip(logits, batch):
                    continuations = [requests[index][2] for index in readers[ids]]
                    for index, score in zip(readers[ids], continuation_scores(row_logits, continuations)):
                        results[index] = score
                        if requests[index][0] is not None:  # rolling windows are cached per document instead
                            self.cache_hook.add_partial("loglikelihood", requests[index][0], score)
                        progress.update(1)
        return results

    def last_logits(self, rows, count: int) -> np.ndarray:
        """Logits at the last `count` positions of rows of ids, left-padded into one batch -> [B, count, V]."""
        ids, mask = left_padded(rows, self.eot_token_id)
        return self.model.forward(ids, mask, last_positions=count)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list:
        """Log-likelihood of each whole text: windows of max_length tokens that score every token exactly once, the
        first conditioned on the end-of-text prefix, each later one on as much of the text before it as fits."""
        windows, owners = [], []  # (None, context ids, scored ids) per window; the request it belongs to
        for index, (text,) in enumerate(request.args for request in requests):
            pairs = get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            )
            for context, continuation in map(make_disjoint_window, pairs):
                windows.append((None, context, continuation))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[owner] += logprob
        for request, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", request.args, total)
        return totals

    # ------------------------------------------------------------------ generate_until

    def generate_until(self, requests, disable_tqdm: bool = False) -> list:
        """Each request's (context, generation settings) -> the generated text, cut at the first stop string.

        As HFLM: requests with the same settings are batched longest first; the context keeps its last
        max_length - max_gen_toks tokens; EOS always stops; the text is decoded without special tokens.
        """
        order = Collator(
            [request.args for request in requests],
            sort_fn=lambda args: (-len(self.tok_encode(args[0])), args[0]),
            group_by="gen_kwargs",
            group_fn=lambda args: args[1],
        )
        eos_text = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        results = []
        with progress_bar(len(requests), disable_tqdm, "Running generate_until requests") as progress:
            for batch in order.get_batched(n=self.batch_size):
                contexts, all_settings = zip(*batch)
                until, max_gen_toks, settings = self.task_settings(all_settings[0], eos_text)
                rows = [self.tok_encode(text, left_truncate_len=self.max_length - max_gen_toks) for text in contexts]
                ids, mask = left_padded(rows, self.eot_token_id)
                new_tokens = settings.pop("max_length", ids.shape[1] + max_gen_toks) - ids.shape[1]
                for context, text in zip(contexts, self.generate_texts(ids, mask, new_tokens, until, settings)):
                    results.append(postprocess_generated_text(text, until, think_end_token=None))
                    self.cache_hook.add_partial("generate_until", (context, all_settings[0]), results[-1])
                    progress.update(1)
        return order.get_original(results)

    def task_settings(self, generation_kwargs: dict, eos_text: str):
        """(stop strings, max_gen_toks, the other settings) from a task's generation_kwargs, normalised as HFLM
        does; max_gen_toks must leave the prompt a place in the context, as HFLM asserts. HFLM asserts that
        generation_kwargs is a dict, and fails on a stop that is not a string (it encodes each stop): both are
        refused here."""
        if not isinstance(generation_kwargs, dict):
            raise InputError(f"a task's generation_kwargs must be a mapping, got {type(generation_kwargs).__name__}.")
        until = generation_kwargs.get("until", [])
        if not (isinstance(until, str) or (isinstance(until, list) and all(isinstance(stop, str) for stop in until))):
            raise InputError(f"the task's until must be a stop string or a list of stop strings, got {until!r}.")
        try:
            settings = normalize_gen_kwargs(generation_kwargs, self.max_gen_toks)
            until = handle_stop_sequences(settings.pop("until", None), eos=eos_text)
        except (TypeError, ValueError) as error:
            raise InputError(f"the task's generation_kwargs {generation_kwargs} cannot be used ({error}).") from None
        max_gen_toks = settings.pop("max_gen_toks")
        if not 1 <= max_gen_toks < self.max_length:
            raise InputError(
                f"the task's max_gen_toks must be from 1 to {self.max_length - 1} (the model's context holds "
                f"{self.max_length} tokens, the prompt's among them), got {max_gen_toks}."
            )
        return until, max_gen_toks, settings

    def generate_texts(self, ids, mask, max_new_tokens: int, until: list, settings: dict) -> list:
        """The new text of each row of a left-padded batch, generated until every row has produced EOS or one of
        the `until` strings, or max_new_tokens (HF generate() with lm-eval's stop-sequence criteria)."""
        try:
            chosen = GenerationSettings.for_model(
                self.model.config, max_new_tokens=max_new_tokens, **generation_keywords(settings)
            )
        except InputError as error:
            raise InputError(f"the task's generation_kwargs cannot be used: {error}") from None
        rows = [GeneratedRow(self.tokenizer, until) for _ in range(len(ids))]
        for tokens in generation.generate_tokens(self.model, ids, mask, chosen):
            for row, token in zip(rows, tokens):
                row.add(int(token))
            if all(row.finished for row in rows):
                break
        return [self.tok_decode(row.ids) for row in rows]


class GeneratedRow:
    """The tokens one row has generated so far, and whether it is finished: it produced EOS, or its text (decoded
    without special tokens, as the answer is) contains one of the stop strings.

    Each step decodes only the new token, so a row of n tokens costs O(n), not O(n^2). A stop string can span
    tokens, so the search covers the new text plus the last len(longest stop) - 1 characters before it; a token
    that ends inside a UTF-8 character is held back until the next completes it (as tokenizer.TextStream does).
    """

    def __init__(self, tokenizer, until: list):
        self.tokenizer = tokenizer
        self.until = until
        self.keep = max((len(stop) for stop in until), default=1) - 1  # characters of text a stop may start in
        self.ids = []  # every generated id (EOS repeats after the end, as transformers pads finished rows)
        self.pending = []  # ids whose text is not complete yet
        self.tail = ""  # the last `keep` characters of the text so far
        self.finished = False

    def add(self, token: int) -> None:
        self.ids.append(token)
        if self.finished:
            return
        if token == self.tokenizer.eos_token_id:
            self.finished = True
            return
        self.pending.append(token)
        text = self.tokenizer.decode(self.pending, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a character split across tokens: wait for the rest of it
            return
        self.pending = []
        window = self.tail + text
        self.finished = any(stop in window for stop in self.until)
        self.tail = window[max(0, len(window) - self.keep) :]


def continuation_scores(logits, continuations) -> list:
    """(sum of log-softmax at the continuation's ids, every id the argmax) for continuations that end at the last
    position: logits float32 [n, V] (overwritten) for the last n positions, each continuation at most n ids."""
    n = len(logits)
    greedy = logits.argmax(axis=-1)  # [n]
    chosen = [logits[n - len(ids) :][np.arange(len(ids)), ids] for ids in continuations]  # read before overwriting
    log_normaliser = log_sum_exp(logits, greedy)  # [n]
    return [
        (float((picked - log_normaliser[n - len(ids) :]).sum()), bool((greedy[n - len(ids) :] == ids).all()))
        for picked, ids in zip(chosen, continuations)
    ]


def log_sum_exp(logits, argmax):
    """log(sum(exp(logits))) over the vocabulary: [n, V] (overwritten with exp(logits - max)), argmax [n] -> [n].

    In place, a few rows at a time so each block stays in the CPU cache between its subtract, exp and sum: for a
    2048-token rolling window the logits are 400 MB, and fresh temporaries that size cost more than the arithmetic.
    """
    top = logits[np.arange(len(logits)), argmax]  # [n]
    sums = np.empty(len(logits), dtype=np.float32)
    for start in range(0, len(logits), ROWS_PER_BLOCK):
        block = logits[start : start + ROWS_PER_BLOCK]  # [rows, V], a view
        block -= top[start : start + ROWS_PER_BLOCK, None]
        np.exp(block, out=block)
        sums[start : start + ROWS_PER_BLOCK] = block.sum(axis=-1)
    return np.log(sums) + top


def generation_keywords(settings: dict) -> dict:
    """A task's remaining generation settings as model.generate keywords, as HFLM._model_generate hands them to
    transformers' generate(): all of them, greedy or not (a greedy task's repetition_penalty applies), except the
    temperature 0.0 that lm-eval writes for greedy decoding. Sampling gets a seed drawn from NumPy, which lm-eval
    seeds. A setting neo_numpy does not have (num_beams, ...) is refused rather than ignored."""
    keywords = {"temperature": 0.0, **settings}
    if keywords["temperature"] == 0.0 and keywords.get("do_sample") is None:
        keywords["do_sample"] = False
    if keywords.get("do_sample") is False and keywords["temperature"] == 0.0:
        del keywords["temperature"]
    unknown = sorted(set(keywords) - set(GENERATE_SETTINGS))
    if unknown:
        raise InputError(f"the generation setting {unknown[0]!r} is not supported by neo_numpy.")
    if keywords.get("do_sample"):
        keywords["seed"] = int(np.random.randint(2**31))  # lm-eval seeds NumPy
    return keywords


def batch_size_of(value) -> int:
    """The batch_size model argument: a whole number of at least 1 (lm-eval may pass it as a string)."""
    number = int(value) if is_int(value) or (isinstance(value, str) and value.strip().isdigit()) else 0
    if number < 1:
        raise InputError(f"batch_size must be a whole number of at least 1, got {value!r}.", parameter="batch_size")
    return number


def progress_bar(total: int, disable: bool, description: str):
    """A tqdm bar on stderr; used in a `with` block, so an error ends its line before the error is printed."""
    return tqdm(total=total, disable=disable, desc=description)

"""lm-eval on neo_numpy against lm-eval's own Hugging Face model, offline, on tasks the tests write.

Four local tasks (JSON files + task YAMLs, as a user would write for --include-path) cover every request type:
LAMBADA-like loglikelihood (acc, perplexity), rolling loglikelihood on documents several times longer than the
test checkpoint's 64-position context (word/byte perplexity, bits per byte), multiple choice (acc, acc_norm) and
generate_until with stop strings. Both models run the same tasks on the same checkpoint; every metric must agree to
1e-4 relative, every request's log-likelihood to 1e-5 relative, every generated text exactly.
"""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from checkpoints import build_torch_model, require, save_checkpoint

require("lm_eval")

import lm_eval  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

import neo_numpy  # noqa: E402
import neo_numpy.evaluation  # noqa: E402, F401  (registers the model "neo_numpy")
from neo_numpy.cli import main  # noqa: E402
from neo_numpy.errors import InputError  # noqa: E402
from neo_numpy.evaluation import current_umask  # noqa: E402

pytestmark = pytest.mark.slow  # lm-eval runs, in-process and as `python -m neo_numpy eval` (several minutes)

CONTEXT = 64  # the test checkpoint's max_position_embeddings: rolling documents need several windows
ROOT = Path(__file__).resolve().parent.parent
VOCABULARY = (
    "the a of and to in is was for on that with as by it he she they at from his her their an be this which or "
    "river mountain city house garden king queen child letter music winter summer morning night light stone road "
    "walked found said wrote opened carried watched remembered built painted followed answered crossed sang "
    "old small bright quiet long green cold early silent golden distant"
)
TASKS = ["neo_lambada", "neo_rolling", "neo_choice", "neo_generate"]


def sentence(rng, length: int) -> str:
    words = VOCABULARY.split()
    return " ".join(words[i] for i in rng.integers(0, len(words), length)).capitalize() + "."


def write_tasks(folder: Path) -> Path:
    """Four task YAMLs and their JSON-lines data in `folder`; returns it (an --include-path)."""
    rng = np.random.default_rng(0)
    data = {
        "lambada": [
            {"text": " ".join(sentence(rng, n) for n in lengths)} for lengths in [(8, 9, 7)] * 5 + [(30, 30, 30)]
        ],
        "rolling": [{"page": "\n".join(sentence(rng, 14) for _ in range(n))} for n in (18, 3, 11)],
        "choice": [
            {"question": sentence(rng, 6), "choices": [" yes", " no", " " + sentence(rng, 3)], "label": i % 3}
            for i in range(5)
        ],
        "generate": [{"prompt": sentence(rng, n), "answer": "the"} for n in (12, 12, 12, 12, 70)],
    }
    for name, docs in data.items():
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(doc) + "\n" for doc in docs), encoding="utf-8")
    specs = {
        "neo_lambada": {
            "output_type": "loglikelihood",
            "doc_to_text": "{{text.split(' ')[:-1]|join(' ')}}",
            "doc_to_target": "{{' '+text.split(' ')[-1]}}",
            "metric_list": [{"metric": "perplexity"}, {"metric": "acc"}],
            "file": "lambada",
        },
        "neo_rolling": {
            "output_type": "loglikelihood_rolling",
            "doc_to_text": "",
            "doc_to_target": "{{page}}",
            "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}],
            "file": "rolling",
        },
        "neo_choice": {
            "output_type": "multiple_choice",
            "doc_to_text": "Question: {{question}}\nAnswer:",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "label",
            "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
            "file": "choice",
        },
        "neo_generate": {
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{answer}}",
            "generation_kwargs": {"until": ["\n", "."], "max_gen_toks": 12, "do_sample": False},
            "metric_list": [{"metric": "exact_match"}],
            "file": "generate",
        },
        "neo_penalty": {  # greedy, but with a repetition penalty that must still apply
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{answer}}",
            "generation_kwargs": {
                "until": ["\n", "."],
                "max_gen_toks": 12,
                "do_sample": False,
                "repetition_penalty": 5.0,
            },
            "metric_list": [{"metric": "exact_match"}],
            "file": "generate",
        },
    }
    for task, spec in specs.items():
        data_file = folder / f"{spec.pop('file')}.jsonl"
        config = {
            "task": task,
            "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data_file)}, "cache_dir": str(folder / "cache")},
            "test_split": "test",
            **spec,
        }
        (folder / f"{task}.yaml").write_text(json.dumps(config, indent=1), encoding="utf-8")  # JSON is YAML
    return folder


@pytest.fixture(scope="module")
def eval_checkpoint(tmp_path_factory):
    model = build_torch_model("alternating", seed=3, max_positions=CONTEXT)
    return save_checkpoint(model, tmp_path_factory.mktemp("eval_checkpoint"))


@pytest.fixture(scope="module")
def task_folder(tmp_path_factory):
    return write_tasks(tmp_path_factory.mktemp("eval_tasks"))


@pytest.fixture(scope="module")
def both_runs(eval_checkpoint, task_folder):
    """lm-eval's results for model="neo_numpy" and model="hf" on the same checkpoint and tasks."""
    tasks = TaskManager(include_path=str(task_folder), include_defaults=False)
    common = dict(tasks=TASKS, task_manager=tasks, bootstrap_iters=0, log_samples=True)
    ours = lm_eval.simple_evaluate(model="neo_numpy", model_args=f"pretrained={eval_checkpoint},batch_size=3", **common)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={eval_checkpoint},dtype=float32,device=cpu,batch_size=4", **common
    )
    return ours, theirs


def numeric_metrics(results, task):
    return {key: value for key, value in results["results"][task].items() if isinstance(value, (int, float))}


def relative(ours, theirs) -> float:
    return abs(ours - theirs) / abs(theirs) if theirs else abs(ours)


@pytest.mark.parametrize("task", TASKS)
def test_every_metric_matches_lm_evals_hf_model(both_runs, task):
    ours, theirs = (numeric_metrics(results, task) for results in both_runs)
    names = {key.split(",")[0] for key in theirs}
    expected = {
        "neo_lambada": {"perplexity", "acc"},
        "neo_rolling": {"word_perplexity", "byte_perplexity", "bits_per_byte"},
        "neo_choice": {"acc", "acc_norm"},
        "neo_generate": {"exact_match"},
    }[task]
    assert expected <= names and ours.keys() == theirs.keys()
    worst = max(relative(ours[key], theirs[key]) for key in theirs)
    print(f"{task}: {len(theirs)} metrics, max relative difference {worst:.2e}")
    assert worst < 1e-4, (ours, theirs)


def responses(results, task):
    """Each request's raw answer, in lm-eval's document and request order."""
    return [response[0] for sample in results["samples"][task] for response in sample["resps"]]


@pytest.mark.parametrize("task", ["neo_lambada", "neo_rolling", "neo_choice"])
def test_every_request_loglikelihood_matches_transformers(both_runs, task):
    ours, theirs = (responses(results, task) for results in both_runs)
    assert len(ours) == len(theirs) >= 3
    ours_ll, theirs_ll = (
        np.array([float(r[0]) if isinstance(r, (list, tuple)) else float(r) for r in rs]) for rs in (ours, theirs)
    )
    worst = float(np.max(np.abs(ours_ll - theirs_ll) / np.abs(theirs_ll)))
    print(f"{task}: {len(ours)} requests, max relative difference {worst:.2e}")
    assert worst < 1e-5
    if task != "neo_rolling":  # (log-likelihood, is_greedy) pairs
        assert [bool(r[1]) for r in ours] == [bool(r[1]) for r in theirs]


def test_generated_texts_are_identical(both_runs):
    ours, theirs = (responses(results, "neo_generate") for results in both_runs)
    assert len(ours) == 5 and ours == theirs
    assert any(text.strip() for text in ours)  # something was generated, so the comparison says something


def test_greedy_generation_keeps_the_tasks_other_settings(both_runs, eval_checkpoint, task_folder):
    """A greedy task's repetition_penalty applies, as HFLM passes every generation setting on to generate().

    HFLM runs one request per batch here: in a padded batch transformers also penalises the padding id (EOS) of
    the shorter rows, so its texts there depend on the batch; neo_numpy's rows give what they give alone.
    """
    tasks = TaskManager(include_path=str(task_folder), include_defaults=False)
    common = dict(tasks=["neo_penalty"], task_manager=tasks, bootstrap_iters=0, log_samples=True)
    ours = lm_eval.simple_evaluate(model="neo_numpy", model_args=f"pretrained={eval_checkpoint},batch_size=3", **common)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={eval_checkpoint},dtype=float32,device=cpu,batch_size=1", **common
    )
    penalised = responses(ours, "neo_penalty")
    assert len(penalised) == 5 and penalised == responses(theirs, "neo_penalty")
    assert penalised != responses(both_runs[0], "neo_generate")  # the penalty changed the texts


def stop_across_a_token_boundary(tokenizer, tokens):
    """(a stop string made of the last 2 characters of token k-1's text and the first 2 of token k's, k): the first
    k >= 2 where the text before the boundary does not contain it yet."""
    for k in range(2, len(tokens)):
        before, after = tokenizer.decode(tokens[:k]), tokenizer.decode(tokens[: k + 1])
        stop = before[-2:] + after[len(before) : len(before) + 2]
        if after.startswith(before) and len(after) >= len(before) + 2 and "\ufffd" not in stop and stop not in before:
            return stop, k
    raise AssertionError("no token boundary to put a stop string on")


def counted_generation(lm, ids, until, monkeypatch):
    """(generate_texts' text for one prompt, the steps generated, the length of every tokenizer.decode call)."""
    steps, decoded = [], []
    generate_tokens, decode = neo_numpy.generation.generate_tokens, lm.tokenizer.decode
    counted_steps = lambda *args, **kwargs: (steps.append(t) or t for t in generate_tokens(*args, **kwargs))  # noqa: E731
    counted_decode = lambda ids, **kwargs: decoded.append(len(list(ids))) or decode(ids, **kwargs)  # noqa: E731
    with monkeypatch.context() as patch:
        patch.setattr(neo_numpy.generation, "generate_tokens", counted_steps)
        patch.setattr(lm.tokenizer, "decode", counted_decode)
        text = lm.generate_texts(np.array([ids]), np.ones((1, len(ids)), dtype=np.int64), 20, until, {})
    return text, steps, decoded


def test_generation_stops_at_the_token_that_completes_a_stop_string(eval_checkpoint, monkeypatch):
    """A stop string spanning two tokens stops the row at its last token, the answer equals HFLM's, and the text
    is decoded incrementally: each generated token is decoded a bounded number of times, not once per step."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from neo_numpy.lm_eval_model import NeoNumpyLM

    ours = NeoNumpyLM(eval_checkpoint, batch_size=2)
    prompts, stops, unstopped = ["The river", "She walked to the old house"], [], []
    for prompt in prompts:
        ids = ours.tok_encode(prompt)
        tokens = ours.model.generate(np.array([ids]), max_new_tokens=20, eos_token_id=None)[0, len(ids) :].tolist()
        assert ours.eot_token_id not in tokens
        stop, k = stop_across_a_token_boundary(ours.tokenizer, tokens)
        stops.append(stop)
        unstopped.append(tokens)

        text, steps, _ = counted_generation(ours, ids, [stop, "<|endoftext|>"], monkeypatch)
        assert text == [ours.tokenizer.decode(tokens[: k + 1])] and len(steps) == k + 1
        text, steps, decoded = counted_generation(ours, ids, ["<|endoftext|>"], monkeypatch)
        assert text == [ours.tokenizer.decode(tokens)] and len(steps) == 20
        assert sum(decoded) <= 3 * 20  # each step decodes its new token (or a few, for a split character), not all

    requests = [
        Instance("generate_until", {}, (prompt, {"until": stops, "max_gen_toks": 20, "do_sample": False}), index)
        for index, prompt in enumerate(prompts)
    ]
    theirs = HFLM(pretrained=str(eval_checkpoint), dtype="float32", device="cpu", batch_size=1)
    answers = ours.generate_until(requests)
    assert answers == theirs.generate_until(requests)
    assert answers == [ours.tokenizer.decode(tokens).split(stops[0])[0].split(stops[1])[0] for tokens in unstopped]


def test_a_row_is_finished_by_eos_or_a_stop_string_split_anywhere(eval_checkpoint):
    from neo_numpy.lm_eval_model import GeneratedRow

    tokenizer = neo_numpy.load_tokenizer(eval_checkpoint)

    def finished_after_each(text, until):
        row = GeneratedRow(tokenizer, until)
        return [row.add(token) or row.finished for token in tokenizer.encode(text)]

    assert len(tokenizer.encode("a😀b")) == 4  # the emoji's four bytes are two tokens
    assert finished_after_each("a😀b", ["😀"]) == [False, False, True, True]  # found once the character is whole
    assert finished_after_each("héllo wörld", ["lo w"]) == [False, False, False, True, True, True]  # 'llo' + ' w'
    assert finished_after_each("héllo wörld", ["xyz", "ld"]) == [False] * 5 + [True]
    row = GeneratedRow(tokenizer, ["xyz"])
    row.add(tokenizer.eos_token_id)
    assert row.finished


def test_the_tasks_reach_past_the_context(both_runs, eval_checkpoint):
    """Rolling documents need one window and many; a passage and a prompt are cut on the left, as in HFLM."""
    tokenizer = neo_numpy.load_tokenizer(eval_checkpoint)
    samples = both_runs[0]["samples"]
    lengths = sorted(len(tokenizer.encode(sample["doc"]["page"])) for sample in samples["neo_rolling"])
    assert lengths[0] < CONTEXT and lengths[-1] > 4 * CONTEXT
    assert max(len(tokenizer.encode(sample["doc"]["text"])) for sample in samples["neo_lambada"]) > CONTEXT + 1
    assert max(len(tokenizer.encode(sample["doc"]["prompt"])) for sample in samples["neo_generate"]) > CONTEXT - 12


def test_last_positions_gives_the_tail_of_the_logits(eval_checkpoint):
    model = neo_numpy.load_model(eval_checkpoint)
    ids = np.array([[464, 3290, 318, 257, 922], [50256, 50256, 15496, 995, 0]])
    mask = np.array([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    full = model.forward(ids, mask)
    tail = model.forward(ids, mask, last_positions=2)
    assert tail.shape == (2, 2, full.shape[-1])
    np.testing.assert_allclose(tail, full[:, -2:], rtol=0, atol=1e-5 * np.abs(full).max())
    with pytest.raises(InputError, match="last_positions"):
        model.forward(ids, mask, last_positions=6)


# ---------------------------------------------------------------------- the command line


def run_cli(*args, block_lm_eval=False, env=None):
    """`python -m neo_numpy ...` in a fresh process; with block_lm_eval, as if lm-eval were not installed; env: more
    environment variables."""
    code = "import sys; from neo_numpy.cli import main; sys.exit(main(sys.argv[1:]))"
    if block_lm_eval:
        code = "import sys; sys.modules['lm_eval'] = None; " + code  # `import lm_eval` now raises ImportError
    env = dict(os.environ, PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def error_line(stderr: str) -> str:
    """The one `error:` line a failed command ends with (lm-eval's own log lines may come before it)."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and [line for line in lines if line.startswith("error:")] == lines[-1:], stderr
    return lines[-1]


def test_eval_command_end_to_end(both_runs, eval_checkpoint, task_folder, tmp_path):
    output = tmp_path / "results.json"
    flags = ["--tasks", "neo_lambada,neo_choice", "--limit", "3", "--batch-size", "2"]
    done = run_cli("eval", "--model", eval_checkpoint, "--include-path", task_folder, "--output", output, *flags)
    assert done.returncode == 0, done.stderr
    assert "neo_lambada" in done.stdout and "neo_choice" in done.stdout and "perplexity" in done.stdout
    assert "Running loglikelihood requests" in done.stderr  # the progress bar, with its ETA
    written = json.loads(output.read_text())["results"]
    first_three = {task: both_runs[0]["samples"][task][:3] for task in ("neo_lambada", "neo_choice")}
    assert [sample["doc_id"] for sample in first_three["neo_choice"]] == [0, 1, 2]
    mean_ll = np.mean([sample["filtered_resps"][0][0] for sample in first_three["neo_lambada"]])
    assert written["neo_lambada"]["perplexity,none"] == pytest.approx(math.exp(-mean_ll), rel=1e-6)
    assert written["neo_choice"]["acc,none"] == pytest.approx(np.mean([s["acc"] for s in first_three["neo_choice"]]))


def test_eval_command_few_shot(eval_checkpoint, task_folder, tmp_path, capsys):
    output = tmp_path / "few_shot.json"
    flags = ["--tasks", "neo_choice", "--num-fewshot", "2", "--limit", "2", "--output", str(output)]
    assert main(["eval", "--model", str(eval_checkpoint), "--include-path", str(task_folder), *flags]) == 0
    written = json.loads(output.read_text())
    assert written["n-shot"]["neo_choice"] == 2 and written["n-samples"]["neo_choice"]["effective"] == 2
    assert "neo_choice" in capsys.readouterr().out


def test_eval_command_unknown_task(eval_checkpoint, task_folder, capsys):
    status = main(
        [
            "eval",
            "--model",
            str(eval_checkpoint),
            "--include-path",
            str(task_folder),
            "--tasks",
            "neo_lambada,no_such_task",
        ]
    )
    assert status == 1
    assert error_line(capsys.readouterr().err).startswith("error: lm-eval has no task 'no_such_task'")


def test_eval_command_data_offline(eval_checkpoint, tmp_path, capsys):
    config = {
        "task": "neo_hub_task",
        "dataset_path": "neo-numpy-tests/not-on-this-machine",
        "output_type": "loglikelihood",
        "test_split": "test",
        "doc_to_text": "{{text}}",
        "doc_to_target": "{{text}}",
        "metric_list": [{"metric": "acc"}],
    }
    (tmp_path / "neo_hub_task.yaml").write_text(json.dumps(config), encoding="utf-8")
    status = main(["eval", "--model", str(eval_checkpoint), "--tasks", "neo_hub_task", "--include-path", str(tmp_path)])
    error = error_line(capsys.readouterr().err)
    assert status == 1 and error.startswith("error: the data of neo_hub_task could not be downloaded")
    assert "offline mode" in error


def test_eval_command_without_lm_eval(eval_checkpoint):
    done = run_cli("eval", "--model", eval_checkpoint, "--tasks", "lambada_openai", block_lm_eval=True)
    assert done.returncode == 1 and done.stdout == "" and done.stderr.count("\n") == 1
    assert error_line(done.stderr).startswith("error: the eval command needs EleutherAI's lm-evaluation-harness")
    assert "pip install -r requirements-eval.txt" in done.stderr
    generated = run_cli("generate", "--model", eval_checkpoint, "The dog", "-n", 3, block_lm_eval=True)
    assert generated.returncode == 0, generated.stderr  # generation never needs lm-eval


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--limit", "0"], "--limit must be a positive number (of documents, or a fraction below 1)"),
        (["--limit", "nan"], "--limit must be a positive number (of documents, or a fraction below 1)"),
        (["--limit", "inf"], "--limit must be a positive number (of documents, or a fraction below 1)"),
        (["--num-fewshot", "-1"], "--num-fewshot must be 0 or more"),
        (["--output", "no-such-folder/results.json"], "--output must be in an existing folder"),
    ],
)
def test_eval_command_bad_arguments(flags, message, capsys):
    assert main(["eval", "--tasks", "lambada_openai", *flags]) == 1
    assert capsys.readouterr().err.strip() == f"error: {message}, got {flags[1]}."


def test_generation_settings_and_model_arguments(eval_checkpoint):
    from neo_numpy.lm_eval_model import NeoNumpyLM, generation_keywords

    greedy = {"do_sample": False, "temperature": 0.0, "repetition_penalty": 1.3}  # as lm-eval normalises greedy
    assert generation_keywords(greedy) == {"do_sample": False, "repetition_penalty": 1.3}
    sampled = generation_keywords({"do_sample": True, "temperature": 0.7, "top_p": 0.9})
    assert sampled.keys() == {"do_sample", "temperature", "top_p", "seed"} and sampled["temperature"] == 0.7
    for do_sample in (False, True):
        with pytest.raises(InputError, match="'num_beams' is not supported"):
            generation_keywords({"do_sample": do_sample, "num_beams": 4})
    with pytest.raises(InputError, match="batch_size must be a whole number of at least 1, got 'auto'"):
        NeoNumpyLM(eval_checkpoint, batch_size="auto")
    assert NeoNumpyLM(eval_checkpoint, batch_size="4", threads=1).batch_size == 4  # lm-eval passes strings too
    with pytest.raises(InputError, match="no argument 'foo'"):
        NeoNumpyLM(eval_checkpoint, foo=1)
    with pytest.raises(InputError, match="backend"):  # never a silent CPU run when a GPU was asked for
        NeoNumpyLM(eval_checkpoint, device="cuda")
    assert NeoNumpyLM(eval_checkpoint, device="cpu", max_batch_size=None).batch_size == 1


def test_eval_output_that_is_a_folder_is_refused_before_the_run(tmp_path, capsys):
    assert main(["eval", "--tasks", "lambada_openai", "--output", str(tmp_path)]) == 1
    assert capsys.readouterr().err.strip() == f"error: --output must name a file, but {tmp_path} is a folder."


def test_eval_output_that_cannot_be_written_is_refused_before_the_run(capsys):
    """/proc takes no new file, even from root; the default model (125M) is not here, so only an up-front check
    can give this message."""
    if not Path("/proc/self").exists():
        pytest.skip("needs Linux /proc")
    assert main(["eval", "--tasks", "lambada_openai", "--output", "/proc/neo_numpy_results.json"]) == 1
    assert error_line(capsys.readouterr().err).startswith("error: --output /proc/neo_numpy_results.json cannot be")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["-b", "0"], "error: -b/--batch-size must be a whole number of at least 1, got 0."),
        (["--threads", "0"], "error: --threads must be"),
    ],
)
def test_eval_model_arguments_name_their_flags(flags, message, eval_checkpoint, task_folder, capsys):
    args = ["eval", "-m", str(eval_checkpoint), "--include-path", str(task_folder), "--tasks", "neo_choice", *flags]
    assert main(args) == 1
    assert error_line(capsys.readouterr().err).startswith(message)


def task_variant(task_folder: Path, folder: Path, task: str, name: str, **changes) -> None:
    """A copy of one of the tasks' YAML in `folder`, named `name`, with some of its fields changed."""
    config = {**json.loads((task_folder / f"{task}.yaml").read_text()), "task": name, **changes}
    (folder / f"{name}.yaml").write_text(json.dumps(config), encoding="utf-8")


@pytest.fixture(scope="module")
def hostile_tasks(task_folder, tmp_path_factory):
    """An --include-path of tasks that cannot run: malformed JSON Lines, a template naming a missing field, a
    generate_until task with max_gen_toks 0; and neo_choice (5 documents) for too many few-shot examples."""
    folder = tmp_path_factory.mktemp("hostile_tasks")
    (folder / "broken.jsonl").write_text('{"text": "a b c"}\n{"text": "never closed\n', encoding="utf-8")
    data = {"data_files": {"test": str(folder / "broken.jsonl")}, "cache_dir": str(folder / "cache")}
    task_variant(task_folder, folder, "neo_lambada", "neo_broken_json", dataset_kwargs=data)
    task_variant(task_folder, folder, "neo_lambada", "neo_missing_field", doc_to_text="{{no_such_field}}")
    settings = {"until": ["\n"], "max_gen_toks": 0, "do_sample": False}
    task_variant(task_folder, folder, "neo_generate", "neo_no_room", generation_kwargs=settings)
    settings = {"until": None, "max_gen_toks": 3, "do_sample": False}  # lm-eval makes it [None]; HFLM fails on it
    task_variant(task_folder, folder, "neo_generate", "neo_until_null", generation_kwargs=settings)
    task_variant(task_folder, folder, "neo_choice", "neo_choice")
    return folder


@pytest.mark.parametrize(
    "task, flags, words",
    [
        ("neo_choice", ["--num-fewshot", "10"], ["--num-fewshot 10", "neo_choice", "documents"]),
        ("neo_broken_json", [], ["data of neo_broken_json could not be read", "JSON"]),
        ("neo_missing_field", [], ["neo_missing_field", "no_such_field"]),
        ("neo_no_room", [], ["the task's max_gen_toks", "got 0"]),  # its own line, not inside the progress bar
        ("neo_until_null", [], ["the task's until must be a stop string", "got None"]),
    ],
)
def test_eval_tasks_that_cannot_run_are_one_error_line(task, flags, words, eval_checkpoint, hostile_tasks, capsys):
    args = ["eval", "-m", str(eval_checkpoint), "--include-path", str(hostile_tasks), "--tasks", task, *flags]
    assert main(args) == 1
    line = error_line(capsys.readouterr().err)
    assert all(word in line for word in words) and "max_new_tokens" not in line, line


@pytest.mark.parametrize(
    "request_type, args, words",
    [
        ("loglikelihood", ("", ""), "non-empty continuation, got ('', '')"),  # TemplateLM: IndexError
        ("loglikelihood", ("a", None), "two strings"),
        ("generate_until", ("The dog", {"until": 5, "max_gen_toks": 2}), "until must be a stop string"),
        ("generate_until", ("The dog", {"until": ["\n", None], "max_gen_toks": 2}), "got ['\\n', None]"),
        ("generate_until", ("The dog", "until"), "generation_kwargs must be a mapping, got str"),  # HFLM asserts
    ],
)
def test_lm_eval_requests_that_hflm_cannot_run_are_one_input_error(request_type, args, words, eval_checkpoint):
    from lm_eval.api.instance import Instance

    from neo_numpy.lm_eval_model import NeoNumpyLM

    lm = NeoNumpyLM(eval_checkpoint)
    with pytest.raises(InputError) as raised:
        getattr(lm, request_type)([Instance(request_type, {}, args, 0)], disable_tqdm=True)
    assert words in str(raised.value) and "\n" not in str(raised.value)  # one line


def test_eval_refuses_a_tokenizer_without_endoftext_that_generate_accepts(eval_checkpoint, task_folder, tmp_path):
    """tokenizer_config.json names no eos_token: generate stops at config.json's eos id; lm-eval needs the
    tokenizer's own end-of-text token (lm-eval's hf model fails on such a tokenizer's generate_until requests)."""
    folder = shutil.copytree(eval_checkpoint, tmp_path / "no_endoftext")
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": None}), encoding="utf-8")
    assert neo_numpy.load_tokenizer(folder).eos_token_id is None
    generated = run_cli("generate", "The dog", "-m", folder, "-n", 2)
    assert generated.returncode == 0, generated.stderr
    done = run_cli("eval", "-m", folder, "--include-path", task_folder, "--tasks", "neo_choice")
    assert done.returncode == 1 and "<|endoftext|>" in error_line(done.stderr)


def test_eval_on_an_ascii_stdout_prints_the_table_and_writes_the_output(eval_checkpoint, task_folder, tmp_path):
    output = tmp_path / "ascii.json"
    flags = ["--tasks", "neo_choice", "--limit", "2", "--output", output]
    done = run_cli(
        "eval", "-m", eval_checkpoint, "--include-path", task_folder, *flags, env={"PYTHONIOENCODING": "ascii"}
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "neo_choice" in done.stdout and "\\u2191" in done.stdout  # the table's arrow, as an escape
    assert json.loads(output.read_text())["results"]["neo_choice"]["acc,none"] >= 0
    assert output.stat().st_mode & 0o777 == 0o666 & ~current_umask()  # as any new file, not 0o600


def test_rolling_windows_and_empty_contexts_begin_with_bos_as_in_hflm(eval_checkpoint, tmp_path):
    """A tokenizer whose bos_token is not its eos_token: HFLM puts bos before an empty context and each rolling
    window (eos only when there is no bos); so does neo_numpy, and every log-likelihood agrees."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from neo_numpy.lm_eval_model import NeoNumpyLM

    folder = shutil.copytree(eval_checkpoint, tmp_path / "own_bos")
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "!"}), encoding="utf-8")
    ours = NeoNumpyLM(folder, batch_size=2)
    assert ours.prefix_token_id == ours.tokenizer.encode("!")[0] != ours.eot_token_id
    document = " ".join(VOCABULARY.split()[:90])  # longer than the 64-position context: several windows
    rolling = [Instance("loglikelihood_rolling", {}, (document,), 0)]
    empty_context = [Instance("loglikelihood", {}, ("", " the river"), 0)]
    theirs = HFLM(pretrained=str(folder), dtype="float32", device="cpu", batch_size=1)
    assert theirs.prefix_token_id == ours.prefix_token_id
    for requests, method in ((rolling, "loglikelihood_rolling"), (empty_context, "loglikelihood")):
        mine, reference = getattr(ours, method)(requests), getattr(theirs, method)(requests)
        mine = [item[0] if isinstance(item, tuple) else item for item in mine]
        reference = [item[0] if isinstance(item, tuple) else item for item in reference]
        assert np.allclose(mine, reference, rtol=1e-5, atol=0), (method, mine, reference)

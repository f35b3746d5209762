"""The command line, end to end: `python -m neo_numpy generate ...` in a subprocess, on the test checkpoints.

What it prints is checked against the tokenizer's decode of what neo_numpy's own generate() returns in this process
with the same settings (generate() itself is checked against transformers in test_generation.py). The runs that need
no interaction are started together by one fixture, a few at a time, to keep the wall time down.
"""

import json
import os
import re
import selectors
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from checkpoints import SECRET, SOURCE, build_torch_model, save_checkpoint, write_word_tokenizer

import neo_numpy
from neo_numpy import cli

pytestmark = pytest.mark.slow  # every test runs `python -m neo_numpy` in subprocesses (about 2 minutes in all)

REPO_ROOT = Path(__file__).resolve().parents[1]
MODEL = "alternating"
FLAGS = [
    "--file",
    "-f",
    "--model",
    "-m",
    "--max-new-tokens",
    "-n",
    "--min-new-tokens",
    "--do-sample",
    "--temperature",
    "--top-k",
    "--top-p",
    "--repetition-penalty",
    "--seed",
    "--ignore-eos",
    "--no-echo",
    "--backend",
    "--dtype",
    "--threads",
]


def cli_env(tmp_root: Path) -> dict:
    """Offline, with empty download and Hugging Face cache folders, so nothing outside the test is found."""
    env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        NEO_NUMPY_WEIGHTS=str(tmp_root / "weights"),
        HF_HOME=str(tmp_root / "hf_home"),
        TRANSFORMERS_VERBOSITY="error",
    )
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    return env


def run_cli(args, env, stdin=None, timeout=180):
    """Run `python -m neo_numpy <args>`: (exit code, stdout, stderr) as text."""
    result = subprocess.run(
        [sys.executable, "-m", "neo_numpy", *map(str, args)],
        cwd=REPO_ROOT,
        env=env,
        input=(stdin if stdin is not None else "").encode("utf-8"),
        capture_output=True,
        timeout=timeout,
    )
    return result.returncode, result.stdout.decode("utf-8"), result.stderr.decode("utf-8")


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def tokenizer(checkpoint_dirs):
    return neo_numpy.load_tokenizer(checkpoint_dirs[MODEL])


@pytest.fixture(scope="module")
def eos_checkpoint(checkpoint_dirs, neo_models, tokenizer, cli_root):
    """The MODEL checkpoint with config.json's eos_token_id set to a token that greedy "The dog" emits at step >= 3.

    Returns (folder, prompt ids, the unstopped greedy continuation, the index of the first EOS in it).
    """
    prompt = tokenizer.encode("The dog")
    unstopped = neo_models[MODEL].generate(np.array([prompt]), max_new_tokens=40, eos_token_id=None)[0, len(prompt) :]
    k = next(k for k in range(3, 40) if unstopped[k] not in unstopped[:k])
    folder = cli_root / "eos_checkpoint"
    folder.mkdir()
    for item in checkpoint_dirs[MODEL].iterdir():  # only model.safetensors may be a link out of its folder
        if item.name == "model.safetensors":
            (folder / item.name).symlink_to(item)
        elif item.name != "config.json":
            shutil.copy(item, folder / item.name)
    config = json.loads((checkpoint_dirs[MODEL] / "config.json").read_text())
    config["eos_token_id"] = int(unstopped[k])
    (folder / "config.json").write_text(json.dumps(config))
    return folder, prompt, unstopped, k


@pytest.fixture(scope="module")
def cli_runs(checkpoint_dirs, eos_checkpoint, cli_root):
    """name -> (exit code, stdout, stderr) of every non-interactive command, run a few at a time."""
    model = checkpoint_dirs[MODEL]
    eos_folder = eos_checkpoint[0]
    prompt_file = cli_root / "prompt.txt"
    prompt_file.write_text("Café 😀 EleutherAI has\n", encoding="utf-8")
    empty_file = cli_root / "empty.txt"
    empty_file.write_text("  \n", encoding="utf-8")
    sample = ["--do-sample", "--seed", "1234", "--temperature", "1.5", "--top-k", "0", "-n", "25"]
    specs = {
        # name: (arguments, stdin)
        "greedy": (["generate", "The dog", "-m", model, "-n", "30"], None),
        "file_no_echo": (["generate", "-f", prompt_file, "-m", model, "-n", "20", "--no-echo"], None),
        "stdin": (["generate", "-m", model, "-n", "20"], "Hello world"),
        "sample_a": (["generate", "EleutherAI has", "-m", model, *sample], None),
        "sample_b": (["generate", "EleutherAI has", "-m", model, *sample], None),
        "eos": (["generate", "The dog", "-m", eos_folder, "-n", "40"], None),
        "ignore_eos": (["generate", "The dog", "-m", eos_folder, "-n", "40", "--ignore-eos"], None),
        "help": (["--help"], None),
        "generate_help": (["generate", "--help"], None),
        # refused input: one line "error: ...", a non-zero exit status, no traceback
        "missing_folder": (["generate", "The dog", "-m", cli_root / "no_such_checkpoint", "-n", "5"], None),
        "unknown_hub_name": (["generate", "The dog", "-m", "nobody-at-all/gpt-neo-does-not-exist", "-n", "5"], None),
        "beyond_context": (["generate", "The dog", "-m", model, "-n", "600"], None),
        "temperature_0": (["generate", "The dog", "-m", model, "--temperature", "0"], None),
        "temperature_negative": (["generate", "The dog", "-m", model, "--temperature", "-1"], None),
        "top_p_0": (["generate", "The dog", "-m", model, "--top-p", "0"], None),
        "top_p_1.5": (["generate", "The dog", "-m", model, "--top-p", "1.5"], None),
        "empty_file": (["generate", "-f", empty_file, "-m", model], None),
        "missing_file": (["generate", "-f", cli_root / "no_such_prompt.txt", "-m", model], None),
        "empty_stdin": (["generate", "-m", model], ""),
        "prompt_and_file": (["generate", "The dog", "-f", prompt_file, "-m", model], None),
        "threads_0": (["generate", "The dog", "-m", model, "--threads", "0"], None),
        "penalty_rounds_to_0": (["generate", "The dog", "-m", model, "--repetition-penalty", "1e-300"], None),
        "temperature_rounds_to_0": (
            ["generate", "The dog", "-m", model, "--do-sample", "--temperature", "1e-50"],
            None,
        ),
        "temperature_overflows": (["generate", "The dog", "-m", model, "--do-sample", "--temperature", "1e-40"], None),
        "context_plus_one": (["generate", "The dog", "-m", model, "-n", "511", "--no-echo"], None),
        "n_0": (["generate", "The dog", "-m", model, "-n", "0"], None),
        "top_k_negative": (["generate", "The dog", "-m", model, "--top-k", "-1"], None),
        "min_beyond_max": (["generate", "The dog", "-m", model, "-n", "5", "--min-new-tokens", "6"], None),
        "eval_help": (["eval", "--help"], None),
        "finetune_help": (["finetune", "--help"], None),
        # argparse refuses these itself: a usage line, then "... error: ...", exit status 2
        "n_not_a_number": (["generate", "The dog", "-m", model, "-n", "many"], None),
    }
    env = cli_env(cli_root)
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run_cli, args, env, stdin) for name, (args, stdin) in specs.items()}
        return {name: future.result() for name, future in futures.items()}


def has_no_eos(ids, prompt_length):
    """True when the continuation holds no <|endoftext|>, so the CLI prints all of it."""
    return 50256 not in ids[prompt_length:].tolist()


def assert_summary(stderr, new_tokens=None):
    assert "Traceback" not in stderr, stderr
    summary = stderr.strip().splitlines()[-1]
    assert "tok/s" in summary, stderr
    if new_tokens is not None:
        assert f"{new_tokens} new tokens" in summary, summary
    return summary


# --------------------------------------------------------------------------- generating


def test_generate_prints_the_prompt_and_the_greedy_continuation(cli_runs, neo_models, tokenizer):
    code, stdout, stderr = cli_runs["greedy"]
    assert code == 0, stderr
    prompt = tokenizer.encode("The dog")
    ids = neo_models[MODEL].generate(np.array([prompt]), max_new_tokens=30)[0]
    assert has_no_eos(ids, len(prompt)), "the test expects no EOS from this random model"
    assert stdout == tokenizer.decode(ids.tolist()) + "\n"
    assert_summary(stderr, new_tokens=30)


def test_prompt_file_without_echo(cli_runs, neo_models, tokenizer, cli_root):
    code, stdout, stderr = cli_runs["file_no_echo"]
    assert code == 0, stderr
    prompt = tokenizer.encode((cli_root / "prompt.txt").read_text(encoding="utf-8"))
    ids = neo_models[MODEL].generate(np.array([prompt]), max_new_tokens=20)[0]
    assert has_no_eos(ids, len(prompt))
    assert stdout == tokenizer.decode(ids[len(prompt) :].tolist()) + "\n"
    assert not stdout.startswith("Café")
    assert_summary(stderr, new_tokens=20)


def test_prompt_from_standard_input(cli_runs, neo_models, tokenizer):
    code, stdout, stderr = cli_runs["stdin"]
    assert code == 0, stderr
    prompt = tokenizer.encode("Hello world")
    ids = neo_models[MODEL].generate(np.array([prompt]), max_new_tokens=20)[0]
    assert has_no_eos(ids, len(prompt))
    assert stdout == tokenizer.decode(ids.tolist()) + "\n"
    assert stdout.startswith("Hello world")
    assert_summary(stderr, new_tokens=20)


def test_seeded_sampling_is_repeatable(cli_runs, neo_models, tokenizer):
    (code_a, stdout_a, stderr_a), (code_b, stdout_b, stderr_b) = cli_runs["sample_a"], cli_runs["sample_b"]
    assert code_a == 0 and code_b == 0, stderr_a + stderr_b
    assert stdout_a == stdout_b
    prompt = np.array([tokenizer.encode("EleutherAI has")])
    sampled = neo_models[MODEL].generate(prompt, max_new_tokens=25, do_sample=True, seed=1234, temperature=1.5, top_k=0)
    greedy = neo_models[MODEL].generate(prompt, max_new_tokens=25)
    assert has_no_eos(sampled[0], prompt.shape[1])
    assert stdout_a == tokenizer.decode(sampled[0].tolist()) + "\n"  # the same seed gives the same draws as the API
    assert stdout_a != tokenizer.decode(greedy[0].tolist()) + "\n"
    assert_summary(stderr_a, new_tokens=25)


def test_generation_stops_at_the_checkpoints_eos_without_printing_it(cli_runs, eos_checkpoint, tokenizer):
    folder, prompt, unstopped, k = eos_checkpoint
    code, stdout, stderr = cli_runs["eos"]
    assert code == 0, stderr
    assert stdout == tokenizer.decode(prompt + unstopped[:k].tolist()) + "\n"
    assert_summary(stderr, new_tokens=k)


def test_ignore_eos_keeps_going(cli_runs, eos_checkpoint, tokenizer):
    folder, prompt, unstopped, k = eos_checkpoint
    code, stdout, stderr = cli_runs["ignore_eos"]
    assert code == 0, stderr
    assert stdout == tokenizer.decode(prompt + unstopped.tolist()) + "\n"
    assert_summary(stderr, new_tokens=40)


def test_help_mentions_every_flag(cli_runs):
    code, stdout, stderr = cli_runs["help"]
    assert code == 0 and "generate" in stdout and "download" in stdout
    code, stdout, stderr = cli_runs["generate_help"]
    assert code == 0, stderr
    missing = [flag for flag in FLAGS if flag not in stdout]
    assert not missing, f"generate --help does not mention {missing}"


# --------------------------------------------------------------------------- refusing bad input

ERRORS = {
    # run name: words the one-line message must contain
    "missing_folder": ["no_such_checkpoint"],
    "unknown_hub_name": ["nobody-at-all/gpt-neo-does-not-exist", "HF_HUB_OFFLINE"],
    "beyond_context": ["-n/--max-new-tokens asks for 600", "512"],
    "temperature_0": ["--temperature"],
    "temperature_negative": ["--temperature"],
    "top_p_0": ["--top-p"],
    "top_p_1.5": ["--top-p"],
    "empty_file": ["empty.txt"],
    "missing_file": ["no_such_prompt.txt"],
    "empty_stdin": ["empty"],
    "prompt_and_file": ["--file"],
    "threads_0": ["--threads"],
    "penalty_rounds_to_0": ["--repetition-penalty", "1e-300", "float32"],  # no RuntimeWarning lines before it
    "temperature_rounds_to_0": ["--temperature", "1e-50", "float32"],
    "temperature_overflows": ["temperature", "float32"],  # not 0 in float32, but the logits / 1e-40 overflow
    "n_0": ["-n/--max-new-tokens must be a positive integer, got 0"],
    "top_k_negative": ["--top-k"],
    "min_beyond_max": ["--min-new-tokens", "-n/--max-new-tokens (5)", "got 6"],
}
PARAMETER_NAMES = re.compile(r"(?<![-/])\b(max_new_tokens|min_new_tokens|top_k|top_p|repetition_penalty)\b")


@pytest.mark.parametrize("name", list(ERRORS))
def test_bad_input_is_one_error_line(cli_runs, name):
    code, stdout, stderr = cli_runs[name]
    assert code != 0
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line, got:\n{stderr}"
    for word in ERRORS[name]:
        assert word in lines[0], f"the message should name {word!r}: {lines[0]}"
    assert not PARAMETER_NAMES.search(lines[0]), f"the message should name flags, not parameters: {lines[0]}"
    assert "tok/s" not in stderr


def test_every_flag_an_error_can_name_is_the_commands_own(cli_runs):
    for command, flags in cli.FLAGS.items():
        code, stdout, stderr = cli_runs[f"{command}_help"]
        assert code == 0, stderr
        for flag in flags.values():
            assert all(f"{name} " in stdout for name in flag.split("/")), (command, flag)


def test_a_stdout_that_cannot_encode_the_text_shows_escapes(checkpoint_dirs, cli_root):
    """PYTHONIOENCODING=ascii: "é" comes out as \\xe9, as Python writes it to stderr, never a traceback."""
    env = dict(cli_env(cli_root), PYTHONIOENCODING="ascii")
    code, stdout, stderr = run_cli(["generate", "héllo", "-m", checkpoint_dirs[MODEL], "-n", "3"], env)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert stdout.startswith("h\\xe9llo")
    assert_summary(stderr, new_tokens=3)


def test_generate_imports_neither_lm_eval_nor_torch(checkpoint_dirs, cli_root):
    """`-X importtime` lists every module the command imports, on stderr."""
    args = [sys.executable, "-X", "importtime", "-m", "neo_numpy", "generate", "The dog", "-n", "2"]
    result = subprocess.run(
        [*args, "-m", str(checkpoint_dirs[MODEL])], cwd=REPO_ROOT, env=cli_env(cli_root), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import ")}
    packages = {name.split(".")[0] for name in imported}
    assert "neo_numpy" in packages and "numpy" in packages
    assert not packages & {"torch", "lm_eval", "transformers", "datasets"}, packages


def test_prompt_plus_new_tokens_may_be_the_context_plus_one(cli_runs):
    """ "The dog" is 2 tokens; 511 more make 513 = context + 1, as transformers allows: the last is never fed back."""
    code, stdout, stderr = cli_runs["context_plus_one"]
    assert code == 0, stderr
    assert_summary(stderr)


def test_a_bad_command_line_is_one_error_line(cli_runs):
    code, stdout, stderr = cli_runs["n_not_a_number"]
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "invalid" in lines[0] and "--help" in lines[0], stderr


def with_eos_outside_the_vocabulary(source: Path, folder: Path, tokenizer: bool) -> Path:
    """A copy of checkpoint `source` whose config.json's eos_token_id (60000) is outside its vocabulary, which loads
    with one logged warning, as in transformers; without its tokenizer files unless `tokenizer`."""
    folder.mkdir()
    for item in source.iterdir():
        if item.name == "model.safetensors":
            (folder / item.name).symlink_to(item)
        elif item.name != "config.json" and (tokenizer or not item.name.startswith(("tokenizer", "vocab", "merges"))):
            shutil.copy(item, folder / item.name)
    config = json.loads((source / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "eos_token_id": 60000}))
    return folder


def test_a_warning_is_one_warning_line_shown_only_when_the_command_goes_ahead(checkpoint_dirs, cli_root, capsys):
    failing = with_eos_outside_the_vocabulary(checkpoint_dirs[MODEL], cli_root / "oov_eos_no_tokenizer", False)
    assert cli.main(["generate", "The dog", "-m", str(failing), "-n", "2"]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "tokenize" in lines[0], lines

    working = with_eos_outside_the_vocabulary(checkpoint_dirs[MODEL], cli_root / "oov_eos", True)
    assert cli.main(["generate", "The dog", "-m", str(working), "-n", "2"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    (warning,) = [line for line in lines if "60000" in line]
    assert warning.startswith("warning: ") and "eos_token_id 60000 outside the vocabulary" in warning, lines
    assert lines.index(warning) == 0 and not any(line.startswith("error") for line in lines), lines
    assert captured.out.startswith("The dog") and "2 new tokens" in lines[-1], captured


# --------------------------------------------------------------------------- Ctrl-C


@pytest.fixture(scope="module")
def long_checkpoint(cli_root):
    """A 2048-position test checkpoint, so the interrupted generation could run far longer than the test waits."""
    return save_checkpoint(build_torch_model(MODEL, max_positions=2048), cli_root / "long_checkpoint")


def start_interruptible(args, cli_root, stdin):
    """Popen the command with SIGINT at its default action (a test runner may start children with it ignored)."""
    return subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        env=cli_env(cli_root),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interrupt(process, wait_until):
    """Run wait_until(process) (it returns bytes already read from stdout), send SIGINT, and collect the end.

    Returns (stdout, stderr as text); asserts exit status 130 and no traceback. The process never outlives the test.
    """
    try:
        first = wait_until(process)
        process.send_signal(signal.SIGINT)
        rest, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = stderr.decode("utf-8")
    assert process.returncode == 130, f"exit status {process.returncode}; stderr:\n{stderr}"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    return first + rest, stderr


def first_output_byte(process):
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 120
    first = b""
    while not first and time.monotonic() < deadline:  # --no-echo: the first byte is generated text
        if selector.select(timeout=1.0):
            first = process.stdout.read(1)
            if not first:
                break  # the process ended without printing anything
    assert first, f"no output before the deadline; stderr: {process.stderr.read().decode()}"
    return first


def test_ctrl_c_stops_cleanly(long_checkpoint, cli_root):
    args = [
        sys.executable,
        "-m",
        "neo_numpy",
        "generate",
        "The dog",
        "-m",
        str(long_checkpoint),
        "-n",
        "2000",
        "--ignore-eos",
        "--no-echo",
    ]
    stdout, stderr = interrupt(start_interruptible(args, cli_root, subprocess.DEVNULL), first_output_byte)
    summary = assert_summary(stderr)
    assert "interrupted" in summary
    new_tokens = int(summary.split(" new tokens")[0].split()[-1])
    assert 0 < new_tokens < 2000
    assert stdout.decode("utf-8").endswith("\n")


READ_SYSCALL = {"x86_64": "0", "aarch64": "63"}.get(os.uname().machine)


def test_ctrl_c_before_generation_starts_is_clean(checkpoint_dirs, cli_root):
    """Ctrl-C while the command waits for its prompt on standard input: exit status 130, no traceback."""
    if READ_SYSCALL is None or not Path("/proc/self/syscall").exists():
        pytest.skip("needs Linux /proc/<pid>/syscall on x86_64 or aarch64 to see the process wait on stdin")

    def waiting_on_stdin(process):  # wait until it blocks in read(0, ...)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                fields = Path(f"/proc/{process.pid}/syscall").read_text().split()
            except OSError:
                fields = []
            if fields[:2] == [READ_SYSCALL, "0x0"]:
                return b""
            time.sleep(0.05)
        pytest.fail(f"the command never waited on standard input (exit status {process.poll()})")

    args = [sys.executable, "-m", "neo_numpy", "generate", "-m", str(checkpoint_dirs[MODEL])]
    _, stderr = interrupt(start_interruptible(args, cli_root, subprocess.PIPE), waiting_on_stdin)
    assert "interrupted" in stderr


# -------------------------------------------------------------------------------------- hostile command lines


def run_hostile_cli(args, stdin=b"", stdout=subprocess.PIPE, shell_suffix=None):
    """(exit status, stdout bytes, stderr text) of `python -m neo_numpy <args>`, offline, from the repo root.

    stdin: bytes to send, or a path to open; shell_suffix: run through bash with this redirection appended.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", NEO_NUMPY_WEIGHTS=str(REPO_ROOT / "no-weights-here"))
    command = [sys.executable, "-m", "neo_numpy", *args]
    if shell_suffix is not None:
        quoted = " ".join("'" + os.fsdecode(arg).replace("'", "'\\''") + "'" for arg in command)
        command = ["bash", "-c", f"{quoted} {shell_suffix}"]
    with open(stdin, "rb") if isinstance(stdin, Path) else nullcontext() as stdin_file:
        source = dict(stdin=stdin_file) if stdin_file is not None else dict(input=stdin)
        result = subprocess.run(
            command, cwd=REPO_ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE, timeout=120, **source
        )
    return result.returncode, result.stdout or b"", result.stderr.decode("utf-8", "replace")


def run_with_stdout_reader_gone(args):
    """stdout is a pipe whose reading end is already closed (`| head -c0`): every write fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return run_hostile_cli(args, stdout=write_end)
    finally:
        os.close(write_end)


@pytest.fixture(scope="module")
def hostile_cli(checkpoint_dirs, tmp_path_factory):
    """name -> (exit status, stdout, stderr) for every hostile command line, a few at a time."""
    root = tmp_path_factory.mktemp("hostile_cli")
    model_dir = str(checkpoint_dirs[SOURCE])
    bad_file = root / "latin1.txt"
    bad_file.write_bytes(b"caf\xe9 au lait")
    escaping = shutil.copytree(checkpoint_dirs[SOURCE], root / "escaping", ignore=lambda *_: ["model.safetensors"])
    secret = root / "secret.txt"
    secret.write_bytes(SECRET)
    (escaping / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"x": str(secret)}}))
    mismatched = shutil.copytree(checkpoint_dirs[SOURCE], root / "mismatched")
    write_word_tokenizer(mismatched, {"a": 0, "b": 1, "<unk>": 2})
    base = ["generate", "-m", model_dir, "-n", "40", "--ignore-eos"]
    runs = {
        "argv_not_utf8": lambda: run_hostile_cli(["generate", b"caf\xe9", "-m", model_dir]),
        "stdin_not_utf8": lambda: run_hostile_cli(["generate", "-m", model_dir], stdin=b"caf\xe9 au lait"),
        "file_not_utf8": lambda: run_hostile_cli(["generate", "-f", str(bad_file), "-m", model_dir]),
        "file_dev_zero": lambda: run_hostile_cli(["generate", "-f", "/dev/zero", "-m", model_dir]),
        "stdin_dev_zero": lambda: run_hostile_cli(["generate", "-m", model_dir], stdin=Path("/dev/zero")),
        "seed_negative": lambda: run_hostile_cli([*base, "The dog", "--do-sample", "--seed", "-1"]),
        "tiny_temperature": lambda: run_hostile_cli([*base, "The dog", "--do-sample", "--temperature", "1e-45"]),
        "escaping_index": lambda: run_hostile_cli(["generate", "The dog", "-m", str(escaping)]),
        "mismatched_tokenizer": lambda: run_hostile_cli(["generate", "The dog", "-m", str(mismatched)]),
        "dot_dot_name": lambda: run_hostile_cli(["generate", "The dog", "-m", "zz/.."]),
        "stdout_closed": lambda: run_hostile_cli([*base, "The dog"], shell_suffix=">&-"),
        "stdout_full": lambda: run_hostile_cli([*base, "The dog"], shell_suffix=">/dev/full"),
        "stdout_reader_gone": lambda: run_with_stdout_reader_gone([*base, "The dog"]),
        "stdout_head_c1": lambda: run_hostile_cli([*base, "The dog"], shell_suffix="| head -c1; exit ${PIPESTATUS[0]}"),
        "stderr_closed": lambda: run_hostile_cli([*base, "The dog"], shell_suffix="2>&-"),
        "stderr_closed_error": lambda: run_hostile_cli(
            ["generate", "The dog", "-m", str(root / "nowhere")], shell_suffix="2>&-"
        ),
        "download_not_a_checkpoint": lambda: run_hostile_cli(["download", str(root)]),
        "threads_beyond_cores": lambda: run_hostile_cli([*base, "The dog", "--threads", "100000"]),
        "usage_error": lambda: run_hostile_cli(["generate", "The dog", "-n", "abc"]),
    }
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run) for name, run in runs.items()}
        return {name: future.result() for name, future in futures.items()}


CLI_ERRORS = {  # run name: words its one `error:` line must contain
    "argv_not_utf8": ["UTF-8"],
    "stdin_not_utf8": ["UTF-8", "byte 3"],
    "file_not_utf8": ["latin1.txt", "UTF-8"],
    "file_dev_zero": ["/dev/zero", "512-position context"],
    "stdin_dev_zero": ["512-position context"],
    "seed_negative": ["seed", "-1"],
    "tiny_temperature": ["temperature"],
    "escaping_index": ["plain file name"],
    "mismatched_tokenizer": ["tokenizer", "50256"],
    "dot_dot_name": ["zz/.."],
    "stdout_closed": ["standard output"],
    "stdout_full": ["standard output", "No space left"],
    "download_not_a_checkpoint": ["not a checkpoint folder"],
    "threads_beyond_cores": ["--threads", "100000"],
}


@pytest.mark.parametrize("name", list(CLI_ERRORS))
def test_cli_refuses_in_one_line(hostile_cli, name):
    code, stdout, stderr = hostile_cli[name]
    assert code == 1, (code, stderr)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one 'error:' line, got:\n{stderr}"
    for word in CLI_ERRORS[name]:
        assert word in lines[0], f"the message should name {word!r}: {lines[0]}"
    assert SECRET[:8] not in stdout and "root:" not in stderr


def test_cli_refuses_bad_settings_before_printing_anything(hostile_cli):
    assert hostile_cli["seed_negative"][1] == b""


def test_cli_stops_quietly_when_the_reader_is_gone(hostile_cli):
    code, stdout, stderr = hostile_cli["stdout_reader_gone"]
    assert code == 141 and stderr == "", (code, stderr)


def test_cli_piped_into_head(hostile_cli):
    """`| head -c1`: one byte comes through; whether the rest fits the pipe before head exits or not, no traceback."""
    code, stdout, stderr = hostile_cli["stdout_head_c1"]
    assert stdout == b"T"
    assert code in (0, 141) and "Traceback" not in stderr and "Exception ignored" not in stderr, (code, stderr)


def test_cli_with_stderr_closed_writes_nothing_but_the_text(hostile_cli):
    """`2>&-`: the summary and any error line are dropped, never written into the text on stdout."""
    code, stdout, _ = hostile_cli["stderr_closed"]
    assert code == 0 and stdout.startswith(b"The dog") and b"tok/s" not in stdout
    code, stdout, _ = hostile_cli["stderr_closed_error"]
    assert code == 1 and stdout == b""


def test_cli_usage_error_is_one_line(hostile_cli):
    code, _, stderr = hostile_cli["usage_error"]
    lines = stderr.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "-n" in lines[0], stderr

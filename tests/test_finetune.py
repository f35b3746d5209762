"""`python -m neo_numpy finetune` end to end on a test checkpoint: the loss goes down, the output folder loads in
transformers and in neo_numpy with equal logits and `generate` runs on it; Ctrl-C saves the last completed step;
a non-finite loss, a non-empty --out and every bad input give one `error:` line and write nothing."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from checkpoints import require
from conftest import relative_error

import neo_numpy
from neo_numpy.cli import main
from neo_numpy.saving import write_safetensors

require("torch", "transformers")

import torch  # noqa: E402
from transformers import GPTNeoForCausalLM  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TEXT = "the cat sat on a mat and the dog ran to the park while birds sang in tall green trees"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """30 short documents separated by blank lines (about 1,300 tokens)."""
    rng = np.random.default_rng(0)
    documents = [" ".join(rng.choice(TEXT.split(), size=40)) + "." for _ in range(30)]
    path = tmp_path_factory.mktemp("data") / "train.txt"
    path.write_text("\n\n".join(documents), encoding="utf-8")
    return path


def finetune_command(model, data, out, *extra):
    command = [sys.executable, "-m", "neo_numpy", "finetune", "--model", str(model), "--data", str(data), "--out"]
    return [*command, str(out), "--batch-size", "2", "--context", "32", "--seed", "0", "--threads", "1"] + list(extra)


def run(command, **kwargs):
    environment = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def finetuned(checkpoint_dirs, text_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetuned") / "model"
    result = run(finetune_command(checkpoint_dirs["alternating"], text_file, out, "--steps", "12", "--lr", "2e-3"))
    return result, out


def test_finetune_lowers_the_loss_and_saves_a_checkpoint(finetuned):
    result, out = finetuned
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr and "Traceback" not in result.stderr
    assert "finetune" in result.stderr and "tok/s" in result.stderr  # the progress bar, on stderr
    summary = re.search(r"training loss ([\d.]+) -> ([\d.]+); validation loss ([\d.]+) -> ([\d.]+)", result.stderr)
    assert summary, result.stderr
    first, last, validation_before, validation_after = map(float, summary.groups())
    print(f"training loss {first} -> {last}, validation loss {validation_before} -> {validation_after}")
    assert last < first - 0.5 and validation_after < validation_before - 0.5
    assert f"saved to {out}" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert result.stdout == ""


def test_output_loads_in_transformers_with_equal_logits(finetuned, torch_models):
    _, out = finetuned
    theirs = GPTNeoForCausalLM.from_pretrained(out).eval()
    ours = neo_numpy.load_model(out)
    ids = np.random.default_rng(1).integers(0, 50257, size=(2, 40))
    with torch.no_grad():
        expected = theirs(torch.from_numpy(ids)).logits.numpy()
        original = torch_models["alternating"](torch.from_numpy(ids)).logits.numpy()
    error = relative_error(ours.forward(ids), expected)
    print(f"fine-tuned model: neo_numpy vs transformers, relative error {error:.1e}")
    assert error < 1e-5
    assert relative_error(expected, original) > 1e-3  # the weights did change
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True


def test_generate_runs_on_the_output(finetuned):
    _, out = finetuned
    result = run([sys.executable, "-m", "neo_numpy", "generate", "--model", str(out), "the cat", "-n", "5"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("the cat") and len(result.stdout) > len("the cat\n")


def test_ctrl_c_saves_the_last_completed_step(checkpoint_dirs, text_file, tmp_path):
    out, log = tmp_path / "model", tmp_path / "stderr.txt"
    environment = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    command = finetune_command(checkpoint_dirs["alternating"], text_file, out, "--steps", "100000", "--lr", "1e-4")
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=ROOT, env=environment)
        try:
            deadline = time.monotonic() + 300
            while not re.search(r"\| *[1-9]\d*/100000 ", log.read_text()) and time.monotonic() < deadline:
                time.sleep(0.2)  # until the bar shows a completed step
            process.send_signal(signal.SIGINT)
            status = process.wait(timeout=300)
        finally:
            process.kill()
    message = log.read_text()
    assert status == 130, message
    assert re.search(rf"interrupted: saved the weights after step \d+ of 100000 to {re.escape(str(out))}", message)
    assert "Traceback" not in message
    neo_numpy.load_model(out)  # a complete checkpoint
    assert not [path for path in out.iterdir() if "partial" in path.name]


def test_non_finite_loss_stops_with_one_error_and_writes_nothing(checkpoint_dirs, text_file, tmp_path):
    out = tmp_path / "model"
    result = run(finetune_command(checkpoint_dirs["alternating"], text_file, out, "--steps", "5", "--lr", "1e30"))
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower() or "warning" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: the loss became") and "Lower --lr" in errors[0], errors
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_checkpoint_at_out_needs_overwrite_and_is_then_replaced_whole(checkpoint_dirs, text_file, tmp_path, capsys):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "tokenizer_config.json").write_text('{"from": "another model"}')  # stale: must not survive
    arguments = ["finetune", "--model", str(checkpoint_dirs["all_global"]), "--data", str(text_file), "--out",
                 str(out), "--steps", "1", "--batch-size", "1", "--context", "16", "--threads", "1"]  # fmt: skip
    assert main(arguments) == 1
    assert capsys.readouterr().err.strip().startswith("error: --out")
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "tokenizer_config.json"]
    assert main([*arguments, "--overwrite"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]  # no temporary or old folder left
    neo_numpy.load_model(out)


def test_a_folder_of_other_files_is_never_replaced(checkpoint_dirs, text_file, tmp_path, capsys):
    out = tmp_path / "notes"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    arguments = ["finetune", "--model", str(checkpoint_dirs["all_global"]), "--data", str(text_file), "--out",
                 str(out), "--steps", "1", "--context", "16", "--threads", "1", "--overwrite"]  # fmt: skip
    assert main(arguments) == 1
    assert "no config.json" in capsys.readouterr().err
    assert [path.name for path in out.iterdir()] == ["notes.txt"]


BAD_INPUTS = [  # (what, extra arguments or a data file's bytes, words the message must contain)
    ("missing data file", {"data": None}, "could not read the training text"),
    ("empty data file", {"data": b"  \n\n "}, "is empty"),
    ("non-UTF-8 data file", {"data": b"caf\xe9 au lait " * 20}, "not UTF-8"),
    ("text shorter than one window", {"data": b"A few words."}, "shorter than one window"),
    ("zero steps", {"args": ["--steps", "0"]}, "--steps"),
    ("context beyond the positions", {"args": ["--context", "513"]}, "--context 513 is beyond"),
    ("zero batch size", {"args": ["--batch-size", "0"]}, "--batch-size"),
    ("negative batch size", {"args": ["--batch-size", "-2"]}, "--batch-size"),
    ("zero learning rate", {"args": ["--lr", "0"]}, "--lr"),
    ("negative learning rate", {"args": ["--lr=-1e-3"]}, "--lr"),
    ("negative seed", {"args": ["--seed=-1"]}, "--seed must be a non-negative integer"),
    ("a device as data", {"args": ["--data", "/dev/zero"]}, "/dev/zero is a device, not a file"),
    ("a folder as data", {"args": ["--data", "/"]}, "/ is a folder, not a file"),
    ("a data file too large", {"data": b"x" * 101_000_000}, "larger than 100 MB"),
]


@pytest.mark.parametrize("what, case, words", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_is_one_error_line_and_no_folder(what, case, words, checkpoint_dirs, text_file, tmp_path, capsys):
    data = tmp_path / "missing.txt" if case.get("data", b"") is None else text_file
    if case.get("data"):
        data = tmp_path / "data.txt"
        data.write_bytes(case["data"])
    out = tmp_path / "new" / "folders" / "model"  # created for the output, and removed when nothing is written
    arguments = ["finetune", "--model", str(checkpoint_dirs["all_global"]), "--data", str(data), "--out", str(out),
                 "--steps", "2", "--context", "64", "--threads", "1", *case.get("args", [])]  # fmt: skip
    assert main(arguments) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert not (tmp_path / "new").exists()


def test_bad_input_from_a_real_process_has_no_traceback(checkpoint_dirs, text_file, tmp_path):
    result = run(finetune_command(checkpoint_dirs["all_global"], text_file, tmp_path / "out", "--steps", "0"))
    assert result.returncode == 1 and result.stderr.strip() == "error: --steps must be at least 1, got 0."
    assert not (tmp_path / "out").exists()


def test_safetensors_writer_reads_back_with_the_safetensors_library(tmp_path):
    require("safetensors")
    from safetensors.numpy import load_file

    tensors = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b.bias": np.ones(5, np.float32)}
    write_safetensors(tmp_path / "x.safetensors", tensors)
    loaded = load_file(str(tmp_path / "x.safetensors"))
    assert sorted(loaded) == ["a", "b.bias"] and all(np.array_equal(loaded[k], tensors[k]) for k in tensors)
    assert [path.name for path in tmp_path.iterdir()] == ["x.safetensors"]  # no temporary file left behind


def run_refused(arguments):
    """Run the command in a process: one `error:` line, exit status 1, no traceback, no warning."""
    result = run([sys.executable, "-m", "neo_numpy", *arguments])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("out", ["/proc/neo_numpy_out", "/sys/neo_numpy_out", "/dev/null/neo_numpy_out"])
def test_an_out_that_cannot_be_created_fails_before_loading(out, checkpoint_dirs, text_file, tmp_path):
    model = tmp_path / "no-such-model"  # --out is refused before the model is even looked for
    line = run_refused(["finetune", "--model", str(model), "--data", str(text_file), "--out", out, "--steps", "1"])
    assert out in line and "no-such-model" not in line
    assert not Path(out).exists()


def test_an_out_name_too_long_is_one_error(checkpoint_dirs, text_file, tmp_path):
    out = tmp_path / ("a" * 300)
    line = run_refused(finetune_command(checkpoint_dirs["all_global"], text_file, out, "--steps", "1")[3:])
    assert "File name too long" in line
    assert list(tmp_path.iterdir()) == []


def test_a_validation_loss_that_overflows_stops_with_one_error_and_writes_nothing(checkpoint_dirs, tmp_path):
    data, out = tmp_path / "text.txt", tmp_path / "model"
    data.write_text("Hello world. " * 200)
    arguments = ["finetune", "--model", str(checkpoint_dirs["all_global"]), "--data", str(data), "--out", str(out),
                 "--steps", "3", "--context", "8", "--batch-size", "2", "--lr", "1e6", "--seed", "0"]  # fmt: skip
    result = run([sys.executable, "-m", "neo_numpy", *arguments])
    assert result.returncode == 1 and "Traceback" not in result.stderr and "Warning" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: the ") and "Lower --lr" in errors[0], result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["text.txt"]


def test_non_finite_weights_are_never_saved(neo_models, tmp_path):
    from neo_numpy.finetune import save
    from neo_numpy.saving import StagedFolder
    from neo_numpy.training import named_parameters

    model = neo_models["all_global"]
    params = {name: array.copy() for name, array in named_parameters(model.weights).items()}
    params["transformer.ln_f.bias"][0] = np.inf
    staged = StagedFolder(tmp_path / "model")
    with pytest.raises(neo_numpy.NeoNumpyError, match="transformer.ln_f.bias holds values that are not finite"):
        save(model, params, None, staged)  # refused before anything is read from the checkpoint
    staged.discard()
    assert list(tmp_path.iterdir()) == []

"""Execute every notebook in this folder, top to bottom, and keep the executed copies (with outputs) elsewhere.

    python notebooks/run_all.py                                    # the released 125M (downloaded on first use)
    python notebooks/run_all.py --model ./weights/gpt-neo-125m     # any size, hub id or local checkpoint folder
    python notebooks/run_all.py 03_attention --figures            # one notebook, and its pictures as PNG files
    python notebooks/run_all.py --strip                            # clear outputs of the notebooks here, in place
    python notebooks/run_all.py --update                           # rerun 08 and 09 and keep their outputs in place

Notebooks 00-07 are committed without outputs (they need the released weights to show theirs); executed copies go
to --out (default notebooks/executed/, ignored by git), and with --figures every picture is also written there as
<notebook>-<n>.png. Notebooks 08 and 09 need no download (they use the tiny model this project trains), so they
are committed WITH their outputs: --update reruns them without $NEO_NUMPY_MODEL and writes them back in place, and
tests/test_notebooks.py checks that what is committed is what they compute. Needs nbclient and ipykernel.
"""

import argparse
import base64
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent
COMMITTED_WITH_OUTPUTS = ("08_training", "09_interpretability")  # need no download: their outputs are committed


def execute(path: Path, model: str = None, timeout: int = 1200) -> nbformat.NotebookNode:
    """Run one notebook in a fresh python3 kernel with notebooks/ as its working folder; raises CellExecutionError."""
    notebook = nbformat.read(path, as_version=4)
    env = dict(os.environ)
    model = model or env.get("NEO_NUMPY_MODEL")
    if model:  # a relative folder is meant from here, not from the kernel's working folder (notebooks/)
        env["NEO_NUMPY_MODEL"] = str(Path(model).resolve()) if Path(model).exists() else model
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE.parent), env.get("PYTHONPATH")]))
    client = NotebookClient(
        notebook, kernel_name="python3", timeout=timeout, resources={"metadata": {"path": str(HERE)}}
    )
    client.execute(env=env)
    return notebook


def strip(path: Path) -> None:
    """Remove outputs and execution counts in place, the form notebooks 00-07 are committed in."""
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nbformat.write(notebook, path)


def update(path: Path) -> None:
    """Rerun a notebook that needs no download, without $NEO_NUMPY_MODEL, and keep its outputs in place."""
    os.environ.pop("NEO_NUMPY_MODEL", None)
    notebook = execute(path)
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timestamps: they would change on every run
    nbformat.write(notebook, path)


def images(notebook):
    """Every PNG the notebook displayed, as bytes, in order."""
    return [
        base64.b64decode(output["data"]["image/png"])
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="names or paths (default: every *.ipynb here)")
    parser.add_argument("--model", help="checkpoint for $NEO_NUMPY_MODEL (default: the environment's, else 125M)")
    parser.add_argument("--out", default=str(HERE / "executed"), help="folder for the executed copies")
    parser.add_argument("--figures", action="store_true", help="also write each picture as a PNG file")
    parser.add_argument(
        "--strip", action="store_true", help="only clear the outputs of notebooks 00-07 in place (before committing)"
    )
    parser.add_argument(
        "--update", action="store_true", help="rerun 08 and 09 (or those named) and keep their outputs in place"
    )
    args = parser.parse_args(argv)

    paths = [HERE / (name if name.endswith(".ipynb") else f"{name}.ipynb") for name in args.notebooks] or sorted(
        HERE.glob("*.ipynb")
    )
    missing = [path.name for path in paths if not path.is_file()]
    if missing:
        parser.error(f"no notebook {missing[0]} in {HERE}")
    if args.strip:
        for path in paths:
            if path.stem not in COMMITTED_WITH_OUTPUTS:
                strip(path)
                print("stripped", path.name)
        return 0
    if args.update:
        for path in paths if args.notebooks else [HERE / f"{name}.ipynb" for name in COMMITTED_WITH_OUTPUTS]:
            if path.stem not in COMMITTED_WITH_OUTPUTS:
                parser.error(f"{path.name} is committed without outputs: --update only reruns {COMMITTED_WITH_OUTPUTS}")
            update(path)
            print("updated", path.name)
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in paths:
        started = time.perf_counter()
        try:
            notebook = execute(path, args.model)
            status = "ok"
        except CellExecutionError as error:
            notebook, status = None, f"FAILED\n{error}"
            failures += 1
        seconds = time.perf_counter() - started
        print(f"{path.name:<34} {seconds:6.1f} s  {status}", flush=True)
        if notebook is None:
            continue
        nbformat.write(notebook, out / path.name)
        if args.figures:
            for number, png in enumerate(images(notebook), start=1):
                (out / f"{path.stem}-{number}.png").write_bytes(png)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

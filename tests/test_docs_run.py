"""The shell and Python blocks of README.md and docs/api.md, run as written, so that a snippet that stops
working fails the suite.

Each document's blocks run in order in a fresh folder of their own, with a private cache, as a user would
type them. The folder holds tiny stand-ins for the datasets the documents name: `mnist/` (320 synthetic digits
as IDX files) and `my_digits/`; vqgen, like `datasets.load_dataset`, prefers a folder of the name given to
the dataset it names, so `vqgen train` trains in seconds. A shell block of plain `vqgen` lines runs them
through the command line's entry point in this process, split as the shell splits them; any other shell
block runs in bash (`set -euo pipefail`) with a `vqgen` that is this interpreter's. The Python blocks of a document run one after the other in one interpreter, as in a notebook, and a `>>>` line
must raise the error written under it.

A block that cannot run here says so just above it, in a comment the rendered page does not show:
`<!-- not run: why -->`. A block that a command reads (a config file) is written where it says:
`<!-- file: my.yaml -->`. Every other block must run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "docs/api.md"]
RUNNABLE = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}
MARK = re.compile(r"^<!--\s*(not run|file):\s*(.*?)\s*-->$")
# Files a shell block's comments say it writes (runs/vqvae-mnist/interp_4_to_9.png): they must be there after it.
WRITES = re.compile(r"#.*?\b(runs/[\w./-]+\.(?:png|gif))")


@dataclass
class Block:
    doc: str
    line: int          # where the block starts (1-based)
    lang: str
    text: str
    mark: str | None   # "not run" or "file"
    arg: str           # the reason, or the file's name

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(doc: str) -> list[Block]:
    """The fenced blocks of a document, each with the marker comment on the line above it, if any."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        if lines[i].startswith("```"):
            info = lines[i][3:].strip().split()
            above = next((ln.strip() for ln in reversed(lines[:i]) if ln.strip()), "")
            m = MARK.match(above)
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append(Block(doc, i + 1, info[0] if info else "", "\n".join(lines[i + 1:end]) + "\n",
                               m.group(1) if m else None, m.group(2) if m else ""))
            i = end
        i += 1
    return found


ALL = [b for doc in DOCS for b in blocks(doc)]


# --------------------------------------------------------------------------- the markers


def test_every_block_runs_or_says_why_not():
    assert len(ALL) > 15
    for b in ALL:
        if b.mark == "not run":
            assert len(b.arg) > 5, f"{b.where}: say why the block is not run"
        elif b.mark == "file":
            assert re.fullmatch(r"[\w.-]+", b.arg), f"{b.where}: `file:` names a file in the working folder"
        else:
            assert b.lang in RUNNABLE, f"{b.where}: a {b.lang or 'plain'} block neither runs nor is marked"


def test_the_markers_are_found():
    """The parser sees the markers the documents use (a marker it missed would make a block run)."""
    readme = blocks("README.md")
    assert any(b.mark == "not run" and "pipx install" in b.text for b in readme)
    assert any(b.mark == "file" and b.arg == "my.yaml" and b.lang == "yaml" for b in readme)
    assert sum(b.mark is None for b in readme) >= 4


# --------------------------------------------------------------------------- running them

RUNNER = r'''
import json, sys, traceback
blocks = json.load(open(sys.argv[1]))
space = {"__name__": "__main__"}
for b in blocks:
    try:
        if ">>> " in b["text"]:
            lines = b["text"].splitlines()
            for i, ln in enumerate(lines):
                if not ln.startswith(">>> "):
                    continue
                expected = lines[i + 1].strip()
                try:
                    exec(ln[4:], space)
                except Exception as e:
                    got = f"{type(e).__name__}: {e}"
                    assert got == expected, f"{ln[4:]} raised {got!r}, the document says {expected!r}"
                else:
                    raise AssertionError(f"{ln[4:]} raised nothing; the document says {expected!r}")
        else:
            exec(compile(b["text"], b["where"], "exec"), space)
    except BaseException:
        print(f"BLOCK FAILED {b['where']}", flush=True)
        traceback.print_exc()
        sys.exit(1)
    print(f"BLOCK RAN {b['where']}", flush=True)
'''


def stand_ins(folder: Path, make_mnist_idx) -> None:
    """Tiny datasets under the names the documents use."""
    make_mnist_idx(folder / "mnist")
    make_mnist_idx(folder / "my_digits", seed=1)


def vqgen_commands(text: str) -> list[list[str]] | None:
    """A shell block's commands, split as the shell splits them, where every one is a plain `vqgen` command
    (no pipes, redirections, variables or other programs); else None, and bash runs the block."""
    commands = []
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[0] != "vqgen" or re.search(r"[|&;<>$`]", line.split(" #")[0]):
            return None
        commands.append(words[1:])
    return commands


def run_doc(doc: str, folder: Path, make_mnist_idx, invoke) -> list[str]:
    """Run a document's blocks in `folder`; the places of the blocks that ran."""
    stand_ins(folder, make_mnist_idx)
    bin_dir = folder / ".bin"
    bin_dir.mkdir()
    (bin_dir / "vqgen").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m vqgen "$@"\n')
    (bin_dir / "vqgen").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "VQGEN_CACHE": str(folder / ".cache"),
           "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT / "src"), os.environ.get("PYTHONPATH")] if p)}
    env.pop("VQGEN_DEBUG", None)
    todo = [b for b in blocks(doc) if b.mark != "not run"]
    for b in todo:
        if b.mark == "file":
            (folder / b.arg).write_text(b.text)
    ran = []
    runnable = [b for b in todo if b.mark is None]
    i = 0
    while i < len(runnable):
        b = runnable[i]
        if RUNNABLE[b.lang] == "shell":
            commands = vqgen_commands(b.text)
            if commands is None:
                r = subprocess.run(["bash", "-euo", "pipefail", "-c", b.text], cwd=folder, env=env,
                                   capture_output=True, text=True)
                assert r.returncode == 0, f"{b.where} failed ({r.returncode}):\n{b.text}\n{r.stdout}\n{r.stderr}"
            for args in commands or []:   # in this process: a second or two of imports saved per command
                r = invoke(*args, cwd=folder)
                assert r.exit_code == 0, f"{b.where}: vqgen {' '.join(args)} failed ({r.exit_code}):\n{r.output}"
            for path in WRITES.findall(b.text):
                assert (folder / path).is_file(), f"{b.where} says it writes {path}; it did not"
            ran.append(b.where)
            i += 1
            continue
        group = []
        while i < len(runnable) and RUNNABLE[runnable[i].lang] == "python":
            group.append({"where": runnable[i].where, "text": runnable[i].text})
            i += 1
        (folder / ".blocks.json").write_text(json.dumps(group))
        (folder / ".runner.py").write_text(RUNNER)
        r = subprocess.run([sys.executable, ".runner.py", ".blocks.json"], cwd=folder, env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, f"{r.stdout[-6000:]}\n{r.stderr[-6000:]}"
        ran += re.findall(r"^BLOCK RAN (\S+)$", r.stdout, re.M)
    return ran


@pytest.mark.parametrize("doc", DOCS)
def test_the_blocks_run(doc, tmp_path, make_mnist_idx, invoke, monkeypatch):
    monkeypatch.setenv("VQGEN_CACHE", str(tmp_path / ".cache"))   # one cache for the commands and the Python
    ran = run_doc(doc, tmp_path, make_mnist_idx, invoke)
    assert ran == [b.where for b in blocks(doc) if b.mark is None]


# --------------------------------------------------------------------------- what the install lines install


def test_the_user_install_is_lean_and_the_development_one_separate():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {re.split(r"[<>=\[ ]", d)[0].lower() for d in project["dependencies"]}
    tools = {"pytest", "hypothesis", "playwright", "gradio", "vector-quantize-pytorch", "torchvision"}
    assert not base & tools, base & tools
    assert tools - {"torchvision", "vector-quantize-pytorch"} <= {
        re.split(r"[<>=\[ ]", d)[0].lower() for d in project["optional-dependencies"]["dev"]}
    readme = (ROOT / "README.md").read_text()
    user = [b.text for b in blocks("README.md") if "pipx install" in b.text]
    assert user and all("[dev]" not in t and ".[" not in t for t in user), user
    assert 'pip install -e ".[dev]"' in readme and "For development" in readme


def test_plain_vqgen_lines_are_split_as_the_shell_splits_them():
    assert vqgen_commands("vqgen interpolate '#3' '#10'   # held out\nvqgen train --lr 0.01 \\\n  --seed 0\n") == [
        ["interpolate", "#3", "#10"], ["train", "--lr", "0.01", "--seed", "0"]]
    for other in ("pip install .\n", "vqgen gif 4 9 > out.txt\n", "vqgen runs | head\n", "vqgen info $RUN\n"):
        assert vqgen_commands(other) is None, other

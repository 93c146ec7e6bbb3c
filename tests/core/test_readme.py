"""The README and the guides under docs/ tell the truth, checked without running anything long.

* The README fits in a few screens (at most 250 lines).
* Every relative link of README.md and docs/**/*.md points to a file that exists, and a ``#heading`` to a heading of
  that Markdown file (GitHub's anchors).
* The Python API example of docs/guides/python-api.md runs as written.
* Every command line in a code block of README.md and docs/guides/*.md that starts with ``robustal``, ``python
  scripts/`` (or ``python benchmarks/``) or ``./scripts/`` names a real command or script, and only options it has:
  ``robustal`` lines are checked against ``robustal.cli.build_parser()`` (and parsed whole, choices and required
  arguments included, where the line elides nothing with ``...``); a Python script's options must be in its source;
  ``./scripts/demo`` passes its options to ``robustal demo``. In a block with ``$ `` prompts (a recorded session) only
  the prompted lines are commands; otherwise every line of a ``bash``/``sh`` block is.

Marking commands that cannot run offline on a CPU: a line ``<!-- needs: download -->`` (or ``needs: gpu``, or
``needs: download, gpu``) right before a code block's opening fence marks the whole block; a trailing shell comment
``# needs: download`` marks one line. An unmarked command must run offline on a CPU once ``scripts/setup`` has run:
no registered dataset that is downloaded (``--dataset mnist``; use ``mnist-8k.npz``), no MNIST script without its
MNIST folder, no ``pip install``, no ``--device cuda``. A marked block must hold at least one command that needs
what it is marked with, so that a marker cannot hide a block from these checks for nothing.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from robustal.cli import build_parser, parse

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
GUIDES = sorted((ROOT / "docs" / "guides").glob("*.md"))
DOCS = sorted((ROOT / "docs").rglob("*.md"))
PYTHON_API = ROOT / "docs" / "guides" / "python-api.md"
MAX_README_LINES = 250

FENCE = re.compile(r"^\s*```(\w*)\s*$")
MARKER = re.compile(r"<!--\s*needs:\s*([\w ,]+?)\s*-->")
LINE_MARKER = re.compile(r"#\s*needs:\s*([\w ,]+)")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SHELL_LANGS = {"bash", "sh", "shell", "console"}
NEEDS = {"download", "gpu"}


@dataclass
class Command:
    source: str  # file:line, for messages
    tokens: list[str]
    needs: set[str]
    block: int  # the line of its code block's first line


# -- Markdown ---------------------------------------------------------------------------------------------------------

def _blocks(path: Path):
    """(first line number, language, lines, block marker) of each fenced code block of ``path``."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        before = lines[i - 1] if i else ""
        marker = MARKER.search(before)
        needs = {n.strip() for n in marker.group(1).split(",")} if marker else set()
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not FENCE.match(lines[i]):
            body.append(lines[i])
            i += 1
        yield start + 1, m.group(1), body, needs
        i += 1


def _prose(path: Path) -> str:
    """``path`` without its fenced code blocks and inline code (links in code are not links)."""
    text = re.sub(r"^\s*```.*?^\s*```\s*$", "", path.read_text(), flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path).splitlines():
        m = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = _slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _commands(path: Path) -> list[Command]:
    """The command lines of ``path``'s code blocks, one Command per simple command (``a && b`` gives two)."""
    found = []
    for first, lang, body, block_needs in _blocks(path):
        prompted = any(line.startswith("$ ") for line in body)
        if not prompted and lang not in SHELL_LANGS:
            continue
        i = 0
        while i < len(body):
            line, number = body[i], first + i
            i += 1
            if prompted:
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            while line.rstrip().endswith("\\") and i < len(body):  # continuation lines
                line = line.rstrip()[:-1] + " " + body[i].strip()
                i += 1
            marker = LINE_MARKER.search(line)
            needs = set(block_needs) | ({n.strip() for n in marker.group(1).split(",")} if marker else set())
            lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
            lexer.whitespace_split, lexer.commenters = True, "#"
            try:
                tokens = list(lexer)
            except ValueError as e:
                raise AssertionError(f"{_name(path)}:{number}: cannot split {line!r}: {e}") from None
            simple: list[str] = []
            for token in tokens + [";"]:
                if set(token) <= set(";&|"):
                    while simple and re.match(r"^\w+=", simple[0]):  # VAR=value cmd
                        simple.pop(0)
                    if simple:
                        found.append(Command(f"{_name(path)}:{number}", simple, needs, first))
                    simple = []
                else:
                    simple.append(token)
    return found


def _all_commands() -> list[Command]:
    return [c for path in [README, *GUIDES] for c in _commands(path)]


# -- what a command needs ---------------------------------------------------------------------------------------------

def _downloaded_datasets() -> set[str]:
    from robustal.data.builtin import FILES

    return set(FILES)


def _needs(command: Command) -> set[str]:
    """What ``command`` needs beyond an offline CPU machine with scripts/setup done."""
    t = command.tokens
    needs = set()
    if "pip" in Path(t[0]).name and "install" in t:
        needs.add("download")
    if t[0] == "python" and len(t) > 1:
        script = Path(t[1]).name
        positional = [a for a in t[2:] if not a.startswith("-")]
        if (script == "mnist_npz.py" and len(positional) < 1) or (script == "mnist_pngs.py" and len(positional) < 3):
            needs.add("download")  # without the MNIST folder they download its test files
    for flag, value in zip(t, t[1:], strict=False):
        if flag in ("--dataset", "--data", "--pool") and value in _downloaded_datasets():
            needs.add("download")
        if flag == "--device" and value.startswith("cuda"):
            needs.add("gpu")
    return needs


# -- the checks of one command ----------------------------------------------------------------------------------------

def _options(parser) -> set[str]:
    return set(parser._option_string_actions)


def _subcommands(parser) -> dict:
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def _check_robustal(command: Command, args: list[str]) -> None:
    parser = build_parser()
    where = command.source
    if not args or args[0].startswith("-"):
        unknown = [a for a in args if a.startswith("-") and a not in _options(parser)]
        assert not unknown, f"{where}: robustal has no option {unknown}"
        return
    commands = _subcommands(parser)
    assert args[0] in commands, f"{where}: no command 'robustal {args[0]}' (there are {sorted(commands)})"
    sub = commands[args[0]]
    unknown = [a.split("=")[0] for a in args[1:]
               if re.match(r"^--?[A-Za-z]", a) and a.split("=")[0] not in _options(sub)]
    assert not unknown, f"{where}: 'robustal {args[0]}' has no option {unknown}"
    if "..." not in args:  # parse it whole: choices, value types, required arguments
        try:
            parse(build_parser(), args)
        except SystemExit as e:
            raise AssertionError(f"{where}: 'robustal {' '.join(args)}' does not parse (exit {e.code})") from None


def _check(command: Command) -> bool:
    """Check ``command`` if it is one of ours; return whether it was."""
    t = command.tokens
    if t[0] == "robustal":
        _check_robustal(command, t[1:])
    elif t[0] in ("python", "python3") and len(t) > 1 and t[1].split("/")[0] in ("scripts", "benchmarks"):
        script = ROOT / t[1]
        assert script.is_file(), f"{command.source}: no script {t[1]}"
        source = script.read_text()
        unknown = [a.split("=")[0] for a in t[2:] if a.startswith("--") and f'"{a.split("=")[0]}"' not in source]
        assert not unknown, f"{command.source}: {t[1]} has no option {unknown}"
    elif t[0].startswith("./scripts/"):
        script = ROOT / t[0]
        assert script.is_file() and os.access(script, os.X_OK), f"{command.source}: no executable {t[0]}"
        if script.name == "demo":
            _check_robustal(command, ["demo", *t[1:]])
        elif script.name != "test":  # ./scripts/test passes its arguments to pytest
            unknown = [a for a in t[1:] if a.startswith("-") and a not in script.read_text()]
            assert not unknown, f"{command.source}: {t[0]} has no option {unknown}"
    else:
        return False
    return True


# -- tests ------------------------------------------------------------------------------------------------------------

def test_the_readme_fits_in_a_few_screens():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; move detail into docs/guides/"


def test_every_relative_link_points_to_a_file_and_heading_that_exist():
    broken = []
    for path in [README, *DOCS]:
        for target in LINK.findall(_prose(path)):
            if re.match(r"^[a-z][a-z+.-]*:", target):  # http:, https:, mailto:
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{path.relative_to(ROOT)}: {target} (no such heading in {dest.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_checker_sees_a_broken_link_and_a_wrong_anchor(tmp_path, monkeypatch):
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n[ok](#title) [bad](#nothing) [gone](missing.md) `[code](not-a-link.md)`\n")
    links = LINK.findall(_prose(page))
    assert links == ["#title", "#nothing", "missing.md"]
    assert _anchors(page) == {"title"}
    assert _slug("paper-mnist: every claim at the paper's label scale, 10 seeds") == \
        "paper-mnist-every-claim-at-the-papers-label-scale-10-seeds"


def test_the_python_api_example_runs(capsys):
    text = PYTHON_API.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(PYTHON_API), "exec"), namespace)
    stages = namespace["result"].stages
    assert [s.labeled for s in stages] == [50, 100, 150, 200]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and all(len(line.split()) == 3 for line in printed)


def test_the_readme_and_guides_have_commands_to_check():
    commands = _all_commands()
    readme = [c for c in commands if c.source.startswith("README.md")]
    assert any(c.tokens[:2] == ["robustal", "run"] for c in readme)
    assert any(c.tokens[0] == "./scripts/demo" for c in readme) and any(c.tokens[0] == "./scripts/test" for c in readme)
    assert {c.source.split(":")[0] for c in commands} >= {"README.md", "docs/guides/labeling.md"}


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: f"{c.source} {' '.join(c.tokens[:2])}")
def test_every_command_names_real_commands_and_options(command):
    _check(command)


@pytest.mark.parametrize("command", _all_commands(), ids=lambda c: f"{c.source} {' '.join(c.tokens[:2])}")
def test_a_command_that_needs_a_download_or_a_gpu_is_marked(command):
    assert command.needs <= NEEDS, f"{command.source}: unknown marker {command.needs - NEEDS} (use {sorted(NEEDS)})"
    missing = _needs(command) - command.needs
    assert not missing, (f"{command.source}: '{' '.join(command.tokens)}' needs {sorted(missing)}: use offline data "
                         f"(mnist-8k.npz) or mark it <!-- needs: {', '.join(sorted(missing))} -->")


def test_a_marker_is_not_put_on_a_block_that_needs_nothing():
    for path in [README, *GUIDES]:
        commands = _commands(path)
        for first, _, _, needs in _blocks(path):
            for need in needs:
                inside = [c for c in commands if c.block == first]
                assert any(need in _needs(c) for c in inside), \
                    f"{path.relative_to(ROOT)}:{first}: marked 'needs: {need}', but no command of the block needs it"


def test_the_checker_catches_a_wrong_option_a_wrong_command_and_an_unmarked_download(tmp_path):
    def one(line: str) -> Command:
        page = tmp_path / "page.md"
        page.write_text(f"```bash\n{line}\n```\n")
        return _commands(page)[0]

    with pytest.raises(AssertionError, match="has no option"):
        _check(one("robustal run --dataset mnist-8k.npz --no-such-flag 3"))
    with pytest.raises(AssertionError, match="no command"):
        _check(one("robustal fly"))
    with pytest.raises(AssertionError, match="does not parse"):
        _check(one("robustal run --training fast"))
    with pytest.raises(AssertionError, match="no script"):
        _check(one("python scripts/no_such_script.py"))
    assert _check(one("cd x && robustal status runs/x")) is False  # `cd x`, the first of two commands
    assert _needs(one("robustal run --dataset mnist --out runs/m")) == {"download"}
    assert _needs(one("python scripts/mnist_npz.py")) == {"download"}
    assert _needs(one("python scripts/mnist_npz.py some/folder")) == set()
    assert one("robustal train --dataset mnist  # needs: download").needs == {"download"}


def test_the_mnist_script_builds_the_npz_from_the_folder_it_is_given(tmp_path, run_script):
    spec = importlib.util.spec_from_file_location("tests_conftest", ROOT / "tests" / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    MNIST_DIR, build_mnist_npz = conftest.MNIST_DIR, conftest.build_mnist_npz  # noqa: N806
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST test set not found in {MNIST_DIR} (set ROBUSTAL_TEST_MNIST)")
    made = run_script("mnist_npz.py", str(MNIST_DIR), str(tmp_path / "m.npz"))
    assert made.returncode == 0, made.stderr
    ours, fixture = np.load(tmp_path / "m.npz"), np.load(build_mnist_npz(tmp_path / "fixture.npz"))
    assert set(ours) == set(fixture) and all(np.array_equal(ours[k], fixture[k]) for k in ours)


def test_the_mnist_scripts_name_a_folder_without_mnist_and_the_fix(tmp_path, run_script):
    for args in (["mnist_npz.py", str(tmp_path)], ["mnist_pngs.py", str(tmp_path / "out"), "5", str(tmp_path)]):
        result = run_script(*args)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        assert str(tmp_path) in result.stderr and "t10k-images-idx3-ubyte.gz" in result.stderr
        assert "leave the folder out to download" in result.stderr


def test_the_mnist_scripts_explain_their_arguments(tmp_path, run_script):
    for script in ("mnist_npz.py", "mnist_pngs.py"):
        shown = run_script(script, "--help")
        assert shown.returncode == 0 and "MNIST_DIR" in shown.stdout
    bad = run_script("mnist_pngs.py", str(tmp_path / "out"), "0", str(tmp_path))
    assert bad.returncode == 2 and "between 1 and 10000" in bad.stderr and not (tmp_path / "out").exists()

"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_api_example_runs(capsys):
    text = README.read_text()
    section = text[text.index("## Python API"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    stages = namespace["result"].stages
    assert [s.labeled for s in stages] == [50, 100, 150, 200]
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4 and all(len(line.split()) == 3 for line in printed)

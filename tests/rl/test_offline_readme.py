"""The README's section on offline reinforcement learning runs and prints what its comments say."""

from __future__ import annotations

import contextlib
import io
import pathlib
import re


def test_readme_offline_rl_section_runs():
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("### Offline reinforcement learning: behaviour cloning", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(readme), "exec"), {})
    scores = dict(line.split() for line in out.getvalue().splitlines())
    print(scores)
    assert float(scores["10%BC"]) > 300 and float(scores["CQL"]) > 150 and float(scores["IQL"]) > 150
    assert float(scores["200"]) > float(scores["20"]) + 30

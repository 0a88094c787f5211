"""The README's engine example runs and its cost falls."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_logistic_regression_example_runs_and_learns():
    text = README.read_text()
    section = text.split("## Logistic regression with the raw engine", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    costs = [float(line.split("cost")[1]) for line in out.getvalue().splitlines()]
    assert len(costs) == 6 and costs[0] > 0.69 and costs[-1] < costs[0] / 3


def test_main_command_is_the_cli_train_job():
    text = README.read_text()
    assert "python -m pip install -e . && python -m lamina train" in text
    assert 'python -m pip install -e ".[test]" && python -m pytest' in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert 'python -m pip install -e ".[test]" && python -m pytest' in ci

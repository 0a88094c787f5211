"""The README's adversarial robustness example runs and its models keep their promises."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"
TITLE = "### Adversarial robustness: attacks, adversarial training and certificates"


def test_readme_robustness_example_runs():
    section = README.read_text().split(TITLE, 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), names)
    printed = out.getvalue()
    pgd_accuracy = float(re.search(r"PGD accuracy ([\d.]+)", printed).group(1))
    certified = float(re.search(r"certified at eps=0.1: ([\d.]+)", printed).group(1))
    ibp_width, crown_width = map(float, re.search(r"IBP ([\d.]+), CROWN ([\d.]+)", printed).groups())
    assert pgd_accuracy >= 0.6 and certified >= 0.3 and crown_width < ibp_width, printed
    assert names["classes"].shape == (5,) and (names["radii"] >= 0).all()

"""The README's fairness example runs and its mitigations keep their promises."""

import contextlib
import io
import pathlib
import re

from lamina.analysis import fairness as fair

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_fairness_example_runs():
    section = README.read_text().split("### Fairness: group metrics and mitigations", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    y, group, x = names["y"], names["group"], names["x"]
    before = fair.demographic_parity_difference(y, names["plain"].predict(x), sensitive_features=group)
    after = fair.demographic_parity_difference(y, names["y_fair"], sensitive_features=group)
    assert names["frame"].difference()["selection"] == before > 0.25
    assert after < before / 3
    odds_before = fair.equalized_odds_difference(y, names["plain"].predict(x), sensitive_features=group)
    assert fair.equalized_odds_difference(y, names["y_post"], sensitive_features=group) < odds_before

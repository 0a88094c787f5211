"""The README's fairness example runs and its mitigations keep their promises."""


from helpers import run_readme_section
from lamina.analysis import fairness as fair


def test_readme_fairness_example_runs():
    _, names = run_readme_section("Fairness: group metrics and mitigations")
    y, group, x = names["y"], names["group"], names["x"]
    before = fair.demographic_parity_difference(y, names["plain"].predict(x), sensitive_features=group)
    after = fair.demographic_parity_difference(y, names["y_fair"], sensitive_features=group)
    assert names["frame"].difference()["selection"] == before > 0.25
    assert after < before / 3
    odds_before = fair.equalized_odds_difference(y, names["plain"].predict(x), sensitive_features=group)
    assert fair.equalized_odds_difference(y, names["y_post"], sensitive_features=group) < odds_before

"""The README's adversarial robustness example runs and its models keep their promises."""

import re

from helpers import run_readme_section


def test_readme_robustness_example_runs():
    printed, names = run_readme_section("Adversarial robustness: attacks, adversarial training and certificates")
    pgd_accuracy = float(re.search(r"PGD accuracy ([\d.]+)", printed).group(1))
    certified = float(re.search(r"certified at eps=0.1: ([\d.]+)", printed).group(1))
    ibp_width, crown_width = map(float, re.search(r"IBP ([\d.]+), CROWN ([\d.]+)", printed).groups())
    assert pgd_accuracy >= 0.6 and certified >= 0.3 and crown_width < ibp_width, printed
    assert names["classes"].shape == (5,) and (names["radii"] >= 0).all()

"""The README's physics-informed example runs and prints what its comments say."""

from __future__ import annotations

from helpers import run_readme_section


def test_readme_example():
    printed, names = run_readme_section("Physics-informed networks")
    assert printed.split() == ["True", "(501,", "1,", "2)", "True"]
    assert names["trajectory"].shape == (501, 1, 2)

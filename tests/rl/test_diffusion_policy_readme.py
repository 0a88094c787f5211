"""The README section on diffusion policies runs and prints what it says."""

from __future__ import annotations

from helpers import run_readme_section


def test_readme_section_runs():
    printed, names = run_readme_section("Diffusion policies for imitation")
    assert printed.splitlines() == ["(60, 2, 2) (60, 8, 2)", "(1, 8, 2)",
                                    "['info', 'length', 'observations', 'return']"]
    assert len(names["losses"]) == 20 and names["episode"]["length"] >= 1

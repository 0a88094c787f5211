"""The README's section on model-based RL runs and prints what its comments say."""

from __future__ import annotations

from helpers import run_readme_section


def test_readme_model_based_section_runs():
    printed, names = run_readme_section("Model-based RL: PETS, MPPI, MBPO rollouts and an RSSM")
    assert printed.splitlines() == ["True", "(4, 5, 4) (4, 5, 3)"], printed
    assert names["planned"] > names["random"] + 200

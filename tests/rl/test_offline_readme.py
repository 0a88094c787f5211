"""The README's section on offline reinforcement learning runs and prints what its comments say."""

from __future__ import annotations

from helpers import run_readme_section


def test_readme_offline_rl_section_runs():
    printed, _ = run_readme_section("Offline reinforcement learning: behaviour cloning")
    scores = dict(line.split() for line in printed.splitlines())
    print(scores)
    assert float(scores["10%BC"]) > 300 and float(scores["CQL"]) > 150 and float(scores["IQL"]) > 150
    assert float(scores["200"]) > float(scores["20"]) + 30

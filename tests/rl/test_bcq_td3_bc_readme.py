"""The README's section on BCQ and TD3+BC runs and prints what its comments say."""

from __future__ import annotations

from helpers import run_readme_section


def test_readme_bcq_td3_bc_section_runs():
    printed, names = run_readme_section("Offline RL: BCQ and TD3+BC")
    assert printed.splitlines() == ["200 (2,) (2,)", "True", "True"]
    assert names["bcq"].updates == 100 and names["td3_bc"].updates == 102

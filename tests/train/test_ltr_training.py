"""An MLP scorer trained with each ranking loss on the synthetic task (the README's example):
every loss ranks far better than random scoring."""

import re

from helpers import run_readme_section

TITLE = "Learning to rank: RankNet, LambdaLoss, ListNet, ListMLE, ApproxNDCG, NeuralNDCG"


def run_readme_example() -> tuple[str, dict]:
    return run_readme_section(TITLE)


def test_every_loss_learns_to_rank_far_above_random():
    printed, names = run_readme_example()
    found = dict(re.findall(r"^(\S+) NDCG@10 ([0-9.]+)$", printed, re.M))
    found = {name: float(value) for name, value in found.items()}
    print(found)                                                           # figures for the record
    assert set(found) == set(names["losses"])
    random = names["ltr_metrics"](names["np"].random.default_rng(0).standard_normal(names["y_test"].shape),
                                  names["y_test"], k=10)["ndcg"]
    assert 0.3 < random < 0.5
    for listwise in ("NDCG-Loss2++", "LambdaRank", "ListNet"):
        assert found[listwise] > random + 0.35
    assert min(found.values()) > random + 0.3

"""Interactions: synthetic generators, MovieLens files, splits and negative sampling."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import (
    InteractionDataset,
    Interactions,
    implicit_training_data,
    leave_one_out_split,
    load_movielens,
    sample_negatives,
    synthetic_implicit,
    synthetic_ratings,
    temporal_split,
)


def test_synthetic_data_is_seeded_distinct_per_user_and_skewed_by_popularity():
    a, b = synthetic_ratings(60, 80, 10, seed=3), synthetic_ratings(60, 80, 10, seed=3)
    same = [np.array_equal(getattr(a, name), getattr(b, name)) for name in ("users", "items", "values", "timestamps")]
    assert all(same) and len(a) == 600 and not np.array_equal(a.values, synthetic_ratings(60, 80, 10, seed=4).values)
    assert a.values.min() >= 1 and a.values.max() <= 5 and a.values.std() > 0.5
    for generate in (synthetic_ratings, synthetic_implicit):
        data = generate(60, 80, 10, seed=0)
        assert len(np.unique(data.users * 80 + data.items)) == len(data)       # no item twice per user
        head = [np.sort(generate(60, 80, 10, popularity=p, seed=0).item_counts())[-8:].sum() for p in (0.0, 1.0)]
        assert head[1] > 1.5 * head[0]                    # the skew puts more interactions on the top items
    assert synthetic_implicit(60, 80, 10, seed=0).values.tolist() == [1.0] * 600


def test_movielens_readers_parse_both_formats(tmp_path):
    (tmp_path / "100k").mkdir()
    lines = ["196\t242\t3\t881250949", "186\t302\t3\t891717742", "196\t377\t1\t878887116"]
    (tmp_path / "100k" / "u.data").write_text("\n".join(lines) + "\n")
    small = load_movielens(tmp_path / "100k")
    assert (small.n_users, small.n_items, len(small)) == (2, 3, 3)
    assert small.user_ids.tolist() == [186, 196] and small.item_ids.tolist() == [242, 302, 377]
    assert small.users.tolist() == [1, 0, 1] and small.items.tolist() == [0, 1, 2]
    assert small.values.tolist() == [3, 3, 1] and small.timestamps[1] == 891717742
    (tmp_path / "1m").mkdir()
    (tmp_path / "1m" / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    large = load_movielens(tmp_path / "1m")
    assert large.item_ids.tolist() == [661, 1193] and large.items.tolist() == [1, 0, 1]
    assert large.users.tolist() == [0, 0, 1] and large.values.tolist() == [5, 3, 4]
    with pytest.raises(FileNotFoundError, match="u.data"):
        load_movielens(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "u.data").write_text("1\t2\t3\n")
    with pytest.raises(ValueError, match="line 1: expected 4 fields"):
        load_movielens(tmp_path / "bad")


def test_leave_one_out_keeps_each_users_latest_interaction_for_test():
    data = Interactions(users=[0, 0, 0, 1, 1, 2], items=[3, 1, 2, 0, 4, 1], values=np.ones(6),
                        timestamps=[5, 9, 7, 2, 1, 4], n_users=3, n_items=5)
    train, test = leave_one_out_split(data)
    assert sorted(zip(test.users.tolist(), test.items.tolist())) == [(0, 1), (1, 0)]    # user 2 has one event only
    assert len(train) == 4 and (2, 1) in zip(train.users.tolist(), train.items.tolist())
    big = synthetic_implicit(40, 50, 6, seed=1)
    train, test = leave_one_out_split(big)
    assert len(test) == 40 and len(train) == len(big) - 40
    for user, time in zip(test.users, test.timestamps):
        assert time > train.timestamps[train.users == user].max()


def test_temporal_split_cuts_at_a_time():
    data = synthetic_ratings(30, 40, 5, seed=2)
    train, test = temporal_split(data, 0.25)
    assert len(test) == round(0.25 * len(data)) and len(train) + len(test) == len(data)
    assert train.timestamps.max() < test.timestamps.min()
    with pytest.raises(ValueError, match="test_fraction"):
        temporal_split(data, 1.5)


@pytest.mark.parametrize("method", ["uniform", "popularity"])
def test_negatives_never_include_the_users_positives(method):
    data = synthetic_implicit(30, 25, 12, seed=0)
    train, test = leave_one_out_split(data)
    positives = set(zip(data.users.tolist(), data.items.tolist()))
    users = np.repeat(np.arange(30), 3)
    drawn = sample_negatives(train, users, 10, method=method, exclude=test, seed=0)
    assert drawn.shape == (90, 10)
    assert not any((u, i) in positives for u, row in zip(users, drawn) for i in row.tolist())
    distinct = sample_negatives(train, np.arange(30), 12, method=method, distinct=True, exclude=test, seed=1)
    assert all(len(set(row)) == 12 for row in distinct.tolist())
    assert not any((u, i) in positives for u, row in enumerate(distinct) for i in row.tolist())
    if method == "popularity":                     # an item never interacted with is never drawn
        unseen = np.setdiff1d(np.arange(25), train.items)
        assert not np.isin(drawn, unseen).any()


def test_popularity_sampling_follows_the_counts():
    data = Interactions(users=[0, 0, 0, 0, 1], items=[0, 0, 0, 1, 2], values=np.ones(5), timestamps=np.arange(5),
                        n_users=3, n_items=4)
    drawn = sample_negatives(data, np.full(20000, 2), 1, method="popularity", seed=0)
    share = np.bincount(drawn.reshape(-1), minlength=4) / drawn.size
    assert share == pytest.approx([0.6, 0.2, 0.2, 0.0], abs=0.02)
    uniform = sample_negatives(data, np.full(20000, 2), 1, seed=0)
    assert np.bincount(uniform.reshape(-1), minlength=4) / uniform.size == pytest.approx([0.25] * 4, abs=0.02)


def test_negative_sampling_errors():
    data = synthetic_implicit(5, 12, 10, seed=0)
    with pytest.raises(ValueError, match="user 0 has only 2 items"):
        sample_negatives(data, np.array([0]), 3, distinct=True)
    with pytest.raises(ValueError, match=r"user ids must be in \[0, 5\)"):
        sample_negatives(data, np.array([7]), 1)
    with pytest.raises(ValueError, match="method"):
        sample_negatives(data, np.array([0]), 1, method="zipf")
    with pytest.raises(ValueError, match=r"item id 9 is out of range \[0, 9\)"):
        Interactions([0], [9], [1.0], [0], n_users=1, n_items=9)


def test_training_data_and_dataset_pair_positives_with_negatives():
    data = synthetic_implicit(20, 30, 5, seed=0)
    (users, items), labels = implicit_training_data(data, negatives=3, seed=0)
    assert len(users) == 4 * len(data) and labels.sum() == len(data)
    positives = set(zip(data.users.tolist(), data.items.tolist()))
    assert all(((u, i) in positives) == bool(y) for u, i, y in zip(users.tolist(), items.tolist(), labels))
    dataset = InteractionDataset(data, negatives=2, seed=0)
    (batch_users, batch_items), batch_labels = dataset[np.arange(4)]
    assert batch_users.shape == batch_items.shape == batch_labels.shape == (4,) and len(dataset) == 3 * len(data)
    before = dataset.x[1].copy()
    dataset.resample()
    assert not np.array_equal(before, dataset.x[1]) and dataset.y.sum() == len(data)

import numpy as np
import pytest

from lamina.data import LastNeighborSampler, TemporalEvents


def _random_events(n_events=60, n_nodes=8, seed=0):
    rng = np.random.default_rng(seed)
    times = rng.integers(0, 25, n_events).astype(float)     # many ties on purpose
    return TemporalEvents(rng.integers(0, n_nodes, n_events), rng.integers(0, n_nodes, n_events), times,
                          rng.standard_normal((n_events, 3)))


def test_events_are_sorted_and_split_chronologically():
    rng = np.random.default_rng(1)
    t = rng.permutation(20).astype(float)
    events = TemporalEvents(np.arange(20), np.arange(20)[::-1], t, t[:, None] * 2)
    assert np.all(np.diff(events.t) >= 0)
    np.testing.assert_array_equal(events.msg[:, 0], events.t * 2)    # rows moved together
    train, val, test = events.split(0.2, 0.25)
    assert (len(train), len(val), len(test)) == (11, 4, 5)
    assert train.t.max() <= val.t.min() and val.t.max() <= test.t.min()
    assert sum(len(b) for b in events.batches(6)) == 20
    with pytest.raises(ValueError, match="split"):
        events.split(0.6, 0.5)


def test_negative_destinations_come_from_candidates():
    events = _random_events()
    negatives = events.negative_destinations(np.random.default_rng(0), candidates=np.array([2, 5]))
    assert negatives.shape == (len(events),) and set(negatives) <= {2, 5}
    assert set(events.negative_destinations(np.random.default_rng(0))) <= set(events.dst)


@pytest.mark.parametrize("k", [1, 3, 50])
def test_last_neighbours_match_brute_force(k):
    events = _random_events()
    sampler = LastNeighborSampler(events, k)
    rng = np.random.default_rng(2)
    nodes, times = rng.integers(0, 10, 40), rng.integers(0, 27, 40).astype(float)   # nodes 8, 9 never seen
    neighbors, event_times, event_ids, mask = sampler.sample(nodes, times)
    for row, (node, time) in enumerate(zip(nodes, times)):
        earlier = [i for i in range(len(events)) if events.t[i] < time and node in (events.src[i], events.dst[i])]
        expected = earlier[::-1][:k]                                    # most recent first
        count = mask[row].sum()
        assert count == len(expected) and mask[row, :count].all()
        np.testing.assert_array_equal(event_ids[row, :count], expected)
        assert np.all(event_times[row, :count] < time)
        partner = np.where(events.src[expected] == node, events.dst[expected], events.src[expected])
        np.testing.assert_array_equal(neighbors[row, :count], partner)

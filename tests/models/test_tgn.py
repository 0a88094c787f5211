import pathlib
import time

import numpy as np

import lamina
from lamina import functional as F
from lamina.data import TemporalEvents
from lamina.models import TGN, last_messages
from lamina.optim import Adam


def _events(n=30, nodes=6, seed=0):
    rng = np.random.default_rng(seed)
    return TemporalEvents(rng.integers(0, nodes, n), rng.integers(0, nodes, n), np.arange(n) * 1.5 + 1,
                          rng.standard_normal((n, 3)))


def test_last_messages_keeps_latest():
    assert last_messages(np.array([3, 1, 3, 1, 3]), np.array([2.0, 5.0, 7.0, 1.0, 7.0])) == {3: 4, 1: 1}


def test_memory_update_equals_hand_loop():
    lamina.set_default_dtype(np.float64)
    try:
        events = _events()
        first, second = events[:12], events[12:]
        model = TGN(6, 3, memory_dim=4, time_dim=3, embedding_dim=4, neighbors=3)
        model(first.src, first.dst, first.t)
        model.update(first)
        model(second.src, second.dst, second.t)
        model.update(second)
        model.update(events[:0])                     # commits the second batch's messages
        memory, last = np.zeros((6, 4)), np.zeros(6)
        for batch in (first, second):
            final = {}                               # node -> (time, position, message): the last one wins
            for position, (i, j, t, e) in enumerate(zip(batch.src, batch.dst, batch.t, batch.msg)):
                for node, other, rank in ((i, j, 2 * position), (j, i, 2 * position + 1)):
                    final[node] = (t, rank, np.concatenate([memory[node], memory[other], e,
                                                            np.cos((t - last[node]) * model.time_encoder.weight.numpy()
                                                                   + model.time_encoder.bias.numpy())]))
            new_memory = memory.copy()
            for node, (t, _, message) in final.items():
                new_memory[node] = model.memory_updater(lamina.tensor(message[None]),
                                                        lamina.tensor(memory[node][None])).numpy()[0]
                last[node] = t
            memory = new_memory
        np.testing.assert_allclose(model.memory.numpy(), memory, rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(model.last_update, last)
        model.reset_memory()
        assert not model.memory.numpy().any() and len(model.history) == 0
    finally:
        lamina.set_default_dtype(np.float32)


def test_no_leakage_from_events_at_or_after_the_scored_time():
    model = TGN(6, 3, memory_dim=4, time_dim=3, embedding_dim=4, neighbors=3)
    state = {name: p.numpy().copy() for name, p in model.named_parameters()}
    events = _events(seed=3)
    late = events.t >= events.t[16]
    changed = TemporalEvents(events.src, np.where(late, (events.dst + 1) % 6, events.dst), events.t,
                             np.where(late[:, None], events.msg + 5.0, events.msg))

    def run(stream):
        model.reset_memory()
        scores = []
        for batch in stream.batches(5):
            scores.append(model.embed(batch.src, batch.t).numpy())
            model.update(batch)
        return np.concatenate(scores)

    before, after = run(events), run(changed)
    assert all(np.array_equal(p.numpy(), state[name]) for name, p in model.named_parameters())
    np.testing.assert_array_equal(before[:16], after[:16])       # sources of the events before t_16
    assert not np.allclose(before[20:], after[20:])              # later ones do see the change


EPOCHS, SEED = 15, 0


def _periodic_stream(seed=0, n_src=6, per_src=2, n_dst=12, rounds=60):
    """Each source visits its own fixed destinations in turn, one source at a time."""
    rng = np.random.default_rng(seed)
    own = rng.permutation(n_dst).reshape(n_src, per_src) + n_src
    src, dst = [], []
    for r in range(rounds):
        for s in rng.permutation(n_src):
            src.append(s)
            dst.append(own[s, r % per_src])
    n, features = len(src), rng.standard_normal((n_src, 4))       # each source signs its messages
    return TemporalEvents(np.array(src), np.array(dst), np.arange(n, dtype=float), features[src])


def _average_precision(scores, labels):
    order = np.lexsort((labels, -scores))          # ties count against the scorer
    hits = labels[order]
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision[hits == 1].mean())


def test_tgn_learns_recurring_links_better_than_static_baseline():
    start = time.perf_counter()
    lamina.manual_seed(SEED)
    events = _periodic_stream()
    train, _, test = events.split(0.15, 0.25)
    candidates = np.unique(events.dst)
    model = TGN(events.num_nodes, 4, memory_dim=16, time_dim=4, embedding_dim=16, neighbors=4)
    optimizer = Adam(model.parameters(trainable_only=True), lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(EPOCHS):
        model.reset_memory()
        for batch in events[:len(train)].batches(12):
            negatives = batch.negative_destinations(rng, candidates)
            logits = F.concat([model(batch.src, batch.dst, batch.t), model(batch.src, negatives, batch.t)], axis=0)
            labels = np.concatenate([np.ones(len(batch)), np.zeros(len(batch))]).astype(np.float32)
            loss = F.binary_cross_entropy_with_logits(logits, lamina.tensor(labels))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            model.update(batch)
    scores, labels, static = [], [], []
    popularity = np.bincount(train.dst, minlength=events.num_nodes)
    for batch in events[len(train):].batches(12):             # validation then test, memory carried on
        negatives = batch.negative_destinations(rng, candidates)
        positive, negative = model(batch.src, batch.dst, batch.t).numpy(), model(batch.src, negatives, batch.t).numpy()
        if batch.t[0] >= test.t[0]:
            scores += [positive, negative]
            jitter = rng.random((2, len(batch)))                    # breaks the popularity ties at random
            static += [popularity[batch.dst] + jitter[0], popularity[negatives] + jitter[1]]
            labels += [np.ones(len(batch)), np.zeros(len(batch))]
        model.update(batch)
    labels = np.concatenate(labels)
    tgn_ap = _average_precision(np.concatenate(scores), labels)
    static_ap = _average_precision(np.concatenate(static).astype(float), labels)
    print(f"TGN AP {tgn_ap:.3f}, static popularity AP {static_ap:.3f}, {time.perf_counter() - start:.1f} s")
    assert tgn_ap > 0.7 and tgn_ap > static_ap + 0.15


def test_readme_example_runs():
    readme = pathlib.Path(__file__).resolve().parents[2] / "README.md"
    section = readme.read_text().split("### Temporal graph networks", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    names: dict = {}
    exec(compile(code, str(readme), "exec"), names)
    assert names["model"].memory.shape == (20, 8) and len(names["model"].history) == 140

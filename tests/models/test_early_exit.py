import numpy as np
import pytest

import lamina
from helpers import randn
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.models.early_exit import EarlyExitNetwork


def _network(n_in=6, widths=(5, 4, 3), classes=3, loss_weights=None):
    stages = [nn.Dense(w, activation="relu") for w in widths]
    exits = [nn.Dense(classes) for _ in widths]
    net = EarlyExitNetwork(stages, exits, loss_weights=loss_weights)
    net(randn(2, n_in))
    return net


def _cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return -log_probs[np.arange(len(labels)), labels].mean()


def test_joint_loss_is_the_weighted_sum_of_branch_cross_entropies():
    lamina.set_default_dtype(np.float64)
    net = _network(loss_weights=[0.3, 0.5, 1.0])
    x, labels = randn(7, 6, seed=1), np.array([0, 1, 2, 2, 1, 0, 1])
    outputs = net(x)
    expected = sum(w * _cross_entropy(o.numpy(), labels) for w, o in zip([0.3, 0.5, 1.0], outputs))
    np.testing.assert_allclose(net.joint_loss(outputs, labels).item(), expected, rtol=1e-12)


def test_thresholds_at_the_extremes_and_mac_accounting():
    net = _network()
    x = randn(9, 6, seed=2)
    assert net.branch_macs() == [6 * 5 + 5 * 3, 5 * 4 + 4 * 3, 4 * 3 + 3 * 3]
    full = sum(net.branch_macs())
    everyone_early = net.infer(x, 0.0, criterion="max_probability")
    assert everyone_early.exit_index.tolist() == [0] * 9
    assert everyone_early.exit_fractions.tolist() == [1.0, 0.0, 0.0]
    assert everyone_early.saved_fraction == pytest.approx(1 - 45 / full)
    final_logits = net(x)[-1].numpy()
    for criterion, threshold in (("entropy", 0.0), ("max_probability", 1.0)):
        nobody = net.infer(x, threshold, criterion=criterion)
        assert nobody.exit_fractions.tolist() == [0.0, 0.0, 1.0] and nobody.saved_fraction == 0.0
        assert nobody.predictions.tolist() == final_logits.argmax(axis=1).tolist()
    mixed = net.infer(x, [np.log(3) * 0.999, 0.0], criterion="entropy")
    costs = np.cumsum(net.branch_macs())
    np.testing.assert_array_equal(mixed.macs_per_sample, costs[mixed.exit_index])
    expected_saved = 1 - (mixed.exit_fractions * costs).sum() / costs[-1]
    assert mixed.saved_fraction == pytest.approx(expected_saved)


def test_errors():
    net = _network()
    with pytest.raises(ValueError, match=r"max_probability thresholds must lie in \[0, 1\]"):
        net.infer(randn(2, 6), 1.5, criterion="max_probability")
    with pytest.raises(ValueError, match=r"entropy thresholds must lie in \[0, inf\)"):
        net.infer(randn(2, 6), -0.1)
    with pytest.raises(ValueError, match="give one threshold or 2"):
        net.infer(randn(2, 6), [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="criterion must be one of"):
        net.infer(randn(2, 6), 0.1, criterion="margin")
    with pytest.raises(ValueError, match="as many exits as stages"):
        EarlyExitNetwork([nn.Dense(3)], [nn.Dense(2), nn.Dense(2)])
    with pytest.raises(ValueError, match="loss_weights must be 2 finite non-negative"):
        EarlyExitNetwork([nn.Dense(3)] * 2, [nn.Dense(2)] * 2, loss_weights=[1.0, -1.0])


def test_learns_digits_with_a_sane_accuracy_versus_exit_trade_off():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    stages = [nn.Dense(16, activation="relu"), nn.Sequential(nn.Dense(64, activation="relu"),
                                                             nn.Dense(64, activation="relu"))]
    net = EarlyExitNetwork(stages, [nn.Dense(10), nn.Dense(10)], loss_weights=[0.5, 1.0])
    net(lamina.tensor(xtr[:2]))
    opt = optim.Adam(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(30):
        order = rng.permutation(len(xtr))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            opt.zero_grad()
            net.joint_loss(net(lamina.tensor(xtr[batch])), ytr[batch]).backward()
            opt.step()
    rows = []
    for threshold in (0.0, 0.1, 0.3, 0.6, 1.0, 10.0):
        result = net.infer(xte, threshold)
        rows.append((threshold, float((result.predictions == yte).mean()), result.exit_fractions[0],
                     result.saved_fraction))
    print("\n".join(f"entropy < {t}: accuracy {a:.3f}, exited early {f:.2f}, MACs saved {s:.2f}"
                    for t, a, f, s in rows))
    final_accuracy, all_early_accuracy = rows[0][1], rows[-1][1]
    assert rows[0][2] == 0.0 and rows[-1][2] == 1.0
    assert final_accuracy > 0.9 and all_early_accuracy > 0.7
    fractions = [r[2] for r in rows]
    assert fractions == sorted(fractions)
    middle = rows[3]                     # most samples leave early at almost no accuracy cost
    assert middle[2] > 0.4 and middle[3] > 0.3 and middle[1] > final_accuracy - 0.02

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.models.transfer import transfer
from lamina.train import Trainer


def _cnn():
    return nn.Sequential(nn.Conv2D(16, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                         nn.Conv2D(32, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                         nn.Flatten(), nn.Dense(64, activation="relu"), nn.Dense(5), nn.Softmax())


def _fit(model, x, y, epochs, lr, seed=0):
    lamina.manual_seed(seed)
    opt = optim.Adam(model, lr=lr)
    Trainer(model, "categorical_cross_entropy", opt, verbose=0).fit((x, y), epochs=epochs, batch_size=32, seed=seed)


def _accuracy(model, x, y):
    model.eval()
    with lamina.no_grad():
        return float((model(lamina.tensor(x)).numpy().argmax(1) == y).mean())


@pytest.fixture(scope="module")
def digits_tasks():
    """A CNN trained on the digits 0-4 (the first task), and a few labelled samples of the
    digits 5-9 (the second task: 10 per class to train on, the rest to test)."""
    x, y = lamina.data.load_digits(size=8)
    x = x.astype(np.float32) / 255
    lamina.manual_seed(0)
    base = _cnn()
    _fit(base, x[y < 5], y[y < 5], epochs=10, lr=3e-3)
    xn, yn = x[y >= 5], y[y >= 5] - 5
    order = np.random.default_rng(0).permutation(len(xn))
    train = np.concatenate([order[yn[order] == c][:10] for c in range(5)])
    test = np.setdiff1d(order, train)
    return base, (xn[train], yn[train]), (xn[test], yn[test])


def test_the_first_task_was_learned(digits_tasks):
    base, _, _ = digits_tasks
    x, y = lamina.data.load_digits(size=8)
    assert _accuracy(base, x[y < 5].astype(np.float32) / 255, y[y < 5]) > 0.97


@pytest.mark.parametrize("options,lr,bar", [({"replace": 3}, 1e-2, 0.85), ({"replace": 3, "trainable": 1}, 3e-3, 0.88)])
def test_transfer_learns_the_second_task_from_ten_samples_a_class(digits_tasks, options, lr, bar):
    base, train, test = digits_tasks
    reference = {k: v.copy() for k, v in base.state_dict().items()}
    model = transfer(base, 5, **options)
    frozen = {name: p.data.copy() for name, p in model.named_parameters() if not p.trainable}
    _fit(model, *train, epochs=40, lr=lr)
    assert _accuracy(model, *test) >= bar
    for name, p in model.named_parameters():
        if name in frozen:
            np.testing.assert_array_equal(p.data, frozen[name], err_msg=f"frozen {name} moved")
    for key, value in base.state_dict().items():
        np.testing.assert_array_equal(value, reference[key], err_msg=f"the trained model's {key} moved")


def test_what_transfer_keeps_freezes_and_replaces(digits_tasks):
    base, _, _ = digits_tasks
    model = transfer(base, 3)                        # default: the output layer and its softmax
    assert [type(layer).__name__ for layer in model] == [
        "Conv2D", "MaxPool2D", "Conv2D", "MaxPool2D", "Flatten", "Dense", "Dense", "Softmax"]
    assert model[-2].weight.shape == (64, 3)         # built already: an optimizer sees the head
    trainable = {name for name, _ in model.named_parameters(trainable_only=True)}
    assert trainable == {f"{model[-2].name}.weight", f"{model[-2].name}.bias"}
    assert model[0] is not base[0]

    two = transfer(base, 3, replace=3, trainable=1)
    weighted = [layer for layer in two if layer.num_parameters() > 0]
    assert [all(p.trainable for p in layer.parameters()) for layer in weighted] == [False, True, True]

    head = [nn.Dense(8, activation="relu"), nn.Dense(2)]
    custom = transfer(base, replace=2, head=head)
    assert list(custom)[-2:] == head
    assert custom(lamina.tensor(np.zeros((4, 8, 8, 1), np.float32))).shape == (4, 2)


def test_transfer_rejects_what_it_cannot_do(digits_tasks):
    base, _, _ = digits_tasks
    with pytest.raises(ValueError, match="no weights yet"):
        transfer(_cnn(), 3)
    with pytest.raises(ValueError, match="replace must be an int in"):
        transfer(base, 3, replace=len(base))
    with pytest.raises(ValueError, match="trainable=5, but the kept layers have only 3"):
        transfer(base, 3, replace=2, trainable=5)
    with pytest.raises(ValueError, match="num_classes or a head, not both"):
        transfer(base, 3, head=nn.Dense(3))
    with pytest.raises(ValueError, match="num_classes must be a positive int"):
        transfer(base, 0)
    with pytest.raises(TypeError, match="expected a trained Sequential"):
        transfer(base[0], 3)

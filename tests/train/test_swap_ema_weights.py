"""SwapEMAWeights: fit validates with the weight average of a WeightAveraging callback and
trains on with its own weights."""

import copy

import numpy as np
import pytest

import lamina
from lamina import nn, optim
from lamina.train import LambdaCallback, SwapEMAWeights, Trainer, WeightAveraging


def blobs(n=32, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.standard_normal((3, 4))[y] * 2 + rng.standard_normal((n, 4))).astype(np.float32)
    return x, y


def model_with_batch_norm():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(8), nn.BatchNorm(), nn.ReLU(), nn.Dense(3), nn.Softmax())
    model.build((None, 4))
    return model


def snapshot(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


def fit(callbacks, epochs=3):
    model = model_with_batch_norm()
    trainer = Trainer(model, optimizer=optim.SGD(model, lr=0.2), callbacks=callbacks, verbose=0)
    trainer.fit(blobs(), val=blobs(16, seed=1), epochs=epochs, batch_size=8, seed=0)
    return trainer


def val_loss_with(weights, template):
    model = copy.deepcopy(template)
    model.load_state_dict(weights)
    return Trainer(model, optimizer=optim.SGD(model, lr=0.1), verbose=0).evaluate(blobs(16, seed=1))["loss"]


def test_validation_measures_the_average_and_training_is_unchanged():
    plain = fit([WeightAveraging(decay=0.8, every="iteration", swap_at_end=False)])
    averaging = WeightAveraging(decay=0.8, every="iteration", swap_at_end=False)
    at_validation = []

    def keep(epoch, logs):        # the weights validated: the average's parameters, the model's running statistics
        state = snapshot(trainer_holder[0].model)
        params = {name for name, _ in averaging.averaged.module.named_parameters()}
        state.update({k: np.array(v, copy=True) for k, v in averaging.averaged.module.state_dict().items()
                      if k in params})
        at_validation.append(state)

    trainer_holder = []
    recorder = LambdaCallback(on_epoch_end=keep)
    swapping = SwapEMAWeights()
    model = model_with_batch_norm()
    trainer = Trainer(model, optimizer=optim.SGD(model, lr=0.2), callbacks=[swapping, averaging, recorder], verbose=0)
    trainer_holder.append(trainer)
    trainer.fit(blobs(), val=blobs(16, seed=1), epochs=3, batch_size=8, seed=0)
    assert trainer.history["loss"] == plain.history["loss"]        # the training weights are untouched
    for name, value in plain.model.state_dict().items():
        np.testing.assert_array_equal(trainer.model.state_dict()[name], value, err_msg=name)
    expected = [val_loss_with(weights, model) for weights in at_validation]
    np.testing.assert_allclose(trainer.history["val_loss"], expected, rtol=1e-6)
    assert not np.allclose(trainer.history["val_loss"], plain.history["val_loss"])


def test_swap_on_epoch_shows_the_average_at_the_epoch_end_and_trains_on_the_model_weights():
    plain = fit([WeightAveraging(decay=0.8, every="iteration", swap_at_end=False)])
    averaging = WeightAveraging(decay=0.8, every="iteration", swap_at_end=False)
    seen = []
    probe = LambdaCallback(on_epoch_end=lambda e, logs: seen.append(
        all(np.array_equal(trainer.model.state_dict()[k], v)
            for k, v in averaging.averaged.module.state_dict().items()
            if k in dict(averaging.averaged.module.named_parameters()))))
    model = model_with_batch_norm()
    trainer = Trainer(model, optimizer=optim.SGD(model, lr=0.2),
                      callbacks=[averaging, SwapEMAWeights(swap_on_epoch=True), probe], verbose=0)
    trainer.fit(blobs(), val=blobs(16, seed=1), epochs=3, batch_size=8, seed=0)
    assert seen == [True, True, True]
    assert trainer.history["loss"] == plain.history["loss"]
    weights = dict(averaging.averaged.module.named_parameters())
    for name, value in weights.items():                  # after the last epoch the average stays in
        np.testing.assert_array_equal(trainer.model.state_dict()[name], np.asarray(value.data), err_msg=name)


def test_without_an_average_or_with_a_per_epoch_one_listed_after_it_fit_refuses():
    with pytest.raises(ValueError, match="no weight average to swap in"):
        fit([SwapEMAWeights()], epochs=1)
    with pytest.raises(ValueError, match="list the WeightAveraging first"):
        fit([SwapEMAWeights(swap_on_epoch=True), WeightAveraging(decay=0.9)], epochs=1)
    with pytest.raises(TypeError, match="source must be"):
        SwapEMAWeights(source="ema")

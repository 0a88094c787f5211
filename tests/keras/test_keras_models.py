"""lamina.keras models: Keras's tutorial code trains, delegates to the Trainer, saves and loads."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

import lamina
from lamina import keras, nn, optim
from lamina.keras import callbacks, layers
from lamina.keras.summary import summary_rows
from lamina.train import Trainer


def _digits():
    """The 8x8 digits, each pixel repeated 2 x 2 to 16 x 16 so that the tutorial's two
    conv/pool stages fit; (x, labels) with x in [0, 1] as NHWC."""
    data = load_digits()
    images = np.kron(data.images, np.ones((2, 2))) / 16.0
    return images[..., None].astype("float32"), data.target.astype(np.int64)


def _tutorial_model(input_shape, num_classes):
    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )


def test_mnist_convnet_recipe_trains_on_digits(capsys):
    x, labels = _digits()
    num_classes, input_shape = 10, (16, 16, 1)
    x_train, y_train = x[:1500], keras.utils.to_categorical(labels[:1500], num_classes)
    x_test, y_test = x[1500:], keras.utils.to_categorical(labels[1500:], num_classes)
    lamina.manual_seed(0)
    model = _tutorial_model(input_shape, num_classes)
    model.summary()
    assert "Total params: 21,386" in capsys.readouterr().out

    batch_size, epochs = 32, 10
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1, verbose=0)
    score = model.evaluate(x_test, y_test, verbose=0)
    print(f"digits convnet: test loss {score[0]:.4f}, test accuracy {score[1]:.4f}")

    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == list(range(epochs))
    assert len(history.history["val_accuracy"]) == epochs
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert score[1] > 0.85
    predicted = model.predict(x_test, verbose=0).argmax(axis=1)
    assert np.isclose((predicted == labels[1500:]).mean(), score[1])


def test_fit_gives_the_same_weights_as_the_trainer_itself():
    x, labels = _digits()
    x, labels = x[:256], labels[:256]

    lamina.manual_seed(3)
    model = _tutorial_model((16, 16, 1), 10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    lamina.manual_seed(7)
    history = model.fit(x, labels, epochs=1, verbose=0)

    lamina.manual_seed(3)
    plain = nn.Sequential(nn.Conv2D(32, 3, activation="relu", kernel_init="glorot_uniform"), nn.MaxPool2D(2),
                          nn.Conv2D(64, 3, activation="relu", kernel_init="glorot_uniform"), nn.MaxPool2D(2),
                          nn.Flatten(), nn.Dropout(0.5), nn.Dense(10, activation="softmax",
                                                                   kernel_init="glorot_uniform"))
    plain.build((None, 16, 16, 1))
    trainer = Trainer(plain, loss="categorical_cross_entropy", optimizer=optim.Adam(plain, lr=1e-3, eps=1e-7),
                      metrics=("accuracy",), verbose=0)
    lamina.manual_seed(7)
    logs = trainer.fit((x, labels), epochs=1, batch_size=32)

    ours, theirs = model.get_weights(), [np.asarray(v) for v in plain.state_dict().values()]
    assert len(ours) == len(theirs) == 6
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert history.history["loss"] == logs["loss"]
    assert history.history["accuracy"] == logs["accuracy"]


def _small_dense(seed=0, activation=None):
    lamina.manual_seed(seed)
    return keras.Sequential([layers.Dense(16, activation="relu", input_shape=(4,)),
                             layers.Dense(3, activation=activation)])


def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.normal(size=(n, 4)).astype("float32") + 2.0 * np.eye(3, 4, dtype="float32")[y]
    return x, y


def test_save_and_load_model_round_trip(tmp_path):
    x, y = _blobs()
    model = _small_dense()
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["acc"])
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras.Sequential)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)

    named = _small_dense(seed=1, activation="softmax")
    named.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    named.save(tmp_path / "named.keras")
    again = keras.models.load_model(tmp_path / "named.keras")
    assert isinstance(again.optimizer, optim.Adam) and again.optimizer.defaults["lr"] == 0.001
    again.fit(x, y, epochs=1, verbose=0)                      # compiled again from the saved names

    weights = tmp_path / "w.weights.h5"
    model.save_weights(weights)
    other = _small_dense(seed=5)
    other.load_weights(weights)
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


def test_functional_model_with_two_inputs():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(64, 3)).astype("float32"), rng.normal(size=(64, 2)).astype("float32")
    target = (a.sum(axis=1, keepdims=True) - b[:, :1]).astype("float32")
    first, second = keras.Input(shape=(3,), name="a"), keras.Input(shape=(2,), name="b")
    merged = layers.Concatenate()([layers.Dense(8, activation="tanh")(first), second])
    model = keras.Model(inputs=[first, second], outputs=layers.Dense(1)(merged))
    assert isinstance(model, keras.Functional) and isinstance(model, nn.Model)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="mse", metrics=["mae"])
    history = model.fit([a, b], target, epochs=20, batch_size=16, verbose=0)
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    loss, mae = model.evaluate([a, b], target, verbose=0)
    assert np.isclose(loss, np.mean((model.predict([a, b], verbose=0) - target) ** 2), rtol=1e-5)
    assert model.predict_on_batch([a[:5], b[:5]]).shape == (5, 1)


class _Classifier(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = layers.Dense(16, activation="relu")
        self.dropout = layers.Dropout(0.2)
        self.out = layers.Dense(3)
        self.modes = []

    def call(self, inputs, training=False):
        self.modes.append(training)
        return self.out(self.dropout(self.hidden(inputs)))


def test_subclassed_model_and_batch_methods():
    x, y = _blobs()
    lamina.manual_seed(0)
    model = _Classifier()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    before = model.test_on_batch(x, y, return_dict=True)
    for _ in range(40):
        loss, accuracy = model.train_on_batch(x, y)
    after = model.test_on_batch(x, y, return_dict=True)
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.8
    assert True in model.modes and False in model.modes       # training=True in steps, False in tests
    assert model.count_params() == 4 * 16 + 16 + 16 * 3 + 3
    assert len(model.layers) == 3


def test_callbacks_under_keras_names(tmp_path):
    x, y = _blobs()
    model = _small_dense()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    rates = []
    history = model.fit(x, y, epochs=4, verbose=0, validation_data=(x[:20], y[:20]), callbacks=[
        callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5),
        callbacks.ModelCheckpoint(str(tmp_path / "m{epoch}.keras")),
        callbacks.CSVLogger(tmp_path / "log.csv"),
        callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: rates.append(model.optimizer.lr)),
    ])
    assert rates == [0.05, 0.025, 0.0125, 0.00625]
    assert sorted(p.name for p in tmp_path.glob("m*.keras")) == [f"m{k}.keras" for k in range(1, 5)]
    assert "val_accuracy" in history.history
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("epoch,loss,accuracy")

    class StopAtTwo(callbacks.Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                self.model.stop_training = True

    assert model.fit(x, y, epochs=10, verbose=0, callbacks=[StopAtTwo()]).epoch == [0, 1]
    stopped = model.fit(x, y, epochs=10, verbose=0, callbacks=[callbacks.EarlyStopping(monitor="loss",
                                                                                       min_delta=10.0)])
    assert stopped.epoch == [0, 1]                            # patience 0: stops at the first non-improvement


def test_verbose_two_prints_a_line_per_epoch(capsys):
    x, y = _blobs(n=30)
    model = _small_dense()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=2)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Epoch")]
    assert len(lines) == 2 and lines[1].startswith("Epoch 2/2 - loss: ") and "accuracy: " in lines[1]


def test_uncompiled_model_predicts_but_does_not_fit():
    x, y = _blobs(n=10)
    model = _small_dense()
    assert model.predict(x, verbose=0).shape == (10, 3)
    with pytest.raises(RuntimeError, match="compiled first"):
        model.fit(x, y)


def test_sample_and_class_weights_weigh_the_cost():
    x, y = _blobs(n=32)
    model = _small_dense()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=1e-12),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    scores = model.predict(x, verbose=0)
    per_sample = -(scores[np.arange(32), y] - np.log(np.exp(scores).sum(axis=1)))
    weights = np.where(y == 0, 3.0, 1.0)
    history = model.fit(x, y, batch_size=32, shuffle=False, verbose=0, sample_weight=weights)
    np.testing.assert_allclose(history.history["loss"][0], (weights * per_sample).mean(), rtol=1e-5)
    history = model.fit(x, y, batch_size=32, shuffle=False, verbose=0, class_weight={0: 3.0})
    np.testing.assert_allclose(history.history["loss"][0], (weights * per_sample).mean(), rtol=1e-5)
    np.testing.assert_allclose(model.evaluate(x, y, sample_weight=weights, verbose=0),
                               (weights * per_sample).mean(), rtol=1e-5)


def test_validation_split_holds_out_the_last_samples_and_plateau_lowers_the_rate():
    x, y = _blobs(n=50)
    model = _small_dense()
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    plateau = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=100.0)
    history = model.fit(x, y, epochs=3, validation_split=0.2, verbose=0, callbacks=[plateau])
    assert model.optimizer.lr == pytest.approx(0.1 * 0.5**2)      # epoch 1 improves on infinity
    held_out = model.evaluate(x[40:], y[40:], verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(held_out["loss"], rel=1e-6)


def test_preprocessing_layer_inside_a_keras_model():
    x, y = _blobs(n=60)
    normalizer = layers.Normalization()
    normalizer.adapt(x * 10.0 + 5.0)
    model = keras.Sequential([keras.Input((4,)), normalizer, layers.Dense(3)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert model.fit(x * 10.0 + 5.0, y, epochs=2, verbose=0).history["loss"][1] < 5.0


def test_summary_of_a_multi_input_model_has_a_row_for_each_wrapping_layer():
    query, value = keras.Input((5, 8)), keras.Input((7, 6))
    attended = layers.MultiHeadAttention(2, 4, name="mha")(query, value)
    both_ways = layers.Bidirectional(layers.LSTM(3, return_sequences=True), name="bi")(attended)
    model = keras.Model([query, value], layers.Dense(2)(layers.GlobalAveragePooling1D()(both_ways)))
    rows = {name: (shape, params) for name, _, shape, params in summary_rows(model)}
    assert rows["mha"] == ("(None, 5, 8)", 8 * 8 + 6 * 8 + 6 * 8 + 8 * 8 + 3 * 8 + 8)
    assert rows["bi"] == ("(None, 5, 6)", 2 * (8 * 12 + 3 * 12 + 12))
    assert sum(params for _, params in rows.values()) == model.count_params()

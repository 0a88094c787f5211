import struct

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_file_loader, plugin_event_accumulator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow as tensorboard_crc
from tensorboard.util import tensor_util

import lamina
from lamina import models, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train import LambdaCallback, LearningRateScheduler, Trainer
from lamina.train.tensorboard import SummaryWriter, TensorBoard, crc32c, masked_crc32c


def event_files(directory):
    return sorted(directory.glob("events.out.tfevents.*"))


def raw_records(path):
    """The payloads of a TFRecord file, parsed by hand, every length and CRC checked with
    TensorBoard's own masked CRC32C."""
    data, position, payloads = path.read_bytes(), 0, []
    while position < len(data):
        header = data[position:position + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", data[position + 8:position + 12])
        assert header_crc == tensorboard_crc.masked_crc32c(header)
        payload = data[position + 12:position + 12 + length]
        (payload_crc,) = struct.unpack("<I", data[position + 12 + length:position + 16 + length])
        assert len(payload) == length and payload_crc == tensorboard_crc.masked_crc32c(payload)
        payloads.append(payload)
        position += 16 + length
    assert position == len(data)
    return payloads


def accumulator(directory):
    acc = EventAccumulator(str(directory), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def scalars(acc, tag):
    """(steps, values) of a scalar tag."""
    events = acc.Scalars(tag)
    return [e.step for e in events], [e.value for e in events]


def as_float32(values):
    return [float(np.float32(v)) for v in values]


# -- CRC32C and the record framing --------------------------------------------------------------------------------
def test_crc32c_gives_the_published_check_values():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    # RFC 3720 (iSCSI), appendix B.4
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E


def test_crc32c_and_its_mask_agree_with_tensorboards_implementation():
    rng = np.random.default_rng(0)
    for size in (1, 7, 8, 255, 1000):
        data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
        assert crc32c(data) == tensorboard_crc.crc32c(data)
        assert masked_crc32c(data) == tensorboard_crc.masked_crc32c(data)
    crc = 0xE3069283  # the mask by its definition: rotate right by 15 bits, add 0xa282ead8, modulo 2^32
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % 2**32


def test_records_are_framed_with_lengths_and_masked_crcs_that_tensorboard_checks(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("loss", 0.5, step=1)
        writer.add_histogram("weights", np.arange(10.0), step=1, bins=3)
    (path,) = event_files(tmp_path)
    payloads = raw_records(path)
    assert len(payloads) == 3
    assert Event.FromString(payloads[0]).file_version == "brain.Event:2"
    assert [bytes(r) for r in event_file_loader.RawEventFileLoader(str(path)).Load()] == payloads
    # a flipped bit in the second record's payload fails its CRC: the reader stops before it
    corrupt = bytearray(path.read_bytes())
    corrupt[len(payloads[0]) + 16 + 20] ^= 1
    path.write_bytes(bytes(corrupt))
    assert len(list(event_file_loader.RawEventFileLoader(str(path)).Load())) == 1


def test_every_written_field_decodes_with_tensorboards_protobuf_parser(tmp_path):
    values = np.random.default_rng(1).standard_normal((6, 5)).astype(np.float32)
    with SummaryWriter(tmp_path) as writer:
        writer.add_scalar("métrique/coût", 1 / 3, step=0, walltime=1_700_000_000.123456)
        writer.add_scalar("big", -2.5e38, step=2**40, walltime=12.0)
        writer.add_scalar("negative step", 7, step=-3, walltime=13.5)
        writer.add_histogram("layer.weight", values, step=9, bins=4, walltime=14.25)
    first, *events = [Event.FromString(p) for p in raw_records(event_files(tmp_path)[0])]
    assert first.file_version == "brain.Event:2" and not first.HasField("summary")
    expected = [("métrique/coût", 0, 1_700_000_000.123456, 1 / 3), ("big", 2**40, 12.0, -2.5e38),
                ("negative step", -3, 13.5, 7.0)]
    for event, (tag, step, wall_time, value) in zip(events[:3], expected, strict=True):
        (summary_value,) = event.summary.value
        assert (summary_value.tag, event.step, event.wall_time) == (tag, step, wall_time)
        assert summary_value.WhichOneof("value") == "simple_value"
        assert summary_value.simple_value == np.float32(value)
        assert summary_value.simple_value == pytest.approx(value, rel=1e-7)
    (histogram_value,) = events[3].summary.value
    histogram = histogram_value.histo
    wide = values.astype(np.float64)
    counts, edges = np.histogram(values, bins=4)
    assert (histogram_value.tag, events[3].step, events[3].wall_time) == ("layer.weight", 9, 14.25)
    assert (histogram.min, histogram.max, histogram.num) == (wide.min(), wide.max(), 30.0)
    assert histogram.sum == pytest.approx(wide.sum(), rel=1e-12)
    assert histogram.sum_squares == pytest.approx(np.sum(wide**2), rel=1e-12)
    np.testing.assert_array_equal(histogram.bucket_limit, edges[1:].astype(np.float64))
    np.testing.assert_array_equal(histogram.bucket, counts)


# -- SummaryWriter ------------------------------------------------------------------------------------------------
def test_summary_writer_scalars_round_trip_through_tensorboards_readers(tmp_path):
    steps, values = [1, 2, 3, 0, 4], [0.75, 0.5, 0.125, 1.0, np.float64(0.1)]
    with SummaryWriter(tmp_path) as writer:
        for step, value in zip(steps, values, strict=True):
            writer.add_scalar("loss", value, step)
    acc = accumulator(tmp_path)
    assert acc.Tags()["scalars"] == ["loss"]
    # the file version makes TensorBoard keep a step that goes back (no purge as after a restart)
    assert scalars(acc, "loss") == (steps, as_float32(values))
    # the reader behind TensorBoard's pages turns simple values into scalar tensors
    plugin = plugin_event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    plugin.Reload()
    tensors = plugin.Tensors("loss")
    assert [e.step for e in tensors] == steps
    assert [float(tensor_util.make_ndarray(e.tensor_proto)) for e in tensors] == as_float32(values)


@pytest.mark.parametrize("values", [np.random.default_rng(2).standard_normal((7, 9)).astype(np.float32),
                                    np.full(5, 3.0), np.arange(-4, 20)])
def test_summary_writer_histograms_round_trip(tmp_path, values):
    with SummaryWriter(tmp_path) as writer:
        writer.add_histogram("w", values, step=1, bins=12)
        writer.add_histogram("w", values * 2, step=5)
    events = accumulator(tmp_path).Histograms("w")
    assert [e.step for e in events] == [1, 5]
    for event, data, bins in zip(events, (values, values * 2), (12, 30), strict=True):
        histogram, wide = event.histogram_value, np.asarray(data, dtype=np.float64)
        counts, edges = np.histogram(data, bins=bins)
        assert (histogram.min, histogram.max, histogram.num) == (wide.min(), wide.max(), wide.size)
        assert histogram.sum == pytest.approx(wide.sum(), rel=1e-12, abs=1e-12)
        assert histogram.sum_squares == pytest.approx(np.sum(wide**2), rel=1e-12)
        np.testing.assert_array_equal(histogram.bucket_limit, edges[1:])
        np.testing.assert_array_equal(histogram.bucket, counts)
        assert sum(histogram.bucket) == wide.size


def test_summary_writers_opened_together_write_separate_files(tmp_path):
    with SummaryWriter(tmp_path) as first, SummaryWriter(tmp_path) as second:
        first.add_scalar("a", 1.0, 1)
        second.add_scalar("b", 2.0, 1)
    assert first.path != second.path
    assert len(event_files(tmp_path)) == 2
    acc = accumulator(tmp_path)
    assert scalars(acc, "a") == ([1], [1.0]) and scalars(acc, "b") == ([1], [2.0])


def test_summary_writer_flushes_keeps_the_file_open_and_closes(tmp_path):
    writer = SummaryWriter(tmp_path / "new" / "run")
    writer.add_scalar("loss", 0.5, 1)
    writer.flush()
    assert scalars(accumulator(tmp_path / "new" / "run"), "loss") == ([1], [0.5])
    writer.add_scalar("loss", 0.25, 2)
    writer.close()
    writer.close()
    assert writer.closed
    assert scalars(accumulator(tmp_path / "new" / "run"), "loss") == ([1, 2], [0.5, 0.25])
    with pytest.raises(ValueError, match="SummaryWriter: .* is closed"):
        writer.add_scalar("loss", 0.125, 3)


@pytest.mark.parametrize("call, message", [
    (lambda w: w.add_scalar("", 1.0, 0), "tag must be a non-empty string, got ''"),
    (lambda w: w.add_scalar("x", 1.0, 1.5), "step must be an integer .* got 1.5"),
    (lambda w: w.add_scalar("x", 1.0, True), "step must be an integer .* got True"),
    (lambda w: w.add_scalar("x", 1.0, 2**63), f"got {2**63}"),
    (lambda w: w.add_scalar("x", "high", 0), "value must be real numbers, got str"),
    (lambda w: w.add_scalar("x", [1.0, 2.0], 0), r"value must be one number, .* shape \(2,\)"),
    (lambda w: w.add_scalar("x", 1.0, 0, walltime=float("nan")), "walltime must be a finite number"),
    (lambda w: w.add_histogram("h", [], 0), "values of 'h' are empty"),
    (lambda w: w.add_histogram("h", [1.0, np.nan, np.inf], 0), "values of 'h' contain 2 NaN or infinite"),
    (lambda w: w.add_histogram("h", [1.0], 0, bins=0), "bins must be a positive integer, got 0"),
])
def test_summary_writer_rejects_bad_arguments(tmp_path, call, message):
    with SummaryWriter(tmp_path) as writer, pytest.raises(ValueError, match=message):
        call(writer)


# -- the callback in a real fit loop ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255.0
    return train_val_test_split(x, y, val=0.2, test=0.2, seed=0)


def mlp(seed=0):
    lamina.manual_seed(seed)
    return models.mlp(hidden=(16,), num_classes=10, input_shape=(64,))


def halving(epoch):
    return 0.02 * 0.5**epoch


@pytest.fixture(scope="module")
def logged_run(digits, tmp_path_factory):
    """Three epochs on digits with validation, histograms every 2 epochs, batch scalars every 5
    mini-batches and a learning rate halved each epoch; the weights are kept at each epoch end."""
    train, val, _ = digits
    log_dir = tmp_path_factory.mktemp("logs")
    model = mlp()
    snapshots = []
    board = TensorBoard(log_dir, histogram_freq=2, update_freq=5)
    keep = LambdaCallback(on_epoch_end=lambda epoch, logs: snapshots.append(
        {name: p.numpy().astype(np.float64) for name, p in model.named_parameters()}))
    trainer = Trainer(model, "categorical_cross_entropy", optim.Adam(model.parameters(), lr=0.02),
                      metrics=("accuracy",), callbacks=[board, LearningRateScheduler(halving), keep], verbose=0)
    history = trainer.fit(train, val=val, epochs=3, batch_size=64, seed=0)
    return log_dir, board, history, snapshots, len(train[0])


def test_callback_writes_keras_layout_with_epoch_scalars_equal_to_the_history(logged_run):
    log_dir, board, history, _, _ = logged_run
    assert sorted(p.name for p in log_dir.iterdir()) == ["train", "validation"]
    assert all(len(event_files(log_dir / run)) == 1 for run in ("train", "validation"))
    assert board._writers == {}  # closed at the end of training
    train, validation = accumulator(log_dir / "train"), accumulator(log_dir / "validation")
    assert set(train.Tags()["scalars"]) == {"epoch_loss", "epoch_accuracy", "epoch_samples_per_s",
                                            "epoch_learning_rate", "batch_loss", "batch_accuracy"}
    assert set(validation.Tags()["scalars"]) == {"epoch_loss", "epoch_accuracy"}
    for name in ("loss", "accuracy"):
        assert scalars(train, f"epoch_{name}") == ([0, 1, 2], as_float32(history[name]))
        assert scalars(validation, f"epoch_{name}") == ([0, 1, 2], as_float32(history[f"val_{name}"]))
    # the run really trained: the logged costs fall and the validation accuracy ends high
    losses = scalars(train, "epoch_loss")[1]
    assert losses[0] > losses[1] > losses[2]
    assert scalars(validation, "epoch_accuracy")[1][-1] > 0.7  # 0.84 here; chance is 0.1


def test_callback_writes_the_learning_rate_and_every_nth_batch(logged_run):
    log_dir, _, history, _, samples = logged_run
    train = accumulator(log_dir / "train")
    assert scalars(train, "epoch_learning_rate") == ([0, 1, 2], as_float32(halving(e) for e in range(3)))
    iterations = 3 * -(-samples // 64)
    assert len(history.iteration["loss"]) == iterations
    steps, values = scalars(train, "batch_loss")
    assert steps == list(range(5, iterations + 1, 5))
    assert values == as_float32(history.iteration["loss"][step - 1] for step in steps)


def test_callback_writes_parameter_histograms_every_k_epochs(logged_run):
    log_dir, _, _, snapshots, _ = logged_run
    train = accumulator(log_dir / "train")
    names = {"dense.weight", "dense.bias", "dense_1.weight", "dense_1.bias"}
    assert set(snapshots[0]) == names and set(train.Tags()["histograms"]) == names
    for name in names:
        events = train.Histograms(name)
        assert [e.step for e in events] == [0, 2]
        for event, epoch in zip(events, (0, 2), strict=True):
            histogram, weights = event.histogram_value, snapshots[epoch][name]
            assert (histogram.min, histogram.max, histogram.num) == (weights.min(), weights.max(), weights.size)
            assert histogram.sum == pytest.approx(weights.sum(), rel=1e-9, abs=1e-9)
            np.testing.assert_array_equal(histogram.bucket, np.histogram(weights, bins=30)[0])
    assert not np.array_equal(snapshots[0]["dense.weight"], snapshots[2]["dense.weight"])


class NoLearningRate:
    """An optimizer without an ``lr`` attribute (it delegates the updates to SGD)."""

    def __init__(self, model):
        self.sgd = optim.SGD(model.parameters(), lr=0.1)

    def zero_grad(self):
        self.sgd.zero_grad()

    def step(self):
        self.sgd.step()


@pytest.mark.parametrize("update_freq, batch_steps", [("epoch", []), ("batch", [1, 2, 3, 4, 5, 6]), (4, [4])])
def test_callback_update_freq_without_validation_or_learning_rate(digits, tmp_path, update_freq, batch_steps):
    (x, y), _, _ = digits
    model = mlp()
    board = TensorBoard(str(tmp_path), update_freq=update_freq)
    trainer = Trainer(model, "categorical_cross_entropy", NoLearningRate(model), callbacks=[board], verbose=0)
    trainer.fit((x[:96], y[:96]), epochs=2, batch_size=32, seed=0)
    assert [p.name for p in tmp_path.iterdir()] == ["train"]
    train = accumulator(tmp_path / "train")
    assert "epoch_learning_rate" not in train.Tags()["scalars"] and train.Tags()["histograms"] == []
    assert scalars(train, "epoch_loss")[0] == [0, 1]
    if batch_steps:
        assert scalars(train, "batch_loss") == (batch_steps, as_float32(
            trainer.history.iteration["loss"][s - 1] for s in batch_steps))
    else:
        assert "batch_loss" not in train.Tags()["scalars"]


@pytest.mark.parametrize("arguments, message", [
    ({"histogram_freq": -1}, "TensorBoard: histogram_freq must be a non-negative integer .* got -1"),
    ({"histogram_freq": 1.5}, "TensorBoard: histogram_freq .* got 1.5"),
    ({"histogram_freq": True}, "TensorBoard: histogram_freq .* got True"),
    ({"update_freq": 0}, "TensorBoard: update_freq must be 'epoch', 'batch' or a positive integer .* got 0"),
    ({"update_freq": "step"}, "TensorBoard: update_freq .* got 'step'"),
    ({"update_freq": 2.0}, "TensorBoard: update_freq .* got 2.0"),
    ({"log_dir": 3}, "TensorBoard: log_dir must be a path, got 3"),
])
def test_callback_rejects_bad_arguments(tmp_path, arguments, message):
    with pytest.raises(ValueError, match=message):
        TensorBoard(**{"log_dir": tmp_path, **arguments})

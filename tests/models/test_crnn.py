"""CRNN: frame counts, a PyTorch re-implementation (outputs, CTC loss and every gradient), padded
batches, errors, and learning to read synthetic digit lines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina import optim
from lamina.data import load_digits
from lamina.models import CRNN
from lamina.vision import character_error_rate, collate_text_lines, synthetic_text_lines, word_accuracy

DIGITS = "0123456789"
TINY = dict(height=8, hidden=3, channels=(4, 6), pools=((2, 2), (2, 1)))


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


@pytest.mark.parametrize("width", [4, 7, 16, 33, 50])
def test_frames_are_a_quarter_of_the_width(width):
    model = CRNN(11, height=32, hidden=4, channels=(4, 4, 4, 4, 4, 4))
    scores = model(np.zeros((2, 32, width, 1), dtype=np.float32))
    assert scores.shape == (2, width // 4, 11)
    assert model.output_lengths([width]).tolist() == [width // 4]


def _torch_crnn(model: CRNN):
    """The same network in PyTorch (NCHW convolutions, torch's LSTMs), holding the model's weights."""
    tensors = {}

    def weight(name, array_fn=lambda a: a):
        tensors[name] = torch.tensor(array_fn(dict(model.named_parameters())[name].numpy()), requires_grad=True)
        return tensors[name]

    def block(prefix, x, pool):
        conv = dict(model.named_parameters())[f"{prefix}.conv.weight"].numpy()
        padding = (conv.shape[1] // 2, conv.shape[2] // 2) if conv.shape[1] == 3 else 0
        x = torch.nn.functional.conv2d(x, weight(f"{prefix}.conv.weight", lambda w: w.transpose(0, 3, 1, 2)),
                                       padding=padding)
        x = torch.nn.functional.batch_norm(x, None, None, weight(f"{prefix}.norm.weight"),
                                           weight(f"{prefix}.norm.bias"), training=True, eps=1e-5)
        x = torch.relu(x)
        return torch.nn.functional.max_pool2d(x, pool) if pool else x

    def lstm(prefix, x):
        outputs = []
        for direction in ("forward_layer", "backward_layer"):
            kernel, recurrent, bias, recurrent_bias = (
                weight(f"{prefix}.{direction}.{n}") for n in ("kernel", "recurrent_kernel", "bias", "recurrent_bias"))
            steps = x if direction == "forward_layer" else x.flip(1)
            h = c = torch.zeros(x.shape[0], recurrent.shape[0], dtype=x.dtype)
            states = []
            for t in range(steps.shape[1]):
                i, f, g, o = (steps[:, t] @ kernel + h @ recurrent + bias + recurrent_bias).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                states.append(h)
            out = torch.stack(states, 1)
            outputs.append(out if direction == "forward_layer" else out.flip(1))
        return torch.cat(outputs, -1)

    def forward(images_nhwc):
        x = images_nhwc.permute(0, 3, 1, 2)
        for k, pool in enumerate(model.pools):
            x = block(f"blocks.{k}", x, pool)
        x = block("collapse", x, None)                  # (N, F, 1, T)
        x = x[:, :, 0].permute(0, 2, 1)
        x = lstm("rnn.1", lstm("rnn.0", x))
        return x @ weight("classifier.weight") + weight("classifier.bias")

    return forward, tensors


def test_matches_a_torch_reimplementation_in_float64(f64):
    lamina.manual_seed(3)
    model = CRNN(5, **TINY)
    images = np.random.default_rng(0).random((3, 8, 16, 1))
    targets = np.array([[1, 2], [3, 3], [4, 0]])
    lengths = np.array([2, 2, 1])
    loss = model.loss(images, targets, lengths)
    loss.backward()
    scores = model(images).numpy()

    forward, tensors = _torch_crnn(model)
    torch_scores = forward(torch.tensor(images))
    log_probs = torch.log_softmax(torch_scores, -1).transpose(0, 1)
    torch_loss = torch.nn.functional.ctc_loss(log_probs, torch.tensor(targets), torch.full((3,), 8),
                                              torch.tensor(lengths), blank=0, reduction="mean")
    torch_loss.backward()
    np.testing.assert_allclose(scores, torch_scores.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(loss.numpy(), torch_loss.detach().numpy(), rtol=1e-10)
    assert len(tensors) == len(list(model.parameters()))
    for name, parameter in model.named_parameters():
        expected = tensors[name].grad.numpy()
        if name.endswith("conv.weight"):
            expected = expected.transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(parameter.grad), expected, rtol=1e-8, atol=1e-12, err_msg=name)


def test_a_padded_line_scores_as_it_does_alone():
    lamina.manual_seed(0)
    model = CRNN(11, charset=DIGITS, **TINY).eval()
    images, texts = synthetic_text_lines(3, length_range=(2, 4), height=8, scale=1, seed=1)
    batch, widths, _ = collate_text_lines(list(zip(images, texts)))
    assert len(set(widths.tolist())) > 1
    scores = model(batch, widths).numpy()
    for n, image in enumerate(images):
        alone = model(image[None]).numpy()[0]
        frames = int(model.output_lengths([widths[n]])[0])
        assert alone.shape[0] == frames
        np.testing.assert_allclose(scores[n, :frames], alone, rtol=1e-4, atol=1e-5)
    assert model.decode(batch, widths) == [model.decode(image[None])[0] for image in images]


def test_decoding_reads_the_argmax_path_through_the_charset():
    lamina.manual_seed(0)
    model = CRNN(11, charset=DIGITS, **TINY).eval()
    images = np.random.default_rng(0).random((2, 8, 24, 1)).astype(np.float32)
    scores = model(images).numpy()
    best = scores.argmax(-1)
    expected = []
    for path in best:
        kept = [k for t, k in enumerate(path) if k != 0 and (t == 0 or k != path[t - 1])]
        expected.append("".join(DIGITS[k - 1] for k in kept))
    assert model.decode(images) == expected
    beam = model.decode(images, method="beam", beam_width=4)
    assert len(beam) == 2 and all(set(text) <= set(DIGITS) for text in beam)


def test_errors_name_the_model_and_the_values():
    model = CRNN(11, charset=DIGITS, **TINY)
    with pytest.raises(lamina.errors.ShapeError, match=r"CRNN.*height=8.*\(1, 10, 16, 1\)"):
        model(np.zeros((1, 10, 16, 1), dtype=np.float32))
    with pytest.raises(ValueError, match=r"CharsetMapper.encode.*'12a'.*\['a'\]"):
        model.loss(np.zeros((1, 8, 16, 1), dtype=np.float32), ["12a"])
    with pytest.raises(ValueError, match="CRNN.loss: line 1 gives 2 frames but its target has 3 labels"):
        model.loss(np.zeros((2, 8, 16, 1), dtype=np.float32), ["1", "123"], widths=[16, 4])
    with pytest.raises(ValueError, match="needs num_classes = 11"):
        CRNN(10, charset=DIGITS, **TINY)
    with pytest.raises(ValueError, match="below 1 pixel"):
        CRNN(11, height=2, channels=(4, 4), pools=((2, 2), (2, 1)))
    with pytest.raises(ValueError, match="at least one frame"):
        model(np.zeros((2, 8, 16, 1), dtype=np.float32), widths=[16, 1])


def test_learns_to_read_digit_lines_in_seconds():
    """Lines of 3-5 digits from the first 1400 digit images, held-out lines from the other 397
    (other writers' glyphs). Three epochs of 1200 lines (the last at a fifth of the learning rate),
    about 2.5 s: held-out CER 6-11% and line accuracy 0.60-0.76 on seeds 0-3."""
    lamina.manual_seed(0)
    images, labels = load_digits(size=8)
    lines = dict(height=8, scale=1, spacing_range=(0, 2))
    train = synthetic_text_lines(1200, (images[:1400], labels[:1400]), seed=0, **lines)
    test = synthetic_text_lines(100, (images[1400:], labels[1400:]), seed=1, **lines)
    model = CRNN(11, height=8, hidden=24, channels=(16, 32, 48), pools=((2, 2), (2, 2), (2, 1)), charset=DIGITS)
    optimizer = optim.Adam(model.parameters(), lr=0.005)
    samples = list(zip(*train))
    rng = np.random.default_rng(0)
    for epoch in range(3):
        optimizer.lr = 0.005 if epoch < 2 else 0.001
        order = rng.permutation(len(samples))
        for first in range(0, len(order), 16):
            batch, widths, texts = collate_text_lines([samples[k] for k in order[first:first + 16]])
            optimizer.zero_grad()
            model.loss(batch, texts, widths=widths).backward()
            optimizer.step()
    model.eval()
    batch, widths, texts = collate_text_lines(list(zip(*test)))
    with lamina.no_grad():
        predicted = model.decode(batch, widths)
    cer = character_error_rate(predicted, texts)
    assert cer < 0.2, cer
    assert word_accuracy(predicted, texts) > 0.4

"""Tacotron 2: location-sensitive attention against a float64 torch rewrite of its formula,
its gradients, the teacher-forced decoder against step-by-step decoding, padding, and a toy
text-to-speech task where the attention learns the diagonal alignment and synthesis stops at
the right frame."""

from __future__ import annotations

import numpy as np
import torch

import lamina
from helpers import assert_close, run_readme_section
from lamina import optim
from lamina.models import LocationSensitiveAttention, Tacotron2, tacotron2_loss


def _attention_inputs(seed=0, n=2, steps=5, query_dim=3, memory_dim=4):
    rng = np.random.default_rng(seed)
    cumulative = rng.uniform(0, 1.5, (n, steps))
    mask = np.ones((n, steps), bool)
    mask[1, 3:] = False
    return rng.normal(size=(n, query_dim)), rng.normal(size=(n, steps, memory_dim)), cumulative, mask


def _built_attention(inputs, dtype=np.float64):
    lamina.manual_seed(0)
    attention = LocationSensitiveAttention(attention_dim=6, location_filters=3, location_kernel=3)
    attention(*(lamina.tensor(a, dtype=dtype) for a in inputs[:3]), mask=inputs[3])
    rng = np.random.default_rng(9)
    for param in attention.parameters():       # random, non-zero values for every weight (the bias too)
        param.data = rng.normal(scale=0.7, size=param.shape).astype(dtype)
    return attention


def _torch_attention(params: dict, query, memory, cumulative, mask):
    """e_ij = w^T tanh(W s_i + V h_j + U (F * a)_j + b), masked softmax over j, c_i = sum_j alpha_ij h_j."""
    conv = params["location_conv.weight"].permute(0, 2, 1)                      # (K, f, 1) -> torch's (K, 1, f)
    location = torch.nn.functional.conv1d(cumulative[:, None], conv, padding=conv.shape[-1] // 2)
    location = location.transpose(1, 2) @ params["location_layer.weight"]
    processed = memory @ params["memory_layer.weight"] + params["memory_layer.bias"]
    hidden = torch.tanh(processed + (query @ params["query_layer.weight"])[:, None] + location)
    energies = (hidden @ params["energy_layer.weight"])[..., 0]
    weights = torch.softmax(energies.masked_fill(~torch.from_numpy(mask), float("-inf")), dim=-1)
    return (weights[:, :, None] * memory).sum(dim=1), weights


def test_location_sensitive_attention_matches_a_torch_rewrite_in_values_and_gradients():
    inputs = _attention_inputs()
    attention = _built_attention(inputs)
    named = dict(attention.named_parameters())
    assert sorted(named) == ["energy_layer.weight", "location_conv.weight", "location_layer.weight",
                             "memory_layer.bias", "memory_layer.weight", "query_layer.weight"]
    ours = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in inputs[:3]]
    theirs = [torch.tensor(a, requires_grad=True) for a in inputs[:3]]
    torch_params = {k: torch.tensor(p.data, requires_grad=True) for k, p in named.items()}
    context, weights = attention(*ours, mask=inputs[3])
    context_t, weights_t = _torch_attention(torch_params, *theirs, inputs[3])
    assert_close(context.numpy(), context_t.detach().numpy(), 1e-12, "context")
    assert_close(weights.numpy(), weights_t.detach().numpy(), 1e-12, "weights")
    assert (weights.numpy()[1, 3:] == 0).all() and np.allclose(weights.numpy().sum(-1), 1)
    rng = np.random.default_rng(3)
    up_c, up_w = rng.normal(size=context_t.shape), rng.normal(size=weights_t.shape)
    up_c_l, up_w_l = lamina.tensor(up_c, dtype=np.float64), lamina.tensor(up_w, dtype=np.float64)
    ((context * up_c_l).sum() + (weights * up_w_l).sum()).backward()
    ((context_t * torch.tensor(up_c)).sum() + (weights_t * torch.tensor(up_w)).sum()).backward()
    for name, a, b in zip(("query", "memory", "cumulative weights"), ours, theirs):
        assert_close(a.grad, b.grad.numpy(), 1e-11, f"gradient of the {name}")
    for key, param in named.items():
        assert_close(param.grad, torch_params[key].grad.numpy(), 1e-11, f"gradient of {key}")
    assert np.abs(ours[2].grad).max() > 1e-3                 # the location features do reach the output


def test_location_sensitive_attention_gradcheck():
    inputs = _attention_inputs(seed=1)
    attention = _built_attention(inputs)

    def joined(query, memory, cumulative):
        return lamina.functional.concat(list(attention(query, memory, cumulative, mask=inputs[3])), axis=-1)

    tensors = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in inputs[:3]]
    assert lamina.gradcheck(joined, *tensors)
    assert lamina.gradcheck(lambda *_: joined(*tensors), *attention.parameters())


def _tiny_model(prenet_dropout=0.5, frames_per_step=2):
    return Tacotron2(6, n_mels=3, embed_dim=6, encoder_kernel_size=3, prenet_units=5, prenet_dropout=prenet_dropout,
                     attention_rnn_units=7, decoder_units=6, attention_dim=4, location_filters=2, location_kernel=3,
                     frames_per_step=frames_per_step, postnet_channels=4, postnet_layers=3)


def _perturbed(model):
    rng = np.random.default_rng(4)
    for param in model.parameters():
        param.data = (param.data + 0.2 * rng.normal(size=param.shape)).astype(param.dtype)
    return model


def test_teacher_forcing_equals_step_by_step_decoding_with_the_same_prenet_masks():
    lamina.manual_seed(0)
    model = _tiny_model()
    text = np.array([[1, 2, 3, 4], [5, 1, 2, 0]])
    mels = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
    model(text, mels)
    model = _perturbed(model).eval()
    masks = model.prenet_masks(2, 3)
    out = model(text, mels, prenet_masks=masks)
    assert out["mel"].shape == (2, 6, 3) and out["stop_logits"].shape == (2, 6) and out["alignments"].shape == (2, 3, 4)
    memory, token_mask = model.encode(text)
    state = model.initial_state(memory, token_mask)
    previous = np.zeros((2, 3), np.float32)
    for i in range(3):
        frames, stop, weights, state = model.decode_step(previous, state, (masks[0][:, i], masks[1][:, i]))
        assert np.array_equal(frames.numpy(), out["mel"].numpy()[:, 2 * i:2 * i + 2])
        assert np.array_equal(stop.numpy(), out["stop_logits"].numpy()[:, 2 * i:2 * i + 2])
        assert np.array_equal(weights.numpy(), out["alignments"].numpy()[:, i])
        previous = mels[:, 2 * i + 1]
    assert (out["alignments"].numpy()[1, :, 3] == 0).all()            # the padded token is never attended
    other = model(text, mels, prenet_masks=model.prenet_masks(2, 3))
    assert not np.allclose(other["mel"].numpy(), out["mel"].numpy())  # the pre-net's dropout is on in evaluation


def test_padding_changes_no_valid_output():
    lamina.manual_seed(1)
    model = _tiny_model(frames_per_step=1)
    rng = np.random.default_rng(2)
    text = np.array([[1, 2, 3, 4, 5], [3, 4, 0, 0, 0]])
    mels = rng.normal(size=(2, 7, 3)).astype(np.float32)
    model(text, mels)
    model = _perturbed(model).eval()
    masks = model.prenet_masks(2, 7)
    batch = model(text, mels, prenet_masks=masks, mel_lengths=[7, 4])
    alone = model(text[1:, :2], mels[1:, :4], prenet_masks=tuple(m[1:, :4] for m in masks))
    for key in ("mel", "mel_postnet", "stop_logits"):
        assert_close(batch[key].numpy()[1, :4], alone[key].numpy()[0], 1e-5, key)
    assert_close(batch["alignments"].numpy()[1, :4, :2], alone["alignments"].numpy()[0], 1e-5, "alignments")


def test_model_gradcheck_in_float64():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(2)
    model = _tiny_model(frames_per_step=1)
    text = np.array([[1, 2, 3], [4, 5, 0]])
    mels = np.random.default_rng(3).normal(size=(2, 3, 3))
    model(text, mels)
    model.eval()
    masks = model.prenet_masks(2, 3)

    def loss(*_):
        return tacotron2_loss(model(text, mels, prenet_masks=masks, mel_lengths=[3, 2]), mels, [3, 2])["loss"]

    named = dict(model.named_parameters())
    # one or more weights of every part (all of them would take half a minute)
    checked = ["embedding.weight", "encoder_convs.2.bias", "encoder_lstm.backward_layer.recurrent_kernel",
               "prenet.0.weight", "attention_rnn.recurrent_bias", "attention.query_layer.weight",
               "attention.memory_layer.bias", "attention.location_conv.weight", "attention.location_layer.weight",
               "attention.energy_layer.weight", "decoder_rnn.bias", "frame_projection.weight", "stop_projection.weight",
               "postnet.convs.2.bias"]
    assert lamina.gradcheck(loss, *(named[key] for key in checked))


# -- a toy text-to-speech task ----------------------------------------------------------------
VOCAB, N_MELS, DURATION = 5, 4, 2
PATTERNS = np.random.default_rng(5).uniform(-1, 1, (VOCAB, N_MELS)).astype(np.float32)


def _toy_batch(rng, n, longest=4):
    """Rows of 2..``longest`` tokens; each token's frame pattern held for DURATION frames."""
    lengths = rng.integers(2, longest + 1, n)
    text = np.where(np.arange(longest) < lengths[:, None], rng.integers(1, VOCAB, (n, longest)), 0)
    frames = np.arange(longest * DURATION) < (lengths * DURATION)[:, None]
    return text, (np.repeat(PATTERNS[text], DURATION, axis=1) * frames[..., None]), lengths * DURATION


def _synthesis_figures(model, text, mels, mel_lengths) -> tuple[float, float, float]:
    """(mean squared error of the generated frames over the target frames, the fraction of
    steps whose attention peaks on the token being spoken, mean |generated - true length|)."""
    out = model.generate(text, max_steps=12)
    generated, alignments = out["mel_postnet"], out["alignments"]
    errors, diagonal = [], []
    for i, length in enumerate(mel_lengths):
        frames = np.zeros_like(mels[i])
        kept = min(length, generated.shape[1])
        frames[:kept] = generated[i, :kept]
        errors.append(((frames - mels[i])[:length] ** 2).mean())
        steps = min(length, alignments.shape[1])
        diagonal.append((alignments[i, :steps].argmax(-1) == np.arange(steps) // DURATION).mean())
    return float(np.mean(errors)), float(np.mean(diagonal)), float(np.abs(out["lengths"] - mel_lengths).mean())


def test_learns_a_toy_tts_with_a_diagonal_alignment_and_stops_at_the_right_frame():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    model = Tacotron2(VOCAB, n_mels=N_MELS, embed_dim=16, prenet_units=16, attention_rnn_units=32, decoder_units=32,
                      attention_dim=16, location_filters=4, location_kernel=5, postnet_channels=8, postnet_layers=3,
                      dropout=0.1)
    test_text, test_mels, test_lengths = _toy_batch(rng, 100)
    model(test_text[:2], test_mels[:2])
    error_0, diagonal_0, _ = _synthesis_figures(model, test_text, test_mels, test_lengths)
    opt = optim.Adam(model, lr=0.01)
    for _ in range(200):
        text, mels, lengths = _toy_batch(rng, 32)
        cost = tacotron2_loss(model(text, mels, mel_lengths=lengths), mels, lengths)["loss"]
        opt.zero_grad()
        cost.backward()
        opt.step()
    error, diagonal, length_error = _synthesis_figures(model, test_text, test_mels, test_lengths)
    assert diagonal_0 < 0.5 and diagonal > 0.85
    assert error < 0.2 * error_0
    assert length_error < 0.5
    assert model.training                                              # generate put the mode back


def test_readme_example():
    printed, names = run_readme_section("Tacotron 2")
    assert names["out"]["mel_postnet"].shape == (2, 8, 4)
    assert printed.split() == ["(2,", "4,", "3)", "2", "(2,)"]
    frames, lengths = names["speech"]["mel_postnet"].shape[1], names["speech"]["lengths"]
    assert frames - 2 < lengths.max() <= frames                 # the loop ran until the last row stopped

"""CLAP: CLIP's text tower and loss with a log-mel front end and a CNN14-style audio tower. The
front end against the mel spectrogram function, a CNN14 block against a float64 PyTorch rewrite,
the loss against CLIP's and a rewrite, saving, and a tiny model learning to caption synthetic
sounds (tones, chirps, noise, clicks) well enough to classify and retrieve new clips."""

import numpy as np
import pytest
import torch

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import models, optim
from lamina.errors import ShapeError
from lamina.models.clip import clip_loss
from lamina.text import BPETokenizer

RATE, SAMPLES = 8000, 2048
FRONT_END = {"sample_rate": RATE, "n_fft": 256, "hop_length": 64, "n_mels": 32, "f_min": 0.0}


def test_log_mel_front_end_is_the_log_of_the_mel_spectrogram():
    x = np.random.default_rng(0).normal(size=(2, 1000))
    front = models.LogMelFrontEnd(8000, n_fft=128, hop_length=32, n_mels=20, f_min=30.0, f_max=3500.0, eps=1e-5)
    got = front(lamina.tensor(x, dtype=np.float64)).numpy()
    mel = F.mel_spectrogram(lamina.tensor(x, dtype=np.float64), 8000, n_fft=128, hop_length=32, f_min=30.0,
                            f_max=3500.0, n_mels=20).numpy()
    assert got.shape == (2, 1000 // 32 + 1, 20)
    np.testing.assert_allclose(got, np.log(mel + 1e-5).transpose(0, 2, 1), rtol=1e-12, atol=1e-12)


def _torch_block(x, w1, g1, b1, w2, g2, b2):
    """A CNN14 block in PyTorch, NCHW inside: conv-bn-relu twice (batch statistics), 2x2 average pool."""
    def conv_bn_relu(h, w, g, b):
        h = torch.nn.functional.conv2d(h, w.permute(0, 3, 1, 2), padding=1)
        return torch.relu(torch.nn.functional.batch_norm(h, None, None, g, b, training=True, eps=1e-5))
    h = x.permute(0, 3, 1, 2)
    h = torch.nn.functional.avg_pool2d(conv_bn_relu(conv_bn_relu(h, w1, g1, b1), w2, g2, b2), 2)
    return h.permute(0, 2, 3, 1)


def test_cnn14_block_matches_a_float64_torch_rewrite_in_values_and_gradients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 8, 2))
    arrays = [rng.normal(size=(4, 3, 3, 2)), rng.normal(1, 0.1, 4), rng.normal(0, 0.1, 4),
              rng.normal(size=(4, 3, 3, 4)), rng.normal(1, 0.1, 4), rng.normal(0, 0.1, 4)]
    block = models.CNN14Block(4)
    block.build((None, 6, 8, 2))
    params = [block.conv1.weight, block.bn1.weight, block.bn1.bias, block.conv2.weight, block.bn2.weight,
              block.bn2.bias]
    for p, a in zip(params, arrays):
        p.data = a.copy()
    x_l = lamina.tensor(x, dtype=np.float64, requires_grad=True)
    out = block(x_l)
    up = rng.normal(size=out.shape)
    (out * lamina.tensor(up, dtype=np.float64)).sum().backward()
    x_t = torch.tensor(x, requires_grad=True)
    theirs = [torch.tensor(a, requires_grad=True) for a in arrays]
    expected = _torch_block(x_t, *theirs)
    (expected * torch.tensor(up)).sum().backward()
    assert out.shape == (3, 3, 4, 4)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(x_l.grad, x_t.grad.numpy(), rtol=1e-9, atol=1e-10)
    for p, t in zip(params, theirs):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-9, atol=1e-10)


def test_cnn14_encoder_pools_mean_over_mels_then_max_plus_mean_over_time():
    lamina.manual_seed(0)
    encoder = models.CNN14Encoder((4,), embed_dim=3)
    features = np.random.default_rng(1).normal(size=(2, 8, 6)).astype(np.float32)
    got = encoder(features).numpy()
    h = encoder.blocks(lamina.tensor(features[..., None])).numpy().mean(axis=2)
    pooled = h.max(axis=1) + h.mean(axis=1)
    expected = np.maximum(pooled @ encoder.fc.weight.numpy() + encoder.fc.bias.numpy(), 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match="frames and n_mels must be >= 2"):
        encoder(np.zeros((2, 1, 6), np.float32))


WAVES = np.random.default_rng(0).normal(size=(3, SAMPLES)).astype(np.float32)
IDS = np.array([[1, 5, 299], [2, 7, 299], [4, 299, 0]])


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_loss_is_clips_or_siglips_on_the_model_embeddings(loss):
    lamina.manual_seed(0)
    model = models.clap(front_end=FRONT_END, loss=loss, logit_scale_init_value=0.7, logit_bias_init_value=-1.5)
    out = model(WAVES, IDS, return_loss=True)
    a, t = out.audio_embeds, out.text_embeds
    if loss == "softmax":       # delegation: CLIP's own loss function on the same logits
        delegated = clip_loss(F.mul(F.matmul(t, F.transpose(a, 1, 0)), F.exp(model.logit_scale)))
    else:
        delegated = F.siglip_loss(a, t, model.logit_scale, model.logit_bias, normalize=False)
    assert float(out.loss.numpy()) == float(delegated.numpy()) == float(model.contrastive_loss(a, t).numpy())
    a64, t64 = (torch.tensor(v.numpy().astype(np.float64)) for v in (a, t))
    logits = t64 @ a64.T * np.exp(0.7)
    if loss == "softmax":
        target = torch.arange(3)
        expected = (torch.nn.functional.cross_entropy(logits, target)
                    + torch.nn.functional.cross_entropy(logits.T, target)) / 2
    else:
        signs = 2 * torch.eye(3, dtype=torch.float64) - 1
        expected = -torch.nn.functional.logsigmoid(signs * (logits.T - 1.5)).sum() / 3
    assert float(out.loss.numpy()) == pytest.approx(float(expected), rel=1e-5)
    np.testing.assert_allclose(out.logits_per_text.numpy(), logits.numpy() - (1.5 if loss == "sigmoid" else 0),
                               rtol=1e-5, atol=1e-5)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_saves_and_loads_with_its_config(tmp_path):
    lamina.manual_seed(0)
    model = models.clap(front_end=FRONT_END, loss="sigmoid")
    model.eval()
    before = model(WAVES, IDS).logits_per_audio.numpy()
    lamina.save(model, tmp_path / "clap.safetensors")
    twin = lamina.load(tmp_path / "clap.safetensors")
    twin.eval()
    assert type(twin) is models.CLAP and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(WAVES, IDS).logits_per_audio.numpy(), before)


def _ecapa():
    return models.ECAPA_TDNN(8, embedding_dim=12, dilations=(2,), res2net_scale=2, se_channels=4,
                             attention_channels=4)


def test_takes_any_audio_encoder_module(tmp_path):
    """ECAPA-TDNN over the log-mel features (N, T, n_mels); saved with it."""
    lamina.manual_seed(0)
    model = models.clap(_ecapa(), front_end=FRONT_END, audio_width=12)
    out = model(WAVES, IDS, return_loss=True)
    assert out.audio_embeds.shape == (3, 16) and np.isfinite(float(out.loss.numpy()))
    model.eval()
    lamina.save(model, tmp_path / "clap.safetensors")
    twin = lamina.load(tmp_path / "clap.safetensors")
    twin.eval()
    assert type(twin.audio_model) is models.ECAPA_TDNN and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(WAVES, IDS).logits_per_audio.numpy(), model(WAVES, IDS).logits_per_audio.numpy())
    with pytest.raises(ValueError, match="audio_width"):
        models.clap(_ecapa())


def test_retrieval_recall_at_k_by_hand():
    s = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.2, 0.3, 0.1]])
    # the match's rank: row 0 first, row 1 second, row 2 third
    assert [models.retrieval_recall_at_k(s, k) for k in (1, 2, 3)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert models.retrieval_recall_at_k(np.ones((2, 2)), 1) == 0.0       # ties count against the match


def test_errors():
    with pytest.raises(ValueError, match="loss must be one of"):
        models.clap(loss="hinge")
    with pytest.raises(ValueError, match="audio_encoder must be one of"):
        models.clap("cnn99")
    with pytest.raises(ShapeError, match="LogMelFrontEnd.*waveforms"):
        models.LogMelFrontEnd()(np.zeros((2, 3, 400), np.float32))
    with pytest.raises(ShapeError, match="square"):
        models.retrieval_recall_at_k(np.zeros((2, 3)))


# -- learning: synthetic sounds and their captions ----------------------------------------
SOUNDS = ["low tone", "high tone", "rising chirp", "falling chirp", "noise burst", "fast clicks"]
TEMPLATES = ["a {}", "the sound of a {}", "a recording of a {}"]


def sound(kind: str, rng) -> np.ndarray:
    """A quarter second at 8 kHz of ``kind``, with a random level, start phase, pitch jitter and background noise."""
    t = np.arange(SAMPLES) / RATE
    jitter = rng.uniform(0.85, 1.15)
    if kind == "low tone":
        x = np.sin(2 * np.pi * 300 * jitter * t + rng.uniform(0, 6.3))
    elif kind == "high tone":
        x = np.sin(2 * np.pi * 2500 * jitter * t + rng.uniform(0, 6.3))
    elif kind in ("rising chirp", "falling chirp"):
        f0, f1 = (300 * jitter, 3000 * jitter)[:: 1 if kind == "rising chirp" else -1]
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * t[-1])))
    elif kind == "noise burst":
        start = rng.integers(0, SAMPLES // 2)
        x = np.zeros(SAMPLES)
        x[start:start + SAMPLES // 3] = rng.normal(0, 1, len(x[start:start + SAMPLES // 3]))
    else:
        x = np.zeros(SAMPLES)
        x[rng.integers(0, 40)::int(160 * jitter)] = 4.0
    return (rng.uniform(0.5, 1.5) * x + rng.normal(0, 0.02, SAMPLES)).astype(np.float32)


def clips(labels, rng) -> np.ndarray:
    return np.stack([sound(SOUNDS[k], rng) for k in labels])


def train_clap(steps: int = 80, loss: str = "softmax"):
    captions = [template.format(name) for template in TEMPLATES for name in SOUNDS]
    tokenizer = BPETokenizer.train(captions, vocab_size=280, pad="<pad>", eos="<eos>")
    lamina.manual_seed(0)
    model = models.clap(models.CNN14Encoder((8, 16, 32)), front_end=FRONT_END, loss=loss, embed_dim=16,
                        text_config={"vocab_size": len(tokenizer), "num_hidden_layers": 1})
    optimizer = optim.Adam(model, lr=3e-3)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        labels = rng.permutation(len(SOUNDS))          # one clip per class: no false negatives
        texts = [TEMPLATES[rng.integers(len(TEMPLATES))].format(SOUNDS[k]) for k in labels]
        ids, mask = models.clip_tokenize(tokenizer, texts, 16)
        out = model(clips(labels, rng), ids, mask, return_loss=True)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer


@pytest.mark.parametrize("loss", ["softmax", "sigmoid"])
def test_learns_to_classify_and_retrieve_new_clips(loss):
    """80 steps of 6 pairs. Chance is 1/6 for both. With these seeds, either loss: zero-shot
    accuracy 1.0 on 60 new clips, text-to-audio recall@1 1.0 (5 sets of 6 new clips)."""
    model, tokenizer = train_clap(80, loss)
    classifier = models.zero_shot_audio_classifier(model, [[t.format(s) for t in TEMPLATES] for s in SOUNDS],
                                                   tokenizer, SOUNDS)
    rng = np.random.default_rng(99)
    labels = rng.integers(0, len(SOUNDS), 60)
    accuracy = (classifier.predict(clips(labels, rng)) == labels).mean()
    recalls = [models.audio_text_retrieval(model, clips(range(6), rng), [f"a {s}" for s in SOUNDS], tokenizer,
                                           ks=(1,))["text_to_audio_R@1"] for _ in range(5)]
    assert accuracy > 0.7 and np.mean(recalls) > 0.7, (accuracy, recalls)


def test_readme_example():
    printed, names = run_readme_section("CLAP: contrastive language-audio pre-training")
    assert "zero-shot: ['low tone', 'high tone', 'noise burst']" in printed
    assert names["loss"].shape == () and set(names["classifier"].class_names) == set(names["names"])

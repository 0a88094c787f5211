"""wav2vec 2.0 pretraining in Hugging Face's layout: the SpecAugment span rule against a reference
written from Hugging Face's formulas, the negatives' rule, the Gumbel quantizer, the contrastive
logits and loss and the whole pretraining model against PyTorch (same weights, same masks,
negatives and Gumbel noise; outputs, losses and every gradient), gradient checks, the masking of
the CTC model, the loader with the quantizer's keys, the parameter count, and a short pretraining
run lowering the contrastive loss."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn
from torch_wav2vec2_reference import Wav2Vec2Model as TorchWav2Vec2Model

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina import models, optim, saving
from lamina.models.wav2vec2_pretraining import codevector_perplexity, contrastive_logits, contrastive_loss
from lamina.models.wav2vec2_weights import hf_wav2vec2_table
from lamina.nn import init


# -- references written from Hugging Face's formulas -----------------------------------------------
def reference_mask(shape, mask_prob, mask_length, lengths=None, min_masks=0, seed=0):
    """HF's ``_compute_mask_indices``, vectorised as HF writes it (dummy starts padding the rows
    to one count, spans as start + offset, clipped to the axis, scattered), drawing from a
    Generator in the same order: epsilon first, then each row's starts."""
    generator = np.random.default_rng(seed)
    batch, length = shape
    epsilon = generator.random()

    def count(n):
        spans = max(int(mask_prob * n / mask_length + epsilon), min_masks)
        if spans * mask_length > length:
            spans = length // mask_length
        if n - (mask_length - 1) < spans:
            spans = max(n - (mask_length - 1), 0)
        return spans

    lengths = [length] * batch if lengths is None else list(lengths)
    mask = np.zeros(shape, dtype=bool)
    most = count(length)
    if most == 0:
        return mask
    starts = []
    for n in lengths:
        drawn = generator.choice(max(n - mask_length + 1, 0), count(n), replace=False)
        dummy = length - 1 if len(drawn) == 0 else drawn[0]
        starts.append(np.concatenate([drawn, np.full(most - len(drawn), dummy)]))
    spans = np.repeat(np.array(starts), mask_length, axis=1) + np.tile(np.arange(mask_length), most)
    np.put_along_axis(mask, np.minimum(spans, length - 1), True, axis=-1)
    return mask


class TorchQuantizer(nn.Module):
    """HF's Gumbel vector quantizer with the Gumbel noise given (the straight-through hard
    sample y_hard - y.detach() + y, as torch's gumbel_softmax)."""

    def __init__(self, conv_dim, groups, entries, dim):
        super().__init__()
        self.groups, self.entries, self.temperature = groups, entries, 2.0
        self.codevectors = nn.Parameter(torch.rand(1, groups * entries, dim // groups))
        self.weight_proj = nn.Linear(conv_dim, groups * entries)

    @staticmethod
    def perplexity(probs, mask):
        if mask is not None:
            flat = mask.flatten()[:, None, None].expand(probs.shape)
            marginal = torch.where(flat, probs, torch.zeros_like(probs)).sum(0) / mask.sum()
        else:
            marginal = probs.mean(0)
        return torch.exp(-torch.sum(marginal * torch.log(marginal + 1e-7), dim=-1)).sum()

    def forward(self, x, mask=None, noise=None):
        n, t, _ = x.shape
        logits = self.weight_proj(x).view(n * t * self.groups, -1)
        if self.training:
            soft = torch.softmax((logits + noise.reshape(logits.shape)) / self.temperature, dim=-1)
            hard = torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)
            probs = hard - soft.detach() + soft
            perplexity = self.perplexity(torch.softmax(logits.view(n * t, self.groups, -1), -1), mask)
        else:
            probs = torch.zeros_like(logits).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
            perplexity = self.perplexity(probs.view(n * t, self.groups, -1), mask)
        vectors = probs.view(n * t, -1).unsqueeze(-1) * self.codevectors
        return vectors.view(n * t, self.groups, self.entries, -1).sum(-2).view(n, t, -1), perplexity


def torch_contrastive(quantized, states, negatives_idx, mask, temperature):
    """HF's contrastive logits and loss: (K + 1, B, T) logits, negatives equal to the positive
    at -inf, cross entropy with target 0 on the masked frames (-100 elsewhere), summed."""
    n, t, d = quantized.shape
    negatives = quantized.view(-1, d)[negatives_idx.view(-1)].view(n, t, -1, d).permute(2, 0, 1, 3)
    targets = torch.cat([quantized[None], negatives], dim=0)
    logits = torch.cosine_similarity(states, targets, dim=-1) / temperature
    same = (quantized == negatives).all(-1)
    if same.any():
        logits[1:][same] = float("-inf")
    flat = logits.transpose(0, 2).reshape(-1, logits.size(0))
    target = ((1 - mask.long()) * -100).transpose(0, 1).flatten()
    return logits, nn.functional.cross_entropy(flat, target, reduction="sum")


class TorchPreTraining(nn.Module):
    """HF's Wav2Vec2ForPreTraining forward with HF's module names, on the CTC reference's
    Wav2Vec2Model (the masked frames' projected features replaced by masked_spec_embed)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wav2vec2 = TorchWav2Vec2Model(config)
        self.quantizer = TorchQuantizer(config["conv_dim"][-1], config["num_codevector_groups"],
                                        config["num_codevectors_per_group"], config["codevector_dim"])
        self.project_hid = nn.Linear(config["hidden_size"], config["proj_codevector_dim"])
        self.project_q = nn.Linear(config["codevector_dim"], config["proj_codevector_dim"])

    def forward(self, audio, attention_mask, mask, negatives, noise):
        w = self.wav2vec2
        extract = w.feature_projection.layer_norm(w.feature_extractor(audio))
        hidden = w.feature_projection.projection(extract)
        hidden = torch.where(mask[:, :, None], w.masked_spec_embed, hidden)
        lengths = attention_mask.sum(-1)
        for k, s in zip(self.config["conv_kernel"], self.config["conv_stride"]):
            lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
        frames_mask = torch.arange(hidden.shape[1])[None, :] < lengths[:, None]
        states = self.project_hid(w.encoder(hidden, frames_mask))
        quantized, perplexity = self.quantizer(extract, mask, noise)
        quantized = self.project_q(quantized)
        _, contrastive = torch_contrastive(quantized, states, negatives, mask,
                                           self.config["contrastive_logits_temperature"])
        size = self.config["num_codevectors_per_group"] * self.config["num_codevector_groups"]
        diversity = (size - perplexity) / size * mask.sum()
        loss = contrastive + self.config["diversity_loss_weight"] * diversity
        return states, quantized, perplexity, contrastive, diversity, loss


def _pair(seed=0, **options):
    model = models.wav2vec2_pretraining("test", **options)
    torch.manual_seed(seed)
    reference = TorchPreTraining(model.config).double()
    with torch.no_grad():                                # non-trivial norms and biases
        for name, value in reference.named_parameters():
            if name.endswith(("norm.weight", ".bias", "weight_g", "masked_spec_embed")):
                value.add_(0.1 * torch.randn_like(value))
    models.load_hf_wav2vec2_state_dict(model, reference.state_dict())
    return model, reference


# -- masks and negatives ---------------------------------------------------------------------------
MASK_CASES = [((3, 40), 0.3, 4, None, 0), ((4, 30), 0.05, 10, [30, 25, 9, 12], 2), ((2, 12), 0.9, 3, [12, 7], 1),
              ((5, 17), 0.5, 1, [17, 3, 1, 16, 8], 0), ((2, 20), 0.01, 5, None, 0), ((3, 10), 1.0, 10, [10, 10, 4], 2)]


@pytest.mark.parametrize("shape, prob, span, lengths, min_masks", MASK_CASES)
def test_mask_indices_follow_the_reference_rule(shape, prob, span, lengths, min_masks):
    attention = None if lengths is None else np.arange(shape[1])[None, :] < np.array(lengths)[:, None]
    for seed in range(8):
        ours = models.compute_mask_indices(shape, prob, span, attention, min_masks, rng=seed)
        assert ours.dtype == bool and ours.shape == shape
        assert np.array_equal(ours, reference_mask(shape, prob, span, lengths, min_masks, seed)), seed


def test_mask_span_counts_padded_rows_and_bounds():
    # mask_length 1: spans never overlap, so the masked frames count the spans exactly
    lengths = np.array([50, 37, 20, 4])
    attention = np.arange(50)[None, :] < lengths[:, None]
    for seed in range(5):
        epsilon = np.random.default_rng(seed).random()
        mask = models.compute_mask_indices((4, 50), 0.23, 1, attention, min_masks=6, rng=seed)
        expected = [min(max(int(0.23 * n + epsilon), 6), n) for n in lengths]
        assert mask.sum(axis=1).tolist() == expected
        assert not (mask & ~attention).any()                      # nothing past a row's length
    # a padded row too short for one span masks only its last (padding) frame, as HF
    mask = models.compute_mask_indices((2, 30), 0.2, 10, np.arange(30)[None, :] < np.array([[30], [6]]), 2, rng=1)
    assert mask[0].sum() >= 10 and mask[1].tolist() == [False] * 29 + [True]
    # spans stay inside each row's real frames
    for seed in range(5):
        mask = models.compute_mask_indices((3, 60), 0.6, 7, np.arange(60)[None, :] < np.array([[60], [45], [13]]),
                                           rng=seed)
        assert not mask[1, 45:].any() and not mask[2, 13:].any() and mask[2].sum() <= 13
    assert not models.compute_mask_indices((2, 20), 0.0, 5, rng=0).any()   # no span fits: nothing masked
    with pytest.raises(ValueError, match="mask_length"):
        models.compute_mask_indices((2, 5), 0.5, 6)


def test_negatives_come_from_the_same_rows_masked_frames_and_are_never_the_frame_itself():
    mask = np.zeros((3, 12), dtype=bool)
    mask[0, [1, 2, 3, 7]] = True
    mask[1, 4:12] = True
    mask[2, [0, 11]] = True
    negatives = models.sample_negative_indices((3, 12), 40, mask, rng=0)
    assert negatives.shape == (3, 12, 40)
    for row in range(3):
        frames = np.flatnonzero(mask[row])
        for frame in frames:
            drawn = negatives[row, frame] - row * 12
            assert set(drawn) <= set(frames) - {frame}
            if len(frames) <= 4:
                assert set(drawn) == set(frames) - {frame}      # every other masked frame is drawn
        assert np.all(negatives[row, ~mask[row]] == row * 12)
    everywhere = models.sample_negative_indices((2, 5), 50, rng=1)
    assert all(set(everywhere[r, t] - 5 * r) == set(range(5)) - {t} for r in range(2) for t in range(5))
    with pytest.raises(ValueError, match="row 1 has 1 masked"):
        models.sample_negative_indices((2, 4), 3, np.array([[1, 1, 0, 0], [0, 1, 0, 0]]))


# -- the quantizer ---------------------------------------------------------------------------------
def _quantizer_pair(seed=0):
    torch.manual_seed(seed)
    reference = TorchQuantizer(6, 2, 5, 8).double()
    with torch.no_grad():
        reference.weight_proj.weight.normal_(0.0, 1.0)
    ours = models.Wav2Vec2GumbelVectorQuantizer(2, 5, 8, temperature=reference.temperature)
    ours.build((None, None, 6))
    ours.load_state_dict({"weight_proj.weight": reference.weight_proj.weight.detach().numpy().T,
                          "weight_proj.bias": reference.weight_proj.bias.detach().numpy(),
                          "codevectors": reference.codevectors.detach().numpy()})
    return ours, reference


@pytest.mark.parametrize("training", [True, False], ids=["gumbel", "argmax"])
@pytest.mark.parametrize("with_mask", [True, False], ids=["masked", "all-frames"])
def test_quantizer_equals_torch_with_the_same_gumbel_noise(f64, training, with_mask):
    ours, reference = _quantizer_pair()
    ours.train(training)
    reference.train(training)
    ours.temperature = reference.temperature = 0.7
    x = randn(2, 7, 6, seed=1)
    noise = -np.log(np.random.default_rng(2).exponential(size=(2, 7, 2, 5)))
    mask = randn(2, 7, seed=3) > 0 if with_mask else None
    ours_x, ref_x = lamina.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    quantized, perplexity = ours(ours_x, mask, noise)
    expected, expected_perplexity = reference(ref_x, None if mask is None else torch.tensor(mask),
                                              torch.tensor(noise))
    assert_close(quantized.numpy(), expected.detach().numpy(), 1e-12, "codevectors")
    assert_close(perplexity.numpy(), expected_perplexity.detach().numpy(), 1e-12, "perplexity")
    weights = randn(2, 7, 8, seed=4)
    (F.sum(quantized * lamina.tensor(weights)) + 3.0 * perplexity).backward()
    ((expected * torch.tensor(weights)).sum() + 3.0 * expected_perplexity).backward()
    params = dict(ours.named_parameters())
    assert_close(params["codevectors"].grad, reference.codevectors.grad.numpy(), 1e-10, "codevectors gradient")
    pairs = [(ours_x, ref_x, "input"), (params["weight_proj.weight"], reference.weight_proj.weight, "weight"),
             (params["weight_proj.bias"], reference.weight_proj.bias, "bias")]
    for mine, theirs, what in pairs:
        if training:    # the straight-through estimator passes the soft sample's gradient to the logits
            expected_grad = theirs.grad.numpy()
            assert_close(mine.grad, expected_grad.T if what == "weight" else expected_grad, 1e-10, what)
            assert np.abs(mine.grad).max() > 0
        else:           # argmax: no gradient reaches the logits
            assert theirs.grad is None and (mine.grad is None or not np.any(mine.grad))


def test_quantizer_soft_path_passes_gradient_checks(f64):
    ours, _ = _quantizer_pair(1)
    ours.train()
    mask = randn(2, 4, seed=5) > 0
    assert check_gradients(lambda x: ours(x, mask)[1], randn(2, 4, 6, seed=6))       # perplexity of softmax(l)
    noise = randn(2, 4, 2, 5, seed=7)

    def soft_sample(x):          # the relaxed sample whose gradient the hard one passes on
        logits = F.reshape(ours.weight_proj(x), 8, 2, 5)
        return F.softmax((logits + noise.reshape(8, 2, 5)) / ours.temperature, axis=-1)

    assert check_gradients(soft_sample, randn(2, 4, 6, seed=8))
    assert check_gradients(lambda p: codevector_perplexity(F.softmax(p, axis=-1), mask), randn(8, 2, 5, seed=9))


def test_gumbel_temperature_schedule():
    assert models.gumbel_temperature(0) == 2.0
    assert models.gumbel_temperature(1000) == pytest.approx(2.0 * 0.999995 ** 1000, rel=1e-12)
    assert models.gumbel_temperature(10**7) == 0.5
    assert models.gumbel_temperature(5, 1.0, 0.1, 0.5) == pytest.approx(0.1)
    model = models.wav2vec2_pretraining("test")
    model.set_gumbel_temperature(models.gumbel_temperature(200_000))
    assert model.quantizer.temperature == pytest.approx(2.0 * 0.999995 ** 200_000)


# -- the contrastive loss --------------------------------------------------------------------------
def test_contrastive_logits_and_loss_equal_torch(f64):
    quantized, states = randn(2, 9, 4, seed=1), randn(2, 9, 4, seed=2)
    quantized[0, 5] = quantized[0, 2]           # a negative equal to the positive gets -inf
    quantized[1, 3] = quantized[1, 6]
    mask = np.zeros((2, 9), dtype=bool)
    mask[0, [1, 2, 5, 6]] = True
    mask[1, 2:8] = True
    negatives = models.sample_negative_indices((2, 9), 6, mask, rng=3)
    q_ours, c_ours = lamina.tensor(quantized, requires_grad=True), lamina.tensor(states, requires_grad=True)
    q_ref, c_ref = torch.tensor(quantized, requires_grad=True), torch.tensor(states, requires_grad=True)
    loss = contrastive_loss(c_ours, q_ours, negatives, mask, 0.3)
    logits_ref, loss_ref = torch_contrastive(q_ref, c_ref, torch.tensor(negatives), torch.tensor(mask), 0.3)
    assert torch.isinf(logits_ref).any()
    assert_close(loss.numpy(), loss_ref.detach().numpy(), 1e-12, "loss")
    loss.backward()
    loss_ref.backward()
    assert_close(q_ours.grad, q_ref.grad.numpy(), 1e-10, "gradient of the quantized targets")
    assert_close(c_ours.grad, c_ref.grad.numpy(), 1e-10, "gradient of the predictions")
    picked = quantized.reshape(18, 4)[negatives.reshape(-1)].reshape(2, 9, 6, 4).transpose(2, 0, 1, 3)
    logits = contrastive_logits(quantized, picked, states, 0.3).numpy()
    finite = np.isfinite(logits_ref.detach().numpy())
    assert_close(logits[finite], logits_ref.detach().numpy()[finite], 1e-12, "logits")


def test_contrastive_loss_passes_a_gradient_check(f64):
    mask = np.array([[1, 1, 0, 1, 1, 0], [0, 1, 1, 1, 0, 1]], dtype=bool)
    negatives = models.sample_negative_indices((2, 6), 3, mask, rng=4)
    assert check_gradients(lambda c, q: contrastive_loss(c, q, negatives, mask, 0.5),
                           randn(2, 6, 3, seed=5), randn(2, 6, 3, seed=6))


# -- the whole pretraining model -------------------------------------------------------------------
def test_pretraining_model_equals_the_torch_reference_in_outputs_losses_and_gradients(f64):
    model, reference = _pair(2)
    model.set_gumbel_temperature(1.3)
    reference.quantizer.temperature = 1.3
    audio = randn(2, 400, seed=1)
    attention = np.ones((2, 400), dtype=np.int64)
    attention[1, 300:] = 0
    audio[1, 300:] = 0.0
    mask, negatives = model.sample_masks(audio, attention, rng=5)
    assert mask.shape == (2, 19) and not mask[1, 14:].any() and negatives.shape == (2, 19, 5)
    noise = -np.log(np.random.default_rng(6).exponential(size=(2, 19, 2, 8)))
    out = model(audio, attention, mask, negatives, gumbel_noise=noise)
    expected = reference(torch.tensor(audio), torch.tensor(attention), torch.tensor(mask), torch.tensor(negatives),
                         torch.tensor(noise))
    names = ("projected_states", "projected_quantized_states", "codevector_perplexity", "contrastive_loss",
             "diversity_loss", "loss")
    for name, value in zip(names, expected):
        assert_close(getattr(out, name).numpy(), value.detach().numpy(), 1e-9, name)
    out.loss.backward()
    expected[-1].backward()
    grads = {key: value.grad for key, value in reference.named_parameters()}
    grads.update({key.replace("weight_g", "parametrizations.weight.original0"): value
                  for key, value in list(grads.items())})
    params = dict(model.named_parameters())
    for ours_key, weight in hf_wav2vec2_table(model).items():
        expected_grad = weight.convert(grads[weight.keys[0]].numpy())
        if np.abs(expected_grad).max() < 1e-12:         # the key bias: softmax ignores a shift of all scores
            assert np.abs(params[ours_key].grad).max() < 1e-12, ours_key
        else:
            assert_close(params[ours_key].grad, expected_grad, 1e-8, ours_key)
    assert np.abs(params["wav2vec2.masked_spec_embed"].grad).max() > 0
    assert np.abs(params["quantizer.weight_proj.weight"].grad).max() > 0


def test_pretraining_model_runs_forward_and_backward_and_checks_its_inputs():
    lamina.manual_seed(0)
    model = models.wav2vec2_pretraining("test", feat_quantizer_dropout=0.1, mask_feature_prob=0.2,
                                        mask_feature_length=2)
    audio = randn(3, 360, seed=2).astype(np.float32)
    mask, negatives = model.sample_masks(audio, rng=0)
    out = model(audio, mask_time_indices=mask, sampled_negative_indices=negatives)
    assert out.projected_states.shape == out.projected_quantized_states.shape == (3, 17, 8)
    assert 1.0 <= float(out.codevector_perplexity.numpy()) <= 16.0
    out.loss.backward()
    assert all(p.grad is not None and np.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    plain = model(audio)
    assert plain.loss is None and plain.codevector_perplexity.shape == ()
    with pytest.raises(ValueError, match="mask_time_indices"):
        model(audio, sampled_negative_indices=negatives)
    with pytest.raises(ValueError, match="divisible"):
        models.Wav2Vec2GumbelVectorQuantizer(3, 4, 8)


# -- SpecAugment in the CTC model ------------------------------------------------------------------
def test_ctc_model_masks_in_training_only_and_with_given_indices():
    model = models.wav2vec2("test", mask_time_prob=0.3, mask_time_length=3, mask_feature_prob=0.3,
                            mask_feature_length=4)
    model.build()
    audio = randn(2, 400, seed=1).astype(np.float32)
    lamina.manual_seed(3)
    trained = model(audio).numpy()
    lamina.manual_seed(3)
    drawn = models.compute_mask_indices((2, 19), 0.3, 3, None, 2)
    channels = models.compute_mask_indices((2, 16), 0.3, 4, None, 0)
    model.eval()
    plain = model(audio).numpy()
    assert not np.allclose(trained, plain)
    # the same masks by hand: frames replaced by masked_spec_embed, channels zeroed
    w = model.wav2vec2
    states = w.feature_projection(w.feature_extractor(audio)).numpy()
    states[drawn] = w.masked_spec_embed.numpy()
    states[np.broadcast_to(channels[:, None, :], states.shape)] = 0.0
    by_hand = model.lm_head(w.encoder(states)).numpy()
    assert_close(trained, by_hand, 1e-5, "logits with SpecAugment")
    # given indices apply in evaluation too; apply_spec_augment=False turns masking off
    given = np.zeros((2, 19), dtype=bool)
    given[:, 4:9] = True
    assert not np.allclose(model(audio, mask_time_indices=given).numpy(), plain)
    model.wav2vec2.spec_augment["apply_spec_augment"] = False
    model.train()
    assert_close(model(audio).numpy(), plain, 1e-6, "no SpecAugment")


# -- the loader, counts, saving --------------------------------------------------------------------
def test_loader_round_trips_the_quantizer_keys():
    model, reference = _pair(3)
    state = reference.state_dict()
    assert {"quantizer.codevectors", "quantizer.weight_proj.weight", "project_q.bias", "project_hid.weight"} <= \
        set(state)
    table = hf_wav2vec2_table(model)
    assert {key for weight in table.values() for key in weight.keys} == set(state)
    params = dict(model.named_parameters())
    for ours_key, weight in table.items():
        assert_close(params[ours_key].numpy(), weight.convert(state[weight.keys[0]].numpy()), 1e-6, ours_key)
    with_head = {**state, "lm_head.weight": torch.zeros(8, 16), "lm_head.bias": torch.zeros(8)}
    models.load_hf_wav2vec2_state_dict(model, with_head)                 # a CTC head is ignored
    missing = {key: value for key, value in state.items() if key != "quantizer.codevectors"}
    with pytest.raises(KeyError, match=r"missing keys \['quantizer.codevectors'\]"):
        models.load_hf_wav2vec2_state_dict(model, missing)
    ctc = models.wav2vec2("test", num_conv_pos_embeddings=8)
    ctc_state = {**{k: v for k, v in state.items() if k.startswith("wav2vec2.")},
                 "lm_head.weight": torch.zeros(8, 16), "lm_head.bias": torch.zeros(8)}
    models.load_hf_wav2vec2_state_dict(ctc, {**ctc_state, **{k: state[k] for k in state if "quant" in k}})


def test_parameter_count_of_the_base_configuration():
    model = models.wav2vec2_pretraining("base")
    with init.meta():
        model.build()
    counts = {name: sum(int(np.prod(p.shape)) for p in getattr(model, name).parameters())
              for name in ("wav2vec2", "quantizer", "project_hid", "project_q")}
    assert counts == {"wav2vec2": 94_396_320 - (768 * 32 + 32), "quantizer": 640 * 128 + 512 * 640 + 640,
                      "project_hid": 768 * 256 + 256, "project_q": 256 * 256 + 256}
    assert model.num_parameters() == 95_044_608
    assert "wav2vec2_pretraining" in models.list_models("language")


def test_a_saved_pretraining_model_loads_with_its_weights(tmp_path):
    model = models.wav2vec2_pretraining("test")
    model.eval()
    audio = randn(1, 300, seed=4).astype(np.float32)
    expected = model(audio).projected_quantized_states.numpy()
    saving.save(model, tmp_path / "pretraining.lamina")
    loaded = saving.load(tmp_path / "pretraining.lamina")
    loaded.eval()
    assert isinstance(loaded, models.Wav2Vec2ForPreTraining) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(audio).projected_quantized_states.numpy(), expected)


# -- learning --------------------------------------------------------------------------------------
def _synthetic_speech(rng, n: int, segments: int = 6, segment: int = 80) -> np.ndarray:
    """Audio of ``segments`` random tones of ``segment`` samples each, with noise."""
    frequencies = np.array([0.03, 0.07, 0.12, 0.2])
    t = np.arange(segment)
    pieces = [[np.sin(2 * np.pi * rng.choice(frequencies) * t + rng.uniform(0, 6.3)) for _ in range(segments)]
              for _ in range(n)]
    audio = np.array([np.concatenate(p) for p in pieces]) + 0.05 * rng.standard_normal((n, segments * segment))
    return models.wav2vec2_input_values(list(audio))[0].astype(np.float32)


def test_a_short_pretraining_run_lowers_the_contrastive_loss():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.wav2vec2_pretraining("test", hidden_size=32, intermediate_size=64, conv_dim=(32, 32, 32),
                                        mask_time_prob=0.5, num_negatives=8)
    probe = _synthetic_speech(np.random.default_rng(99), 8)
    probe_masks = model.sample_masks(probe, rng=7)

    def probe_loss():
        model.eval()
        out = model(probe, None, *probe_masks)
        model.train()
        return float(out.contrastive_loss.numpy()) / probe_masks[0].sum(), float(out.codevector_perplexity.numpy())

    before, _ = probe_loss()
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for step in range(60):
        audio = _synthetic_speech(rng, 8)
        model.set_gumbel_temperature(models.gumbel_temperature(step, 2.0, 0.5, 0.98))
        optimizer.zero_grad()
        loss = model(audio, None, *model.sample_masks(audio, rng=rng)).loss
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    after, perplexity = probe_loss()
    print(f"contrastive loss per masked frame: {before:.3f} -> {after:.3f}, codevector perplexity {perplexity:.1f} "
          f"of 16 ({seconds:.1f} s of training)")
    assert after < 0.8 * before
    assert perplexity > 4            # not by collapsing the codebook (negatives equal to the positive drop out)

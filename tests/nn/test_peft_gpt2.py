"""Parameter-efficient methods on a tiny GPT-2: IA3 on keys, values and feed-forward
activations, bottleneck adapters, prompt tuning and prefix tuning against a torch rewrite of
GPT-2 with each method's formula (float64, values and gradients); generation through the
key/value cache equal to rerunning; the front (get_peft_model, print_trainable_parameters,
adapter files); and each method lowering a toy task's loss with the base weights unchanged."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, randn, run_readme_section
from lamina import nn
from lamina.models import GPT2, Llama
from lamina.text import caching_keys_values, generate_ids

E, H, L, V, CONTEXT = 8, 2, 2, 11, 16


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _gpt2(seed=0):
    lamina.manual_seed(seed)
    model = GPT2(vocab_size=V, n_positions=CONTEXT, n_embd=E, n_layer=L, n_head=H, embd_pdrop=0.0, resid_pdrop=0.0,
                 attn_pdrop=0.0)
    model(lamina.tensor(np.zeros((1, 2), dtype=np.int64)))
    for name, p in model.named_parameters():          # non-trivial LayerNorms and biases
        if "norm" in name or "bias" in name or "ln_f" in name:
            p.data = p.data + randn(*p.shape, seed=len(name), scale=0.2)
    return model


def _ids(n=2, t=5, seed=0):
    return np.random.default_rng(seed).integers(0, V, (n, t))


def _weights(model):
    return {k: torch.tensor(np.array(v), dtype=torch.float64) for k, v in model.state_dict().items()}


def torch_gpt2(w, ids, prompt=None, prefix=None, ia3=None, adapters=None, key_mask=None, offset=0):
    """GPT-2 from the arrays ``w`` (lamina's names) with the methods' formulas: ``prompt``
    (P, E) before the embeddings, ``prefix`` [(K, V) (1, h, P, d)] per layer before the keys
    and values (the text at positions P ...), ``ia3`` [(l_k, l_v, l_ff)] per layer, ``adapters``
    [(attention adapter, feed-forward adapter)] per layer (callables or None)."""
    n, t = ids.shape
    x = w["wte.weight"][torch.tensor(ids)]
    if prompt is not None:
        x = torch.cat([prompt.expand(n, -1, -1), x], dim=1)
    steps = x.shape[1]
    p = 0 if prefix is None else prefix[0][0].shape[2]
    x = x + w["wpe.weight"][torch.arange(steps) + offset + p]
    d = E // H
    for i in range(L):
        def g(name, i=i):
            return w[f"h.{i}.{name}"]
        a = torch.nn.functional.layer_norm(x, (E,), g("norm1.weight"), g("norm1.bias"), 1e-5)
        q, k, v = (a @ g("self_attention.in_weight") + g("self_attention.in_bias")).split(E, dim=2)
        if ia3 is not None:
            k, v = k * ia3[i][0], v * ia3[i][1]
        q, k, v = (z.view(n, steps, H, d).transpose(1, 2) for z in (q, k, v))
        keep = torch.tril(torch.ones(steps, steps, dtype=torch.bool))
        if prefix is not None:
            k = torch.cat([prefix[i][0].expand(n, -1, -1, -1), k], dim=2)
            v = torch.cat([prefix[i][1].expand(n, -1, -1, -1), v], dim=2)
            keep = torch.cat([torch.ones(steps, p, dtype=torch.bool), keep], dim=1)
        keep = keep[None, None]
        if key_mask is not None:
            keep = keep & torch.tensor(key_mask)[:, None, None, :]
        scores = torch.where(keep, q @ k.transpose(-1, -2) / math.sqrt(d), -torch.inf)
        out = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(n, steps, E)
        out = out @ g("self_attention.out_weight") + g("self_attention.out_bias")
        if adapters is not None and adapters[i][0] is not None:
            out = adapters[i][0](out)
        x = x + out
        m = torch.nn.functional.layer_norm(x, (E,), g("norm2.weight"), g("norm2.bias"), 1e-5)
        m = torch.nn.functional.gelu(m @ g("linear1.weight") + g("linear1.bias"), approximate="tanh")
        if ia3 is not None:
            m = m * ia3[i][2]
        m = m @ g("linear2.weight") + g("linear2.bias")
        if adapters is not None and adapters[i][1] is not None:
            m = adapters[i][1](m)
        x = x + m
    x = torch.nn.functional.layer_norm(x, (E,), w["ln_f.weight"], w["ln_f.bias"], 1e-5)
    logits = x @ w["wte.weight"].T
    return logits if prompt is None else logits[:, prompt.shape[0]:]


def _param(array):
    return torch.tensor(np.array(array), dtype=torch.float64, requires_grad=True)


def _backward_both(ours, theirs, seed=5):
    up = randn(*ours.shape, seed=seed)
    (ours * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()


# -- IA3 and bottleneck adapters on GPT-2 -------------------------------------------------------------
def test_ia3_on_keys_values_and_feed_forward_matches_torch(f64):
    model = _gpt2()
    w = _weights(model)
    ids = _ids()
    before = model(ids).numpy()
    nn.get_peft_model(model, nn.IA3Config(target_modules=(nn.MultiHeadAttention, "linear2"),
                                          feedforward_modules="linear2"))
    assert_close(model(ids).numpy(), before, 0, "ones leave the model unchanged")
    assert model.num_parameters(trainable_only=True) == L * (E + E + 4 * E)
    vectors = []
    for i, block in enumerate(model.h):
        scales = [block.self_attention.ia3_k.scaling, block.self_attention.ia3_v.scaling, block.linear2.ia3.scaling]
        for j, s in enumerate(scales):
            s.data = s.data + randn(*s.shape, seed=30 + 3 * i + j, scale=0.3)
        vectors.append([_param(s.numpy()) for s in scales])
    ours = model(ids)
    theirs = torch_gpt2(w, ids, ia3=vectors)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10)
    _backward_both(ours, theirs)
    block = model.h[1]
    assert_close(block.self_attention.ia3_v.scaling.grad, vectors[1][1].grad.numpy(), 1e-9, "dJ/dl_v")
    assert_close(block.linear2.ia3.scaling.grad, vectors[1][2].grad.numpy(), 1e-9, "dJ/dl_ff")
    adapted = ours.numpy()
    model.eval()
    with lamina.no_grad(), caching_keys_values(model):
        pieces = [model(ids[:, :3]).numpy(), model(ids[:, 3:]).numpy()]
    assert_close(np.concatenate(pieces, axis=1), adapted, 1e-10, "the cache with IA3 vectors")
    in_weight = block.self_attention.in_weight.numpy().copy()
    nn.merge_adapters(model)
    assert_close(model(ids).numpy(), adapted, 1e-10)
    with pytest.raises(ValueError, match="already merged"):
        nn.merge_adapters(model)
    nn.unmerge_adapters(model)
    assert_close(block.self_attention.in_weight.numpy(), in_weight, 1e-12)


def test_houlsby_and_pfeiffer_adapters_match_torch(f64):
    model = _gpt2()
    w = _weights(model)
    ids = _ids()
    before = model(ids).numpy()
    nn.apply_bottleneck_adapters(model, bottleneck=3, placement="houlsby", activation="relu")
    assert_close(model(ids).numpy(), before, 0, "a zero up-projection leaves the model unchanged")
    per_adapter = E * 3 + 3 + 3 * E + E
    assert model.num_parameters(trainable_only=True) == L * 2 * per_adapter
    adapters, params = [], []
    for i, block in enumerate(model.h):
        pair = []
        for j, slot in enumerate(("dropout1", "dropout2")):
            a = getattr(block, slot).adapter
            a.up_weight.data = randn(3, E, seed=40 + 2 * i + j, scale=0.3)
            t = [_param(getattr(a, name).numpy()) for name in ("down_weight", "down_bias", "up_weight", "up_bias")]
            params.append((a, t))
            pair.append(lambda h, t=t: h + torch.relu(h @ t[0] + t[1]) @ t[2] + t[3])
        adapters.append(pair)
    ours = model(ids)
    theirs = torch_gpt2(w, ids, adapters=adapters)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10)
    _backward_both(ours, theirs)
    a, t = params[1]
    assert_close(a.down_weight.grad, t[0].grad.numpy(), 1e-9, "dJ/dW_down")
    assert_close(a.up_weight.grad, t[2].grad.numpy(), 1e-9, "dJ/dW_up")
    pfeiffer = nn.apply_bottleneck_adapters(_gpt2(), bottleneck=2, placement="pfeiffer", up_std=0.01)
    assert pfeiffer.num_parameters(trainable_only=True) == L * (E * 2 + 2 + 2 * E + E)
    assert not isinstance(pfeiffer.h[0].dropout1, nn.WithAdapter)
    with pytest.raises(ValueError, match="placement"):
        nn.apply_bottleneck_adapters(_gpt2(), placement="middle")


# -- prompt and prefix tuning ---------------------------------------------------------------------------
def test_prompt_tuning_matches_torch_with_the_prompt_first(f64):
    model = _gpt2()
    w = _weights(model)
    ids = _ids()
    lm = nn.PromptTuningLM(model, num_virtual_tokens=3)
    assert lm.num_parameters(trainable_only=True) == 3 * E
    prompt = _param(lm.prompt.numpy())
    key_mask = np.array([[True] * 5, [False, False, True, True, True]])
    ours = lm(ids, key_mask=key_mask)
    theirs = torch_gpt2(w, ids, prompt=prompt, key_mask=np.concatenate([np.ones((2, 3), bool), key_mask], 1))
    assert ours.shape == (2, 5, V)
    assert_close(ours.numpy()[0], theirs.detach().numpy()[0], 1e-10)
    assert_close(ours.numpy()[1, 2:], theirs.detach().numpy()[1, 2:], 1e-10)
    _backward_both(lm(ids), torch_gpt2(w, ids, prompt=prompt))
    assert_close(lm.prompt.grad, prompt.grad.numpy(), 1e-9, "dJ/dprompt")
    encoded = nn.get_peft_model(model, nn.PromptEncoderConfig(num_virtual_tokens=3, encoder_hidden_size=6))
    assert encoded.num_parameters(trainable_only=True) == 3 * E + (E * 6 + 6) + (6 * 6 + 6) + (6 * E + E)
    hidden = np.maximum(encoded.prompt.numpy() @ encoded.encoder_hidden.weight.numpy()
                        + encoded.encoder_hidden.bias.numpy(), 0)
    hidden = np.maximum(hidden @ encoded.encoder_hidden_2.weight.numpy() + encoded.encoder_hidden_2.bias.numpy(), 0)
    virtual = hidden @ encoded.encoder_out.weight.numpy() + encoded.encoder_out.bias.numpy()
    assert_close(encoded(ids).numpy(), torch_gpt2(w, ids, prompt=torch.tensor(virtual)).numpy(), 1e-10)
    text = nn.PromptTuningLM(model, 4, init="text", init_ids=[3, 5])
    assert_close(text.prompt.numpy(), model.wte.weight.numpy()[[3, 5, 3, 5]], 0)
    with pytest.raises(ValueError, match="context"):
        nn.PromptTuningLM(model, CONTEXT)
    with pytest.raises(lamina.ShapeError, match="more than the model's context"):
        lm(_ids(1, CONTEXT - 2))


@pytest.mark.parametrize("projection", [False, True])
def test_prefix_tuning_matches_torch_attention_over_concatenated_keys(f64, projection):
    model = _gpt2()
    w = _weights(model)
    ids = _ids()
    p, d = 3, E // H
    lm = nn.get_peft_model(model, nn.PrefixTuningConfig(num_virtual_tokens=p, prefix_projection=projection,
                                                        encoder_hidden_size=5))
    width = L * 2 * E
    expected = p * E + (E * 5 + 5) + (5 * width + width) if projection else p * width
    assert lm.num_parameters(trainable_only=True) == expected
    table = _param(lm.prefix_table().numpy())
    layout = table.view(p, 2 * L, H, d).permute(1, 2, 0, 3)
    prefix = [(layout[2 * i][None], layout[2 * i + 1][None]) for i in range(L)]
    key_mask = np.array([[True] * 5, [False, True, True, True, True]])
    ours = lm(ids, key_mask=key_mask)
    theirs = torch_gpt2(w, ids, prefix=prefix, key_mask=np.concatenate([np.ones((2, p), bool), key_mask], 1))
    assert_close(ours.numpy()[0], theirs.detach().numpy()[0], 1e-10)
    assert_close(ours.numpy()[1, 1:], theirs.detach().numpy()[1, 1:], 1e-10)
    if not projection:
        _backward_both(lm(ids), torch_gpt2(w, ids, prefix=prefix))
        assert_close(lm.prefix.grad, table.grad.numpy(), 1e-9, "dJ/dprefix")
    with pytest.raises(lamina.ShapeError, match="more than the model's context"):
        lm(_ids(1, CONTEXT - p + 1))


def _llama():
    lamina.manual_seed(2)
    model = Llama(vocab_size=V, hidden_size=E, intermediate_size=16, num_hidden_layers=L, num_attention_heads=H,
                  num_key_value_heads=1, max_position_embeddings=CONTEXT)
    model(lamina.tensor(np.zeros((1, 2), dtype=np.int64)))
    for i, (_, p) in enumerate(model.named_parameters()):
        if p.ndim == 2:
            p.data = randn(*p.shape, seed=200 + i, scale=0.5).astype(p.dtype)
    return model


@pytest.mark.parametrize("method", ["prompt", "prefix", "prompt-llama", "prefix-llama"])
def test_generation_through_the_cache_equals_rerunning(method):
    model = _llama() if method.endswith("llama") else _pretrained_like()
    if method.startswith("prompt"):
        lm = nn.PromptTuningLM(model, 3)
    else:
        lm = nn.PrefixTuningLM(model, 3, prefix_projection=True)
    ids = _ids(2, 4, seed=3)
    full = lm(np.concatenate([ids, _ids(2, 3, seed=4)], axis=1)).numpy()
    lm.eval()
    with lamina.no_grad(), caching_keys_values(lm):
        pieces = [lm(ids).numpy(), lm(_ids(2, 3, seed=4)[:, :1]).numpy(), lm(_ids(2, 3, seed=4)[:, 1:]).numpy()]
    assert_close(np.concatenate(pieces, axis=1), full, 1e-5)
    generated = generate_ids(lm, ids, max_new_tokens=4)
    rerun = ids
    for _ in range(4):
        rerun = np.concatenate([rerun, lm(rerun).numpy()[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(generated, rerun)
    padded = np.array([[0, 0, 4, 7], [1, 2, 3, 5]])       # left padding, the text's positions from 0
    mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
    together = generate_ids(lm, padded, attention_mask=mask, max_new_tokens=3, return_dict_in_generate=True)
    alone = generate_ids(lm, padded[:1, 2:], max_new_tokens=3, return_dict_in_generate=True)
    np.testing.assert_array_equal(together.sequences[0, 2:], alone.sequences[0])
    for step, scores in enumerate(alone.scores):
        assert_close(together.scores[step][0], scores[0], 1e-4, f"scores of step {step}")


# -- the front ------------------------------------------------------------------------------------------
def test_print_trainable_parameters_and_adapter_files(tmp_path, capsys):
    model = nn.get_peft_model(_gpt2(), nn.LoraConfig(r=2, target_modules=["linear1", "linear2"]))
    line = nn.print_trainable_parameters(model)
    trainable = L * (2 * (E + 4 * E) + 2 * (4 * E + E))
    total = model.num_parameters()
    assert capsys.readouterr().out.strip() == line == (
        f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {100 * trainable / total:.4f}")
    for _, p in model.named_parameters(trainable_only=True):
        p.data = p.data + randn(*p.shape, seed=1, scale=0.1).astype(p.dtype)
    path = tmp_path / "adapter.npz"
    nn.save_adapter(model, path)
    assert sorted(np.load(path).files) == sorted(nn.adapter_state_dict(model))
    other = nn.get_peft_model(_gpt2(), nn.LoraConfig(r=2, target_modules=["linear1", "linear2"]))
    nn.load_adapter(other, path)
    ids = _ids()
    assert_close(other(ids).numpy(), model(ids).numpy(), 1e-6)
    with pytest.raises(KeyError, match="lacks"):
        nn.load_adapter(nn.get_peft_model(_gpt2(), nn.IA3Config()), path)
    with pytest.raises(TypeError, match="unknown config"):
        nn.get_peft_model(_gpt2(), object())


CONFIGS = {
    "lora": nn.LoraConfig(r=2, lora_alpha=4),
    "dora": nn.LoraConfig(r=2, lora_alpha=4, use_dora=True),
    "ia3": nn.IA3Config(target_modules=(nn.MultiHeadAttention, "linear2"), feedforward_modules="linear2"),
    "loha": nn.LoHaConfig(r=2, alpha=4),
    "lokr": nn.LoKrConfig(r=1, alpha=2),
    "vera": nn.VeraConfig(r=4),
    "adapters": nn.AdapterConfig(bottleneck=4),
    "prompt": nn.PromptTuningConfig(num_virtual_tokens=3),
    "prefix": nn.PrefixTuningConfig(num_virtual_tokens=3),
    "p-tuning": nn.PromptEncoderConfig(num_virtual_tokens=3, encoder_hidden_size=6),
}
LEARNING_RATES = {"vera": 0.5}        # VeRA learns two vectors per layer on fixed random projections


def _pretrained_like(seed=1):
    """A tiny GPT-2 with weights large enough to act as a pretrained model (GPT-2's N(0, 0.02)
    leaves so small a model nearly uniform, and its adapters with little to steer)."""
    model = _gpt2(seed)
    for i, (_, p) in enumerate(model.named_parameters()):
        if p.ndim == 2:
            p.data = randn(*p.shape, seed=100 + i, scale=0.5).astype(p.dtype)
    return model


@pytest.mark.parametrize("method", list(CONFIGS))
def test_each_method_learns_a_toy_task_with_the_base_frozen(method):
    """Next token = (token + 1) mod V: a few Adam steps lower the loss clearly."""
    base = _pretrained_like()
    frozen = {k: np.array(v) for k, v in base.state_dict().items()}
    model = nn.get_peft_model(base, CONFIGS[method])
    ids = _ids(8, 8, seed=2)
    targets = lamina.tensor((ids + 1) % V)
    optimizer = lamina.optim.Adam(model.parameters(trainable_only=True), lr=LEARNING_RATES.get(method, 0.1))
    losses = []
    for _ in range(20):
        loss = lamina.functional.cross_entropy(model(ids).reshape(-1, V), targets.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.numpy()))
    assert losses[-1] < 0.85 * losses[0], losses
    for key, value in base.state_dict().items():
        stem = key.replace(".base.", ".").replace(".layer.", ".")
        if stem in frozen:
            np.testing.assert_array_equal(np.array(value), frozen[stem], err_msg=key)
    assert len([k for k in base.state_dict() if k.replace(".base.", ".").replace(".layer.", ".") in frozen]) == \
        len(frozen)


def test_readme_peft_example_runs():
    run_readme_section("Parameter-efficient fine-tuning beyond LoRA")


def test_bert_block_adapters_act_before_the_residual_and_norm(f64):
    from lamina.models.bert import BertLayer

    lamina.manual_seed(3)
    block = BertLayer(E, H, 16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    x = lamina.tensor(randn(2, 4, E, seed=8))
    before = block(x).numpy()
    nn.apply_bottleneck_adapters(block, bottleneck=2)
    assert_close(block(x).numpy(), before, 0)
    first, second = block.dropout1.adapter, block.dropout2.adapter
    first.up_weight.data = randn(2, E, seed=9)
    second.up_weight.data = randn(2, E, seed=10)
    a = block.norm1(x + first(block.self_attention(x)))
    expected = block.norm2(a + second(block.linear2(block.linear1(a))))
    assert_close(block(x).numpy(), expected.numpy(), 1e-12)

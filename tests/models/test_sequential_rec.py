"""Sequential recommenders: SASRec's causal masking and its logits and BCE loss against a
float64 torch rewrite (values and gradients), BERT4Rec's cloze masking and loss, GRU4Rec's
skipping of padding, and all three learning next items on Markov-chain data past a
popularity ranking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, run_readme_section
from lamina.data import leave_one_out_sequences, synthetic_markov_sequences, user_sequences
from lamina.models import BERT4Rec, GRU4Rec, SASRec, cloze_mask, fit_sequential
from lamina.train import evaluate_next_item, next_item_metrics


def _randomize(model, seed: int, scale: float = 0.5) -> None:
    rng = np.random.default_rng(seed)
    for name, param in model.named_parameters():
        param.data[...] = rng.normal(0, scale, param.shape)
        if name == "item_embedding.weight":
            param.data[0] = 0.0                    # the padding row, as the layer keeps it


def _layer_norm(x, p, prefix, eps):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], p[f"{prefix}.weight"], p[f"{prefix}.bias"], eps)


def _torch_sasrec_hidden(p, rows, dim, heads, blocks):
    """Kang & McAuley's forward pass written out: scaled item embedding plus positions,
    pre-norm causal self-attention and ReLU feed-forward blocks, a final LayerNorm."""
    rows = torch.tensor(rows)
    n, t = rows.shape
    x = p["item_embedding.weight"][rows] * dim ** 0.5 + p["positions.weight"][:t]
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    allowed = causal & ((rows != 0)[:, None, :] | torch.eye(t, dtype=torch.bool))
    size = dim // heads
    for b in range(blocks):
        block = f"blocks.{b}"
        h = _layer_norm(x, p, f"{block}.norm1", 1e-5)
        q, k, v = (h @ p[f"{block}.self_attention.in_weight"] + p[f"{block}.self_attention.in_bias"]).split(dim, -1)
        q, k, v = (z.reshape(n, t, heads, size).transpose(1, 2) for z in (q, k, v))
        scores = (q @ k.transpose(-1, -2) / size ** 0.5).masked_fill(~allowed[:, None], float("-inf"))
        context = (scores.softmax(-1) @ v).transpose(1, 2).reshape(n, t, dim)
        x = x + context @ p[f"{block}.self_attention.out_weight"] + p[f"{block}.self_attention.out_bias"]
        h = _layer_norm(x, p, f"{block}.norm2", 1e-5)
        x = x + torch.relu(h @ p[f"{block}.linear1.weight"] + p[f"{block}.linear1.bias"]) @ p[
            f"{block}.linear2.weight"] + p[f"{block}.linear2.bias"]
    return _layer_norm(x, p, "final_norm", 1e-8)


ROWS = np.array([[0, 0, 3, 7, 2, 9], [4, 1, 8, 8, 6, 5], [0, 0, 0, 0, 2, 3]])
TARGETS = np.array([[0, 0, 7, 2, 9, 1], [1, 8, 8, 6, 5, 2], [0, 0, 0, 0, 3, 4]])     # the next items
NEGATIVES = np.array([[0, 0, 5, 8, 4, 6], [3, 9, 2, 7, 3, 3], [0, 0, 0, 0, 9, 1]])


def test_sasrec_logits_and_bce_loss_match_a_torch_rewrite():
    lamina.set_default_dtype(np.float64)
    model = SASRec(9, max_len=6, dim=4, num_blocks=2, num_heads=2, dropout=0.0)
    _randomize(model, 0)
    logits = model(ROWS)
    loss = model.bce_loss(ROWS, TARGETS, NEGATIVES)
    loss.backward()

    p = {name: torch.tensor(param.data, requires_grad=True) for name, param in model.named_parameters()}
    hidden = _torch_sasrec_hidden(p, ROWS, 4, 2, 2)
    table = p["item_embedding.weight"]
    expected_logits = hidden @ table[1:].T                       # the shared item table scores the outputs
    positive = (hidden * table[torch.tensor(TARGETS)]).sum(-1)
    negative = (hidden * table[torch.tensor(NEGATIVES)]).sum(-1)
    present = torch.tensor(TARGETS != 0, dtype=torch.float64)
    expected = -((torch.nn.functional.logsigmoid(positive) + torch.nn.functional.logsigmoid(-negative))
                 * present).sum() / present.sum()
    expected.backward()

    assert_close(logits.numpy(), expected_logits.detach().numpy(), 1e-12, "logits")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    for name, param in model.named_parameters():
        reference = p[name].grad.numpy().copy()
        if name == "item_embedding.weight":
            assert not param.grad[0].any()                       # the padding row never learns
            reference[0] = 0.0
        np.testing.assert_allclose(param.grad, reference, rtol=1e-9, atol=1e-12, err_msg=name)


def test_sasrec_is_causal():
    lamina.set_default_dtype(np.float64)
    model = SASRec(9, max_len=6, dim=8, num_blocks=2, num_heads=2)
    model.eval()
    changed = ROWS.copy()
    changed[:, 4] = [5, 3, 7]
    before, after = model(ROWS).numpy(), model(changed).numpy()
    np.testing.assert_array_equal(before[:, :4], after[:, :4])   # earlier positions unchanged
    assert np.abs(before[:, 4:] - after[:, 4:]).min() > 0


def test_sasrec_full_softmax_loss_is_cross_entropy_of_the_targets():
    lamina.set_default_dtype(np.float64)
    model = SASRec(9, max_len=6, dim=4, num_blocks=1, dropout=0.0, loss="ce")
    logits = torch.tensor(model(ROWS).numpy())
    kept = TARGETS != 0
    expected = torch.nn.functional.cross_entropy(logits[torch.tensor(kept)], torch.tensor(TARGETS[kept] - 1))
    assert model.batch_loss(ROWS, TARGETS).item() == pytest.approx(expected.item(), rel=1e-12)


def test_bce_negatives_avoid_the_row_items():
    lamina.set_default_dtype(np.float64)
    model = SASRec(9, max_len=6, dim=4, num_blocks=1, dropout=0.0)
    seen = []
    model.bce_loss = lambda inputs, targets, negatives: seen.append(negatives)
    model.batch_loss(ROWS, TARGETS, rng=0)
    negatives = seen[0]
    assert ((negatives == 0) == (TARGETS == 0)).all()
    for row in range(len(ROWS)):
        items = set(ROWS[row].tolist()) | set(TARGETS[row].tolist())
        assert not items & set(negatives[row][negatives[row] != 0].tolist())


def test_cloze_mask_ratio_and_last_item_rows():
    rows = np.random.default_rng(0).integers(1, 50, size=(400, 50))
    rows[:, :5] = 0
    masked, labels = cloze_mask(rows, 51, 0.25, rng=1)
    chosen = masked == 51
    assert chosen.sum() / (rows != 0).sum() == pytest.approx(0.25, abs=0.01)
    assert not chosen[:, :5].any()                                # padding is never masked
    np.testing.assert_array_equal(labels[chosen], rows[chosen])
    assert not labels[~chosen].any()
    np.testing.assert_array_equal(masked[~chosen], rows[~chosen])
    single, single_labels = cloze_mask(np.array([[0, 0, 7]]), 51, 0.01, rng=2)
    assert single.tolist() == [[0, 0, 51]] and single_labels.tolist() == [[0, 0, 7]]   # at least one per row
    last, _ = cloze_mask(rows, 51, 0.25, rng=3, last_prob=1.0)
    assert (last[:, -1] == 51).all() and not (last[:, :-1] == 51).any()


def test_bert4rec_loss_counts_the_masked_positions_only():
    lamina.set_default_dtype(np.float64)
    model = BERT4Rec(9, max_len=6, dim=8, num_blocks=1, num_heads=2, dropout=0.0, mask_prob=0.4, last_prob=0.0)
    _randomize(model, 1, 0.3)
    rows = ROWS
    masked, labels = cloze_mask(rows, model.mask_id, 0.4, rng=5)
    assert 0 < (labels != 0).sum() < (rows != 0).sum()
    logits = torch.tensor(model(masked).numpy())
    kept = torch.tensor(labels != 0)
    expected = torch.nn.functional.cross_entropy(logits[kept], torch.tensor(labels)[kept] - 1)
    everywhere = torch.nn.functional.cross_entropy(logits[torch.tensor(rows != 0)], torch.tensor(rows[rows != 0]) - 1)
    loss = model.batch_loss(rows, rng=5)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    assert abs(loss.item() - everywhere.item()) > 1e-3
    inference = model.inference_rows([np.array([4, 0, 2])])
    assert inference.tolist() == [[0, 0, 5, 1, 3, model.mask_id]]   # the history, then [MASK]


def test_gru4rec_loss_matches_torch_gru_on_the_unpadded_steps():
    lamina.set_default_dtype(np.float64)
    model = GRU4Rec(9, max_len=6, dim=4, hidden=5, dropout=0.0)
    _randomize(model, 2)
    loss = model.batch_loss(ROWS, TARGETS)
    loss.backward()

    p = {name: torch.tensor(param.data, requires_grad=True) for name, param in model.named_parameters()}
    gru = torch.nn.GRU(4, 5, batch_first=True, dtype=torch.float64)
    for mine, theirs in (("kernel", "weight_ih_l0"), ("recurrent_kernel", "weight_hh_l0"), ("bias", "bias_ih_l0"),
                         ("recurrent_bias", "bias_hh_l0")):
        param = p[f"gru.{mine}"]
        setattr(gru, theirs, torch.nn.Parameter(param.T if param.ndim == 2 else param))
    logits, labels = [], []
    for row, targets in zip(ROWS, TARGETS):
        real = row != 0                                   # the padding is skipped: the GRU reads the real steps
        states, _ = gru(p["item_embedding.weight"][torch.tensor(row[real])][None])
        logits.append(states[0] @ p["output_layer.weight"] + p["output_layer.bias"])
        labels.append(torch.tensor(targets[real] - 1))
    expected = torch.nn.functional.cross_entropy(torch.cat(logits), torch.cat(labels))
    expected.backward()
    grads = {"gru.kernel": gru.weight_ih_l0.grad.T, "gru.recurrent_kernel": gru.weight_hh_l0.grad.T,
             "gru.bias": gru.bias_ih_l0.grad, "gru.recurrent_bias": gru.bias_hh_l0.grad}
    assert loss.item() == pytest.approx(expected.item(), rel=1e-12)
    for name, param in model.named_parameters():
        reference = (grads[name] if name in grads else p[name].grad).numpy().copy()
        if name == "item_embedding.weight":
            reference[0] = 0.0
        np.testing.assert_allclose(param.grad, reference, rtol=1e-9, atol=1e-12, err_msg=name)


def test_gru4rec_skips_the_padding():
    lamina.set_default_dtype(np.float64)
    model = GRU4Rec(9, max_len=6, dim=5, hidden=7, dropout=0.0)
    _randomize(model, 3)                                   # non-zero biases: a read padding step would move the state
    padded = model(ROWS[2:]).numpy()
    bare = model(ROWS[2:, 4:]).numpy()
    np.testing.assert_allclose(padded[:, 4:], bare, rtol=1e-12)
    assert model.score_next([np.array([1, 2])]).shape == (1, 9)


def test_all_three_beat_popularity_on_markov_sequences():
    data = synthetic_markov_sequences(n_users=200, n_clusters=5, items_per_cluster=10, length=10, stay=0.05,
                                      follow=0.85, popularity=0.5, seed=0)
    split = leave_one_out_sequences(user_sequences(data))
    counts = np.bincount(np.concatenate(split.train), minlength=data.n_items).astype(np.float64)
    popularity = next_item_metrics(np.tile(counts, (len(split.users), 1)), split.test_targets, split.test_inputs)
    runs = {"GRU4Rec": (GRU4Rec, {"dim": 32}, 8), "SASRec": (SASRec, {"dim": 32}, 8),
            "BERT4Rec": (BERT4Rec, {"dim": 16, "num_blocks": 1, "num_heads": 1, "dropout": 0.0, "mask_prob": 0.3,
                                    "last_prob": 0.2}, 80)}
    figures = {"popularity": popularity["ndcg"]}
    for name, (kind, options, epochs) in runs.items():
        lamina.manual_seed(0)
        model = kind(data.n_items, max_len=10, **options)
        losses = fit_sequential(model, split.train, epochs=epochs, batch_size=32, lr=1e-2, seed=0)
        assert losses[-1] < losses[0]
        figures[name] = evaluate_next_item(model, split.test_inputs, split.test_targets, k=10)["ndcg"]
    print("NDCG@10 (full ranking):", {name: round(value, 3) for name, value in figures.items()})
    for name in runs:
        assert figures[name] > figures["popularity"] + 0.1, (name, figures)

@pytest.mark.parametrize("kind", [GRU4Rec, SASRec, BERT4Rec])
def test_models_rebuild_from_their_config(kind):
    model = kind(9, max_len=6, dim=4, dropout=0.0)
    model.eval()
    twin = lamina.nn.layer_from_config(lamina.nn.layer_to_config(model))
    twin.load_state_dict(model.state_dict())
    assert type(twin) is kind and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin.score_next([np.array([1, 2, 3])]), model.score_next([np.array([1, 2, 3])]))


def test_readme_example_runs():
    printed, _ = run_readme_section("Sequential recommendation")
    assert printed.split() == ["True", "True"]

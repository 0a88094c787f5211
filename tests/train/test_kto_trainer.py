"""KTO on the toy language of test_preference_trainers: unpaired rows and their KL rows, the
trainer's loss against log-probabilities computed row by row and TRL's formula in torch, and a
tiny GPT-2 moved towards even final digits by desirable/undesirable labels alone."""

import copy

import numpy as np
import pytest
import torch
from test_preference_trainers import DIGIT, EOS, even_share, preference_pairs, prompts, train_language_model

import lamina
from lamina import functional as F
from lamina.autograd import no_grad
from lamina.nn import apply_lora
from lamina.train import KTOTrainer, PreferenceDataset, UnpairedBatch, UnpairedPreferenceDataset, kl_completion_order


@pytest.fixture(scope="module")
def language_model():
    return train_language_model()


def unpaired_rows(n: int, seed: int) -> UnpairedPreferenceDataset:
    """Prompts each with one digit completion, desirable when it is even."""
    rng = np.random.default_rng(seed)
    digits = rng.integers(0, 10, n)
    return UnpairedPreferenceDataset(prompts(n, rng), [[DIGIT + d, EOS] for d in digits], digits % 2 == 0)


def row_log_prob(model, prompt, completion) -> float:
    """log pi(completion | prompt) of one unpadded row, from the model's scores in float64."""
    ids = np.concatenate([prompt, completion])
    with no_grad():
        scores = torch.tensor(model(lamina.tensor(ids[None])).numpy()[0], dtype=torch.float64)
    token_log_probs = torch.log_softmax(scores[:-1], dim=-1)[torch.arange(ids.size - 1), torch.tensor(ids[1:])]
    return float(token_log_probs[prompt.size - 1:].sum())


# -- data --------------------------------------------------------------------------------------
def test_collate_pads_rows_and_shifts_completions_for_the_kl_rows():
    data = UnpairedPreferenceDataset([[1, 5], [1], [1, 4, 4]], [[7, 8], [6], [9]], [True, False, True])
    batch = data.collate([0, 1, 2])
    assert isinstance(batch, UnpairedBatch) and len(batch) == 3
    np.testing.assert_array_equal(batch.input_ids, [[1, 5, 7, 8], [1, 6, 0, 0], [1, 4, 4, 9]])
    np.testing.assert_array_equal(batch.attention_mask, batch.input_ids > 0)
    np.testing.assert_array_equal(batch.completion_mask, [[0, 0, 1, 1], [0, 1, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(batch.desirable, [0, 2])
    np.testing.assert_array_equal(batch.undesirable, [1])
    # TRL's KL completions: [completions[-1]] + completions[:-1]
    completions = [data.completions[i] for i in (0, 1, 2)]
    kl_completions = [completions[-1]] + completions[:-1]
    np.testing.assert_array_equal(kl_completion_order(3), [2, 0, 1])
    for r, (prompt, completion) in enumerate(zip(data.prompts, kl_completions)):
        ids = batch.kl.input_ids[r][batch.kl.attention_mask[r]]
        np.testing.assert_array_equal(ids, np.concatenate([prompt, completion]))
        np.testing.assert_array_equal(batch.kl.input_ids[r][batch.kl.completion_mask[r]], completion)
    shuffled = data.collate([2, 0])
    np.testing.assert_array_equal(shuffled.kl.input_ids, [[1, 4, 4, 7, 8], [1, 5, 9, 0, 0]])
    assert [len(b) for b in data.batches(2)] == [2, 1]


def test_from_pairs_makes_chosen_desirable_and_rejected_undesirable():
    pairs = PreferenceDataset([[1, 5], [1]], [[7], [6, 6]], [[4], [3]], pad_token_id=0, max_length=3)
    data = UnpairedPreferenceDataset.from_pairs(pairs)
    assert len(data) == 4 and data.num_desirable == data.num_undesirable == 2 and data.max_length == 3
    assert [(list(p), list(c), label) for p, c, label in (data[i] for i in range(4))] == [
        ([1, 5], [7], True), ([1], [6, 6], True), ([1, 5], [4], False), ([1], [3], False)]


# -- the loss ------------------------------------------------------------------------------------
@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.3, 0.6)])
def test_loss_matches_kto_loss_and_trls_formula(language_model, weights):
    policy_model = copy.deepcopy(language_model)
    rng = np.random.default_rng(0)
    for p in policy_model.parameters():
        p.data = p.numpy() + 0.05 * rng.standard_normal(p.shape).astype(p.numpy().dtype)
    reference_model = copy.deepcopy(language_model)   # the trainer freezes its reference
    trainer = KTOTrainer(policy_model, ref_model=reference_model, beta=0.5, desirable_weight=weights[0],
                         undesirable_weight=weights[1])
    data = unpaired_rows(6, seed=8)
    indices = np.array([3, 0, 5, 1, 4, 2])
    loss, logs = trainer.compute_loss(data.collate(indices))

    def log_probs(model, completions):
        return torch.tensor([row_log_prob(model, data.prompts[i], data.completions[j])
                             for i, j in zip(indices, completions)], dtype=torch.float64)

    shifted = indices[kl_completion_order(len(indices))]
    policy, reference = log_probs(policy_model, indices), log_probs(reference_model, indices)
    policy_kl, reference_kl = log_probs(policy_model, shifted), log_probs(reference_model, shifted)
    good = torch.tensor(data.labels[indices])
    expected, *_ = F.kto_loss(policy[good].numpy(), policy[~good].numpy(), policy_kl.numpy(),
                              reference[good].numpy(), reference[~good].numpy(), reference_kl.numpy(), beta=0.5,
                              desirable_weight=weights[0], undesirable_weight=weights[1])
    # TRL's KTO loss
    kl = (policy_kl - reference_kl).mean().clamp(min=0)
    chosen_losses = 1 - torch.sigmoid(0.5 * ((policy - reference)[good] - kl))
    rejected_losses = 1 - torch.sigmoid(0.5 * (kl - (policy - reference)[~good]))
    trl = torch.cat([weights[0] * chosen_losses, weights[1] * rejected_losses]).nanmean()
    assert float(kl) > 0
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-5)
    np.testing.assert_allclose(loss.item(), float(trl), rtol=1e-5)
    np.testing.assert_allclose(logs["kl"], float(kl), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(logs["rewards/chosen"], float(0.5 * (policy - reference)[good].mean()),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logs["logps/rejected"], float(policy[~good].mean()), rtol=1e-5)


def test_batches_of_one_group_log_only_its_rewards(language_model):
    trainer = KTOTrainer(copy.deepcopy(language_model))
    data = unpaired_rows(12, seed=9)
    _, logs = trainer.compute_loss(data.collate(np.flatnonzero(~data.labels)))
    assert "rewards/rejected" in logs and "rewards/chosen" not in logs and "rewards/margins" not in logs
    means = trainer.evaluate(data, batch_size=12)
    assert set(means) >= {"rewards/chosen", "rewards/rejected", "kl", "loss"}


# -- learning ----------------------------------------------------------------------------------
def test_kto_moves_greedy_completions_to_the_preferred_digits(language_model):
    start = prompts(200, np.random.default_rng(5))
    trainer = KTOTrainer(copy.deepcopy(language_model), beta=0.1, lr=1e-2)
    data = UnpairedPreferenceDataset.from_pairs(preference_pairs(192, seed=1))
    history = trainer.fit(data, epochs=2, batch_size=32, seed=0,
                          eval_data=UnpairedPreferenceDataset.from_pairs(preference_pairs(64, seed=2)))
    assert history["rewards/margins"][-1] > history["rewards/margins"][0] > 0
    assert history["val_rewards/chosen"][-1] > 0 > history["val_rewards/rejected"][-1]
    reference, policy = even_share(trainer.ref_model, start), even_share(trainer.model, start)
    assert reference == even_share(language_model, start) < 0.7
    assert policy > 0.85 and policy > reference + 0.25


def test_lora_policy_uses_its_base_model_as_reference(language_model):
    trainer = KTOTrainer(apply_lora(copy.deepcopy(language_model), r=2, alpha=4.0), lr=1e-2)
    assert trainer.uses_adapters and trainer.ref_model is None
    batch = unpaired_rows(8, seed=10).collate(np.arange(8))
    first = trainer.train_step(batch)
    assert first["kl"] == 0 and abs(first["rewards/chosen"]) < 1e-6
    assert trainer.train_step(batch)["loss"] < first["loss"]


# -- errors --------------------------------------------------------------------------------------
def test_errors_are_clear(language_model):
    with pytest.raises(ValueError, match="both the desirable and the undesirable sets are empty"):
        UnpairedPreferenceDataset([], [], np.zeros(0, bool))
    with pytest.raises(ValueError, match="got 2 prompts, 1 completions and labels of shape"):
        UnpairedPreferenceDataset([[1], [1]], [[2]], [True, False])
    with pytest.raises(TypeError, match="labels must be bools"):
        UnpairedPreferenceDataset([[1]], [[2]], [1])
    with pytest.raises(ValueError, match=r"completions \[0\] are empty"):
        UnpairedPreferenceDataset([[1]], [[]], [True])
    for name in ("desirable_weight", "undesirable_weight"):
        for value in (0, -1.0):
            with pytest.raises(ValueError, match=f"KTOTrainer: {name} must be a finite number > 0, got {value}"):
                KTOTrainer(language_model, **{name: value})
    with pytest.raises(TypeError, match="KTOTrainer: expected a UnpairedPreferenceDataset, got PreferenceDataset"):
        KTOTrainer(language_model).fit(preference_pairs(4, seed=0))
    with pytest.raises(TypeError, match=r"expected a UnpairedBatch \(UnpairedPreferenceDataset.collate\)"):
        KTOTrainer(language_model).train_step(preference_pairs(4, seed=0).collate([0]))

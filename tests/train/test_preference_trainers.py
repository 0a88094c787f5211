"""Preference optimization end to end on a toy language: a tiny GPT-2 learns to continue
BOS d1 d2 with a copy of d2, then DPO (and ORPO, SimPO) on pairs preferring an even final digit
moves its greedy completions to even digits; a reward model learns to rank held-out pairs; the
LoRA path uses the base model as the reference."""

import copy

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.models import GPT2
from lamina.nn import apply_lora
from lamina.optim import Adam
from lamina.train import (
    DPOTrainer,
    ORPOTrainer,
    PreferenceBatch,
    PreferenceDataset,
    RewardModel,
    RewardTrainer,
    SimPOTrainer,
    adapters_disabled,
)

BOS, EOS, DIGIT = 1, 2, 3           # token ids: 0 pads, digits d are DIGIT + d
VOCAB = DIGIT + 10


def prompts(n: int, rng) -> np.ndarray:
    return np.stack([np.full(n, BOS), *(DIGIT + rng.integers(0, 10, (2, n)))], axis=1)


def preference_pairs(n: int, seed: int) -> PreferenceDataset:
    """Each prompt with an even completion (chosen) and an odd one (rejected)."""
    rng = np.random.default_rng(seed)
    even = 2 * rng.integers(0, 5, n)
    odd = 2 * rng.integers(0, 5, n) + 1
    return PreferenceDataset(prompts(n, rng), [[DIGIT + d, EOS] for d in even], [[DIGIT + d, EOS] for d in odd])


def train_language_model() -> GPT2:
    """~20K parameters, trained briefly on BOS d1 d2 c EOS with c = d2 in 9 cases out of 10."""
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    model = GPT2(vocab_size=VOCAB, n_positions=8, n_embd=24, n_layer=2, n_head=2, embd_pdrop=0.0, resid_pdrop=0.0,
                 attn_pdrop=0.0)
    start = prompts(256, rng)
    completion = np.where(rng.random(256) < 0.9, start[:, 2], DIGIT + rng.integers(0, 10, 256))
    texts = np.concatenate([start, completion[:, None], np.full((256, 1), EOS)], axis=1)
    optimizer = None
    for _ in range(12):
        for rows in np.split(rng.permutation(256), 4):
            ids = texts[rows]
            loss = -F.mean(F.sequence_log_probs(model(lamina.tensor(ids)), ids, np.ones(ids.shape, bool)))
            optimizer = optimizer or Adam(model, lr=1e-2)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    return model


@pytest.fixture(scope="module")
def language_model() -> GPT2:
    return train_language_model()


def even_share(model, start: np.ndarray) -> float:
    """The share of prompts whose greedy completion is an even digit."""
    with no_grad():
        digit = model.generate(start, max_new_tokens=1)[:, -1] - DIGIT
    return float(np.mean((digit >= 0) & (digit < 10) & (digit % 2 == 0)))


# -- data --------------------------------------------------------------------------------------
def test_collate_pads_chosen_then_rejected_rows():
    data = PreferenceDataset([[1, 5], [1]], [[7, 8, 9], [6]], [[4], [3, 3]], pad_token_id=0)
    batch = data.collate([0, 1])
    assert isinstance(batch, PreferenceBatch) and batch.num_pairs == 2
    np.testing.assert_array_equal(batch.input_ids, [[1, 5, 7, 8, 9], [1, 6, 0, 0, 0], [1, 5, 4, 0, 0],
                                                    [1, 3, 3, 0, 0]])
    np.testing.assert_array_equal(batch.attention_mask, batch.input_ids > 0)
    np.testing.assert_array_equal(batch.completion_mask, [[0, 0, 1, 1, 1], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0],
                                                          [0, 1, 1, 0, 0]])
    cut = PreferenceDataset([[1, 2, 3, 4]], [[5, 6, 7]], [[8]], max_length=4).collate([0])
    np.testing.assert_array_equal(cut.input_ids, [[4, 5, 6, 7], [2, 3, 4, 8]])
    assert [len(b.input_ids) for b in data.batches(1)] == [2, 2]


# -- learning ----------------------------------------------------------------------------------
def test_dpo_moves_greedy_completions_to_the_preferred_digits(language_model):
    start = prompts(200, np.random.default_rng(5))
    trainer = DPOTrainer(copy.deepcopy(language_model), beta=0.05, lr=1e-2)
    before = trainer.evaluate(preference_pairs(64, seed=2))
    history = trainer.fit(preference_pairs(192, seed=1), epochs=2, batch_size=32, seed=0,
                          eval_data=preference_pairs(64, seed=2))
    assert history["rewards/accuracies"][-1] > 0.95
    assert history["val_rewards/accuracies"][-1] > 0.95 > before["rewards/accuracies"]
    assert history["val_rewards/margins"][-1] > history["val_rewards/margins"][0] > before["rewards/margins"]
    reference, policy = even_share(trainer.ref_model, start), even_share(trainer.model, start)
    assert reference == even_share(language_model, start) < 0.7
    assert policy > 0.85 and policy > reference + 0.25


@pytest.mark.parametrize("trainer_class", [ORPOTrainer, SimPOTrainer])
def test_reference_free_trainers_learn_the_preference(language_model, trainer_class):
    trainer = trainer_class(copy.deepcopy(language_model), lr=3e-3)
    history = trainer.fit(preference_pairs(128, seed=3), epochs=2, batch_size=32, seed=0)
    assert history["rewards/accuracies"][-1] > history["rewards/accuracies"][0]
    assert trainer.evaluate(preference_pairs(64, seed=2))["rewards/accuracies"] > 0.9


def test_reward_model_ranks_held_out_pairs(language_model):
    reward_model = RewardModel(copy.deepcopy(language_model))
    trainer = RewardTrainer(reward_model, lr=3e-3, center_rewards_coefficient=0.01)
    held_out = preference_pairs(100, seed=4)
    chance = trainer.evaluate(held_out)["accuracy"]
    trainer.fit(preference_pairs(192, seed=1), epochs=3, batch_size=32, seed=0)
    scores = trainer.evaluate(held_out)
    assert scores["accuracy"] > 0.95 > chance and scores["rewards/margins"] > 0
    batch = held_out.collate(np.arange(4))
    with no_grad():
        rewards = reward_model(lamina.tensor(batch.input_ids), key_mask=batch.attention_mask).numpy()
    assert rewards.shape == (8,) and (rewards[:4] > rewards[4:]).all()


def test_reward_model_reads_the_last_real_token(language_model):
    reward_model = RewardModel(copy.deepcopy(language_model))
    ids = np.array([[BOS, DIGIT, DIGIT + 4, EOS, 0, 0], [BOS, DIGIT + 1, EOS, 0, 0, 0]])
    with no_grad():
        padded = reward_model(lamina.tensor(ids), key_mask=ids > 0).numpy()
        alone = [reward_model(lamina.tensor(ids[i:i + 1, :n])).item() for i, n in ((0, 4), (1, 3))]
    np.testing.assert_allclose(padded, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("loss_type", F.DPO_LOSS_TYPES)
def test_every_loss_type_trains(language_model, loss_type):
    trainer = DPOTrainer(copy.deepcopy(language_model), loss_type=loss_type, label_smoothing=0.1 * (
        loss_type in ("sigmoid", "robust")), lr=1e-3)
    batch = preference_pairs(8, seed=6).collate(np.arange(8))
    first = trainer.train_step(batch)
    second = trainer.train_step(batch)
    assert np.isfinite(first["loss"]) and np.isfinite(second["loss"])
    if loss_type != "discopop":     # its modulation makes it push the margin down near 0, as TRL's
        assert second["rewards/margins"] > first["rewards/margins"]
    assert trainer.average_log_prob == (loss_type == "ipo")


def test_lora_policy_uses_its_base_model_as_reference(language_model):
    model = apply_lora(copy.deepcopy(language_model), r=4, alpha=8.0)
    base_weights = {name: p.numpy().copy() for name, p in model.named_parameters() if "lora" not in name}
    trainer = DPOTrainer(model, beta=0.1, lr=1e-2)
    assert trainer.uses_adapters and trainer.ref_model is None
    batch = preference_pairs(16, seed=7).collate(np.arange(16))
    with no_grad():
        expected = F.sequence_log_probs(language_model(lamina.tensor(batch.input_ids)), batch.input_ids,
                                        batch.completion_mask).numpy()
    for _ in range(3):
        logs = trainer.train_step(batch)
    np.testing.assert_allclose(trainer.reference_log_probs(batch).numpy(), expected, rtol=1e-5)
    assert logs["rewards/accuracies"] > 0.5 and abs(logs["rewards/margins"]) > 0
    for name, p in model.named_parameters():
        if name in base_weights:
            np.testing.assert_array_equal(p.numpy(), base_weights[name])
    with adapters_disabled(model):
        assert all(a.merged for a in model.modules() if type(a).__name__ == "LoRAAdapter")
    assert not any(a.merged for a in model.modules() if type(a).__name__ == "LoRAAdapter")


# -- errors --------------------------------------------------------------------------------------
def test_errors_are_clear(language_model):
    with pytest.raises(ValueError, match="DPOTrainer: beta must be a finite number > 0, got -1"):
        DPOTrainer(language_model, beta=-1)
    with pytest.raises(ValueError, match="unknown loss_type 'dpo'; expected one of sigmoid, robust"):
        DPOTrainer(language_model, loss_type="dpo")
    with pytest.raises(ValueError, match="not built"):
        DPOTrainer(GPT2(vocab_size=VOCAB, n_positions=8, n_embd=8, n_layer=1, n_head=1))
    with pytest.raises(ValueError, match="ref_model must not be the model"):
        DPOTrainer(language_model, ref_model=language_model)
    with pytest.raises(TypeError, match="RewardTrainer: the model must be a RewardModel"):
        RewardTrainer(language_model)
    with pytest.raises(TypeError, match="expected a PreferenceDataset"):
        ORPOTrainer(language_model).fit([([1], [2], [3])])
    with pytest.raises(ValueError, match="got 2 prompts, 1 chosen and 2 rejected"):
        PreferenceDataset([[1], [1]], [[2]], [[3], [4]])
    with pytest.raises(ValueError, match=r"prompts \[1\] are empty"):
        PreferenceDataset([[1], []], [[2], [2]], [[3], [4]])
    with pytest.raises(ValueError, match=r"margins must hold one number per pair \(1\)"):
        PreferenceDataset([[1]], [[2]], [[3]], margins=[1.0, 2.0])
    with pytest.raises(ShapeError, match="RewardModel: expected token ids of shape"):
        RewardModel(language_model)(lamina.tensor(np.array([1, 2, 3])))

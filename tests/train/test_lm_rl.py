"""Online RL of language models (GRPO, RLOO, PPO with a value head): the advantages, the k3 KL
estimator and GAE over tokens against NumPy; the losses against float64 torch rewrites (values
and gradients w.r.t. the logits); end-token masks; GRPO at ratio 1 and no KL as REINFORCE; a
tiny GPT-2 learning to emit token A more often than token B; the KL coefficient holding the
policy near its reference; the README example."""

import numpy as np
import pytest
import torch
from tests.helpers import assert_close, run_readme_section

import lamina
from lamina import functional as F
from lamina.models import GPT2, Llama
from lamina.rl.ppo import compute_gae
from lamina.train import (
    GRPOTrainer,
    PPOTrainer,
    RLOOTrainer,
    completion_log_probs,
    completion_mask,
    group_advantages,
    grpo_loss,
    k3_kl,
    ppo_lm_losses,
    rloo_advantages,
    rloo_loss,
    token_gae,
)

BOS, EOS, A, B = 1, 2, 3, 4          # 0 pads; tokens 3..7 are the "letters", A and B among them
VOCAB, PROMPT, NEW = 8, 2, 4


def tiny_gpt2(seed: int = 0) -> GPT2:
    lamina.manual_seed(seed)
    model = GPT2(vocab_size=VOCAB, n_positions=8, n_embd=16, n_layer=1, n_head=2, embd_pdrop=0.0, resid_pdrop=0.0,
                 attn_pdrop=0.0)
    model.build((None, 1))
    return model


def more_a_than_b(prompt, completion) -> float:
    return float((completion == A).sum() > (completion == B).sum())


PROMPTS = np.random.default_rng(0).integers(3, 8, (32, PROMPT))


# -- formulas against NumPy ------------------------------------------------------------------
def test_group_advantages_match_numpy():
    rewards = np.random.default_rng(1).normal(size=12)
    expected = []
    for group in rewards.reshape(3, 4):
        expected.extend((group - group.mean()) / (np.std(group, ddof=1) + 1e-4))
    assert_close(group_advantages(rewards, 4), expected, 1e-12)
    assert np.allclose(group_advantages(np.ones(6), 3), 0.0)       # a group of equal rewards learns nothing


def test_rloo_advantages_leave_one_out():
    rewards = np.random.default_rng(2).normal(size=10)
    expected = [r[i] - np.delete(r, i).mean() for r in rewards.reshape(2, 5) for i in range(5)]
    assert_close(rloo_advantages(rewards, 5), expected, 1e-12)
    assert abs(rloo_advantages(rewards, 5).reshape(2, 5).sum(axis=1)).max() < 1e-12


def test_k3_kl_is_nonnegative_and_estimates_the_kl():
    rng = np.random.default_rng(3)
    log_p, log_q = rng.normal(size=(2, 50))
    d = log_q - log_p
    assert_close(k3_kl(log_p, log_q), np.exp(d) - d - 1, 1e-12)
    assert (k3_kl(log_p, log_q) >= 0).all() and np.allclose(k3_kl(log_p, log_p), 0.0)
    tensor = k3_kl(lamina.tensor(log_p, dtype=np.float64), log_q)
    assert_close(tensor.numpy(), np.exp(d) - d - 1, 1e-12)
    # on samples of p its mean is KL(p || q)
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.2, 0.6])
    x = rng.choice(3, 200_000, p=p)
    estimate = k3_kl(np.log(p[x]), np.log(q[x])).mean()
    assert abs(estimate - (p * np.log(p / q)).sum()) < 0.01


def test_token_gae_matches_loops_and_rl_compute_gae():
    rng = np.random.default_rng(4)
    rewards, values = rng.normal(size=(2, 3, 5))
    mask = completion_mask(np.array([[5, 6, 2, 0, 0], [5, 5, 5, 5, 5], [2, 0, 0, 0, 0]]), EOS)
    advantages, returns = token_gae(rewards, values, mask, gamma=0.9, lam=0.8)
    for i, length in enumerate(mask.sum(axis=1)):
        expected = np.zeros(5)
        for t in range(length):
            for k in range(t, length):
                next_value = values[i, k + 1] if k + 1 < length else 0.0
                delta = rewards[i, k] + 0.9 * next_value - values[i, k]
                expected[t] += (0.9 * 0.8) ** (k - t) * delta
        assert_close(advantages[i], expected, 1e-12)
        assert_close(returns[i, :length], expected[:length] + values[i, :length], 1e-12)
        assert (returns[i, length:] == 0).all()
        # lamina.rl's GAE on the same single-episode rollout
        steps = np.arange(length)
        rl_adv, _ = compute_gae(rewards[i, :length, None], values[i, :length, None],
                                np.append(values[i, 1:length], 0.0)[:, None], (steps == length - 1)[:, None],
                                (steps == length - 1)[:, None], gamma=0.9, lam=0.8)
        assert_close(advantages[i, :length], rl_adv[:, 0], 1e-12)


def test_completion_mask_keeps_tokens_up_to_the_first_end():
    ids = np.array([[5, 2, 6, 2], [2, 5, 5, 5], [5, 6, 7, 3]])
    expected = [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1]]
    assert (completion_mask(ids, EOS) == np.array(expected, bool)).all()
    assert completion_mask(ids, None).all()


# -- losses against float64 torch rewrites -----------------------------------------------------
def fixed_batch(seed: int = 5):
    """Scores (N, P + L, V) of fixed sequences, whose third and fourth rows end early."""
    rng = np.random.default_rng(seed)
    n, length = 4, 5
    logits = rng.normal(size=(n, PROMPT + length, VOCAB))
    sequences = rng.integers(3, VOCAB, (n, PROMPT + length))
    sequences[2, PROMPT + 1], sequences[3, PROMPT] = EOS, EOS
    sequences[2, PROMPT + 2:] = sequences[3, PROMPT + 1:] = 0
    mask = completion_mask(sequences[:, PROMPT:], EOS)
    return logits, sequences, mask, rng


def torch_log_probs(logits: torch.Tensor, sequences: np.ndarray, temperature: float = 1.0) -> torch.Tensor:
    scores = torch.log_softmax(logits[:, PROMPT - 1:-1] / temperature, dim=-1)
    return scores.gather(-1, torch.as_tensor(sequences[:, PROMPT:, None])).squeeze(-1)


def test_completion_log_probs_sum_to_sequence_log_probs():
    logits, sequences, mask, _ = fixed_batch(10)
    tokens = completion_log_probs(lamina.tensor(logits, dtype=np.float64), sequences, PROMPT).numpy()
    full_mask = np.concatenate([np.zeros((len(mask), PROMPT), bool), mask], axis=1)
    assert_close((tokens * mask).sum(axis=1), F.sequence_log_probs(logits, sequences, full_mask).numpy(), 1e-12)
    assert_close(tokens, torch_log_probs(torch.tensor(logits), sequences).numpy(), 1e-12)


def both(loss_fn, torch_fn, logits: np.ndarray):
    """(lamina loss, its logits gradient, torch loss, its logits gradient)."""
    ours = lamina.tensor(logits, requires_grad=True, dtype=np.float64)
    loss = loss_fn(ours)
    loss.backward()
    theirs = torch.tensor(logits, requires_grad=True)
    reference = torch_fn(theirs)
    reference.backward()
    return loss.item(), ours.grad, reference.item(), theirs.grad.numpy()


def check_against_torch(loss_fn, torch_fn, logits):
    loss, grad, ref, ref_grad = both(loss_fn, torch_fn, logits)
    assert abs(loss - ref) < 1e-12 * max(1.0, abs(ref))
    assert_close(grad, ref_grad, 1e-10, "gradient w.r.t. the logits")
    return grad


def test_grpo_loss_matches_torch():
    logits, sequences, mask, rng = fixed_batch()
    base = torch_log_probs(torch.tensor(logits), sequences, 0.7).numpy()
    old, ref = base + rng.normal(0, 0.3, base.shape), base + rng.normal(0, 0.3, base.shape)
    advantages = group_advantages(rng.normal(size=4), 2)

    def ours(z):
        return grpo_loss(completion_log_probs(z, sequences, PROMPT, 0.7), old, ref, advantages, mask, 0.2, 0.1)

    def theirs(z):
        logp = torch_log_probs(z, sequences, 0.7)
        ratio = torch.exp(logp - torch.tensor(old))
        adv = torch.tensor(advantages)[:, None]
        surrogate = torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv)
        d = torch.tensor(ref) - logp
        per_token = -(surrogate - 0.1 * (torch.exp(d) - d - 1))
        keep = torch.tensor(mask, dtype=torch.float64)
        return ((per_token * keep).sum(1) / keep.sum(1)).mean()

    ratio = np.exp(base - old)[mask]
    assert ((ratio < 0.8) | (ratio > 1.2)).any()               # some tokens are clipped
    check_against_torch(ours, theirs, logits)


def test_rloo_loss_matches_torch():
    logits, sequences, mask, rng = fixed_batch(6)
    advantages = rloo_advantages(rng.normal(size=4), 4)

    def theirs(z):
        logp = torch_log_probs(z, sequences)
        return -((logp * torch.tensor(mask, dtype=torch.float64)).sum(1) * torch.tensor(advantages)).mean()

    check_against_torch(lambda z: rloo_loss(completion_log_probs(z, sequences, PROMPT), advantages, mask), theirs,
                        logits)


def test_ppo_losses_match_torch():
    logits, sequences, mask, rng = fixed_batch(7)
    base = torch_log_probs(torch.tensor(logits), sequences).numpy()
    old = base + rng.normal(0, 0.3, base.shape)
    values, old_values, returns, advantages = rng.normal(size=(4,) + base.shape)
    keep = torch.tensor(mask, dtype=torch.float64)

    def ours(z, v):
        policy, value = ppo_lm_losses(completion_log_probs(z, sequences, PROMPT), old, v, old_values, advantages,
                                      returns, mask, 0.2, 0.1)
        return policy + 0.5 * value

    def theirs(z, v):
        ratio = torch.exp(torch_log_probs(z, sequences) - torch.tensor(old))
        adv = torch.tensor(advantages)
        policy = -(torch.min(ratio * adv, torch.clamp(ratio, 0.8, 1.2) * adv) * keep).sum() / keep.sum()
        target, old_v = torch.tensor(returns), torch.tensor(old_values)
        clipped = old_v + torch.clamp(v - old_v, -0.1, 0.1)
        value = 0.5 * (torch.max((v - target) ** 2, (clipped - target) ** 2) * keep).sum() / keep.sum()
        return policy + 0.5 * value

    z, v = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in (logits, values))
    loss = ours(z, v)
    loss.backward()
    tz, tv = (torch.tensor(a, requires_grad=True) for a in (logits, values))
    reference = theirs(tz, tv)
    reference.backward()
    assert abs(loss.item() - reference.item()) < 1e-12
    assert_close(z.grad, tz.grad.numpy(), 1e-10, "gradient w.r.t. the logits")
    assert_close(v.grad, tv.grad.numpy(), 1e-10, "gradient w.r.t. the values")


def test_tokens_after_the_end_do_not_contribute():
    logits, sequences, mask, rng = fixed_batch(8)
    base = torch_log_probs(torch.tensor(logits), sequences).numpy()
    old, ref = base + rng.normal(0, 0.2, base.shape), base + rng.normal(0, 0.2, base.shape)
    advantages = rng.normal(size=4)
    losses = {
        "grpo": lambda z, s: grpo_loss(completion_log_probs(z, s, PROMPT), old, ref, advantages, mask),
        "rloo": lambda z, s: rloo_loss(completion_log_probs(z, s, PROMPT), advantages, mask),
        "ppo": lambda z, s: ppo_lm_losses(completion_log_probs(z, s, PROMPT), old,
                                          lamina.tensor(base, dtype=np.float64), old, old, base, mask)[0],
    }
    # change the scores that predict masked tokens and the masked tokens themselves
    scored = np.zeros(sequences.shape, bool)
    scored[:, PROMPT - 1:-1] = ~mask
    changed_logits = np.where(scored[..., None], rng.normal(0, 5, logits.shape), logits)
    changed = sequences.copy()
    changed[:, PROMPT:][~mask] = rng.integers(3, VOCAB, (~mask).sum())
    for name, fn in losses.items():
        results = []
        for z_array, s in ((logits, sequences), (changed_logits, changed)):
            z = lamina.tensor(z_array, requires_grad=True, dtype=np.float64)
            loss = fn(z, s)
            loss.backward()
            results.append((loss.item(), z.grad))
        assert abs(results[0][0] - results[1][0]) < 1e-12, name
        assert_close(results[0][1], results[1][1], 1e-12, f"{name} gradient")
        assert (results[0][1][scored] == 0).all(), name


def test_grpo_at_ratio_one_without_kl_is_reinforce():
    logits, sequences, mask, rng = fixed_batch(9)
    advantages = group_advantages(rng.normal(size=4), 4)
    old = torch_log_probs(torch.tensor(logits), sequences).numpy()        # pi_old = pi: the ratio is 1
    lengths = mask.sum(axis=1)

    def reinforce(z):  # -mean_i A_i / |o_i| sum_t grad log pi
        logp = torch_log_probs(z, sequences) * torch.tensor(mask, dtype=torch.float64)
        return -(torch.tensor(advantages / lengths) * logp.sum(1)).mean()

    ours = lamina.tensor(logits, requires_grad=True, dtype=np.float64)
    grpo_loss(completion_log_probs(ours, sequences, PROMPT), old, old * 0.0, advantages, mask, kl_coef=0.0).backward()
    theirs = torch.tensor(logits, requires_grad=True)
    reinforce(theirs).backward()
    assert_close(ours.grad, theirs.grad.numpy(), 1e-10, "GRPO vs REINFORCE gradient")


# -- the trainers' losses on their own rollouts ----------------------------------------------------
def test_trainer_losses_match_torch_on_a_rollout():
    policy = tiny_gpt2()
    grpo = GRPOTrainer(policy, more_a_than_b, group_size=4, max_new_tokens=NEW, eos_token_id=EOS, seed=0,
                       kl_coef=0.1, temperature=0.9)
    rollout = grpo.rollout(PROMPTS[:3])
    assert rollout.sequences.shape[0] == 12 and rollout.rewards.shape == (12,)
    for row, prompt in enumerate(np.repeat(PROMPTS[:3], 4, axis=0)):
        assert (rollout.sequences[row, :PROMPT] == prompt).all()
        assert rollout.rewards[row] == more_a_than_b(prompt, rollout.completions[row][rollout.mask[row]])
    logits = policy(lamina.tensor(rollout.sequences)).numpy().astype(np.float64)
    logp = torch_log_probs(torch.tensor(logits), rollout.sequences, 0.9)
    keep = torch.tensor(rollout.mask, dtype=torch.float64)
    assert_close(rollout.log_probs, logp.numpy(), 1e-5)
    # GRPO on its own samples: the ratio is 1, only the advantages and the (zero) KL term remain
    adv = torch.tensor(group_advantages(rollout.rewards, 4))[:, None]
    expected = -(((adv + 0 * logp) * keep).sum(1) / keep.sum(1)).mean()
    assert abs(grpo.loss(rollout).item() - expected.item()) < 1e-5
    # RLOO: the reference has drifted from the policy, so the KL shaping is not zero
    rloo = RLOOTrainer(policy, more_a_than_b, reference=tiny_gpt2(1), group_size=4, kl_coef=0.3,
                       max_new_tokens=NEW, eos_token_id=EOS, temperature=0.9)
    rollout = rloo.rollout(PROMPTS[:3])
    logp = torch_log_probs(torch.tensor(policy(lamina.tensor(rollout.sequences)).numpy().astype(np.float64)),
                           rollout.sequences, 0.9)
    keep = torch.tensor(rollout.mask, dtype=torch.float64)
    shaped = rollout.rewards - 0.3 * ((rollout.log_probs - rollout.ref_log_probs) * rollout.mask).sum(1)
    groups = shaped.reshape(3, 4)
    baseline = ((groups.sum(1, keepdims=True) - groups) / 3).ravel()
    expected = -(torch.tensor(shaped - baseline) * (logp * keep).sum(1)).mean()
    assert abs(rloo.loss(rollout).item() - expected.item()) < 1e-5


def test_ppo_values_and_token_rewards():
    policy = tiny_gpt2()
    ppo = PPOTrainer(policy, more_a_than_b, reference=tiny_gpt2(1), group_size=2, kl_coef=0.2, max_new_tokens=NEW,
                     eos_token_id=EOS, seed=1)
    rollout = ppo.rollout(PROMPTS[:4])
    log_probs, values = ppo.evaluate(rollout.sequences, PROMPT)
    assert_close(log_probs.numpy(), rollout.log_probs, 1e-5)
    assert values.shape == rollout.mask.shape and np.allclose(values.numpy(), 0.0)     # zero-initialized head
    rewards = ppo.token_rewards(rollout)
    last = rollout.mask.sum(axis=1) - 1
    expected = -0.2 * (rollout.log_probs - rollout.ref_log_probs) * rollout.mask
    expected[np.arange(8), last] += rollout.rewards
    assert_close(rewards, expected, 1e-12)
    assert (rewards[~rollout.mask] == 0).all()
    logs = ppo.update(rollout)
    assert np.isfinite(logs["policy_loss"]) and logs["value_loss"] > 0
    assert not np.allclose(ppo.evaluate(rollout.sequences, PROMPT)[1].numpy(), 0.0)     # the value head learned


def test_llama_policies_train_too():
    lamina.manual_seed(0)
    llama = Llama(vocab_size=VOCAB, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1, max_position_embeddings=8)
    llama.build((None, 1))
    ppo = PPOTrainer(llama, more_a_than_b, group_size=2, max_new_tokens=3, eos_token_id=EOS, seed=0)
    rollout = ppo.rollout(PROMPTS[:2])
    assert_close(ppo.evaluate(rollout.sequences, PROMPT)[0].numpy(), rollout.log_probs, 1e-5)
    before = [p.numpy().copy() for p in llama.parameters()]
    for cls in (GRPOTrainer, RLOOTrainer):
        logs = cls(llama, more_a_than_b, group_size=2, max_new_tokens=3, eos_token_id=EOS, seed=0).train_step(
            np.array([[3, 4], [5, 6]]))
        assert np.isfinite(logs["loss"])
    assert np.isfinite(ppo.train_step(PROMPTS[:2])["value_loss"])
    assert any(not np.array_equal(b, p.numpy()) for b, p in zip(before, llama.parameters()))


# -- learning ----------------------------------------------------------------------------------
def mean_reward(trainer, rollouts: int = 2) -> float:
    return float(np.mean([trainer.rollout(PROMPTS).rewards.mean() for _ in range(rollouts)]))


def sampled_kl(trainer, rollouts: int = 2) -> float:
    return float(np.mean([trainer.rollout(PROMPTS).kl for _ in range(rollouts)]))


@pytest.mark.parametrize("cls", [GRPOTrainer, RLOOTrainer, PPOTrainer])
def test_training_raises_the_reward(cls):
    trainer = cls(tiny_gpt2(), more_a_than_b, group_size=8, max_new_tokens=NEW, eos_token_id=EOS, lr=1e-2, seed=0,
                  kl_coef=0.01)
    before = mean_reward(trainer)
    assert 0.15 < before < 0.4                                  # chance: about 0.27
    history = trainer.fit(PROMPTS, steps=20, batch_size=8)
    after = mean_reward(trainer)
    assert after > (0.8 if cls is not PPOTrainer else before + 0.2), (before, after)
    assert len(history.epochs) == 20 and len(history.epoch["reward"]) == 20


def test_a_larger_kl_coefficient_keeps_the_policy_closer():
    measured = {}
    for kl_coef in (0.0, 0.5):
        trainer = GRPOTrainer(tiny_gpt2(), more_a_than_b, group_size=8, max_new_tokens=NEW, eos_token_id=EOS,
                              lr=1e-2, seed=0, kl_coef=kl_coef, num_iterations=2)
        trainer.fit(PROMPTS, steps=15, batch_size=8)
        measured[kl_coef] = sampled_kl(trainer)
    assert measured[0.5] < 0.5 * measured[0.0], measured


# -- errors and the README -------------------------------------------------------------------
def test_bad_settings_are_refused():
    policy = tiny_gpt2()
    with pytest.raises(ValueError, match="group_size"):
        GRPOTrainer(policy, more_a_than_b, group_size=1)
    with pytest.raises(ValueError, match="reference"):
        RLOOTrainer(policy, more_a_than_b, reference=policy)
    with pytest.raises(ValueError, match="kl_coef"):
        GRPOTrainer(policy, more_a_than_b, kl_coef=-1.0)
    dense = lamina.nn.Dense(3)
    dense(lamina.tensor(np.zeros((1, 2), np.float32)))
    with pytest.raises(TypeError, match="generate"):
        GRPOTrainer(dense, more_a_than_b)
    with pytest.raises(TypeError, match="value head"):
        PPOTrainer(lamina.nn.Dense(3), more_a_than_b)
    with pytest.raises(ValueError, match="not built"):
        GRPOTrainer(GPT2(vocab_size=VOCAB, n_positions=8, n_embd=8, n_layer=1, n_head=1), more_a_than_b)
    with pytest.raises(lamina.errors.ShapeError, match="multiple of group_size"):
        group_advantages(np.ones(5), 2)


def test_readme_example():
    printed, names = run_readme_section("Online RL for language models")
    assert names["after"] > names["before"] + 0.3
    assert "reward" in printed

"""Generalized knowledge distillation of language models (GKDTrainer): completion scores line up
with completion_log_probs; the trainer's loss against a float64 torch rewrite; tokens after the
end token and the teacher get nothing; lmbda picks on- or off-policy batches; a small GPT-2
student distilled on- and off-policy from a GPT-2 teacher trained on a toy Markov language;
bad settings; the README example."""

import numpy as np
import pytest
import torch
from tests.helpers import assert_close, run_readme_section

import lamina
from lamina import functional as F
from lamina.models import GPT2
from lamina.optim import Adam
from lamina.train import GKDTrainer, completion_log_probs, completion_logits

BOS, EOS = 1, 2                      # 0 pads; tokens 3..7 are the language's letters
VOCAB, PROMPT, NEW = 8, 2, 6
LETTERS = np.arange(3, 8)
# each letter is followed by the next one (probability 0.8) or the one after (0.2), cyclically
TRANSITIONS = np.zeros((VOCAB, VOCAB))
TRANSITIONS[LETTERS, 3 + (LETTERS - 2) % 5] = 0.8
TRANSITIONS[LETTERS, 3 + (LETTERS - 1) % 5] = 0.2


def toy_language(n: int, seed: int) -> np.ndarray:
    """(n, PROMPT + NEW) sequences: BOS, a random letter, then the Markov chain."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, PROMPT + NEW), dtype=np.int64)
    rows[:, 0], rows[:, 1] = BOS, rng.choice(LETTERS, n)
    for t in range(2, PROMPT + NEW):
        cumulative = TRANSITIONS[rows[:, t - 1]].cumsum(axis=1)
        rows[:, t] = (rng.random((n, 1)) > cumulative).sum(axis=1)
    return rows


def gpt2(seed: int, width: int, heads: int = 1) -> GPT2:
    lamina.manual_seed(seed)
    model = GPT2(vocab_size=VOCAB, n_positions=PROMPT + NEW, n_embd=width, n_layer=1, n_head=heads,
                 embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0)
    model.build((None, 1))
    return model


def trained_teacher() -> GPT2:
    teacher = gpt2(0, 16, heads=2)
    data = toy_language(256, seed=0)
    optimizer, rng = Adam(list(teacher.parameters()), lr=1e-2), np.random.default_rng(1)
    for _ in range(60):
        batch = data[rng.choice(len(data), 16, replace=False)]
        loss = -F.mean(completion_log_probs(teacher(lamina.tensor(batch)), batch, 1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return teacher


@pytest.fixture(scope="module")
def teacher() -> GPT2:
    return trained_teacher()


def test_completion_logits_line_up_with_completion_log_probs():
    model, rows = gpt2(1, 8), toy_language(3, seed=2)
    logits = model(lamina.tensor(rows))
    scores = completion_logits(logits, PROMPT).numpy()
    picked = np.take_along_axis(scores, rows[:, PROMPT:, None], axis=-1)[..., 0]
    log_norm = np.log(np.exp(scores - scores.max(-1, keepdims=True)).sum(-1)) + scores.max(-1)
    assert_close(picked - log_norm, completion_log_probs(logits, rows, PROMPT).numpy(), 1e-5)


@pytest.mark.parametrize("divergence,beta", [("jsd", 0.3), ("forward_kl", 0.5), ("reverse_kl", 0.5)])
def test_trainer_loss_matches_a_torch_rewrite(divergence, beta):
    student, teacher = gpt2(1, 8), gpt2(2, 8)
    rows = toy_language(4, seed=3)
    rows[0, 4], rows[1, 7] = EOS, EOS
    trainer = GKDTrainer(student, teacher, beta=beta, temperature=1.5, divergence=divergence, eos_token_id=EOS)
    loss = trainer.loss(rows[:, :PROMPT], rows[:, PROMPT:])
    s = torch.tensor(completion_logits(student(lamina.tensor(rows)), PROMPT).numpy(), dtype=torch.float64)
    t = torch.tensor(completion_logits(teacher(lamina.tensor(rows)), PROMPT).numpy(), dtype=torch.float64)
    log_q, log_p = torch.log_softmax(s / 1.5, -1), torch.log_softmax(t / 1.5, -1)
    kl = lambda a, b: (a.exp() * (a - b)).sum(-1)  # noqa: E731
    if divergence == "jsd":
        log_m = torch.log(beta * log_p.exp() + (1 - beta) * log_q.exp())
        per_token = beta * kl(log_p, log_m) + (1 - beta) * kl(log_q, log_m)
    else:
        per_token = kl(log_p, log_q) if divergence == "forward_kl" else kl(log_q, log_p)
    keep = torch.ones(4, NEW)
    keep[0, 3:], keep[1, 6:] = 0, 0      # tokens after the first end token (kept itself) are masked out
    assert loss.item() == pytest.approx(float((per_token * keep).sum() / keep.sum()), rel=1e-3)


def test_tokens_after_the_end_and_the_teacher_get_nothing(teacher):
    student = gpt2(1, 8)
    rows = toy_language(4, seed=4)
    rows[:, 4] = EOS
    trainer = GKDTrainer(student, teacher, lmbda=0.0, max_new_tokens=NEW, eos_token_id=EOS, lr=1e-2, seed=0)
    changed = rows.copy()
    changed[:, 5:] = np.random.default_rng(5).choice(LETTERS, (4, PROMPT + NEW - 5))
    assert trainer.evaluate(rows[:, :PROMPT], rows[:, PROMPT:]) == pytest.approx(
        trainer.evaluate(changed[:, :PROMPT], changed[:, PROMPT:]), rel=1e-6)
    before = [p.numpy().copy() for p in teacher.parameters()]
    student_before = [p.numpy().copy() for p in student.parameters()]
    trainer.train_step(rows[:, :PROMPT], rows[:, PROMPT:])
    trainer.train_step(rows[:, :PROMPT])                     # on-policy: no gradient through the samples
    assert all(p.grad is None for p in teacher.parameters())
    assert all(np.array_equal(a, p.numpy()) for a, p in zip(before, teacher.parameters()))
    assert not all(np.array_equal(a, p.numpy()) for a, p in zip(student_before, student.parameters()))


def test_lmbda_picks_on_or_off_policy_batches():
    rows = toy_language(16, seed=6)
    counts = {}
    for lmbda in (0.0, 0.5, 1.0):
        trainer = GKDTrainer(gpt2(1, 8), gpt2(2, 8), lmbda=lmbda, max_new_tokens=3, seed=1)
        history = trainer.fit(rows[:, :PROMPT], rows[:, PROMPT:], steps=16, batch_size=4)
        counts[lmbda] = sum(history.epoch["on_policy"])
    assert counts[0.0] == 0 and counts[1.0] == 16 and 3 <= counts[0.5] <= 13
    trainer = GKDTrainer(gpt2(1, 8), gpt2(2, 8), lmbda=1.0, max_new_tokens=3, seed=1)
    assert trainer.sample(rows[:2, :PROMPT]).shape == (2, 3)
    assert trainer.train_step(rows[:2, :PROMPT])["completion_length"] == 3.0


def agreement(student, teacher, rows) -> float:
    """How often the student's most likely next letter is the teacher's, over the completions."""
    sequences = lamina.tensor(rows)
    with lamina.no_grad():
        s = completion_logits(student(sequences), PROMPT).numpy().argmax(-1)
        t = completion_logits(teacher(sequences), PROMPT).numpy().argmax(-1)
    return float((s == t).mean())


@pytest.mark.parametrize("lmbda", [0.0, 1.0])
def test_distillation_brings_the_student_to_the_teacher(teacher, lmbda):
    data, held_out = toy_language(256, seed=7), toy_language(64, seed=8)
    student = gpt2(3, 8)
    trainer = GKDTrainer(student, teacher, lmbda=lmbda, beta=0.5, max_new_tokens=NEW, lr=1e-2, seed=0)
    prompts, completions = held_out[:, :PROMPT], held_out[:, PROMPT:]
    before, agree_before = trainer.evaluate(prompts, completions), agreement(student, teacher, held_out)
    own_before = trainer.evaluate(prompts, trainer.sample(prompts))
    trainer.fit(data[:, :PROMPT], data[:, PROMPT:], steps=80, batch_size=16)
    after, agree_after = trainer.evaluate(prompts, completions), agreement(student, teacher, held_out)
    own_after = trainer.evaluate(prompts, trainer.sample(prompts))
    # the teacher learned the language: its favourite next letter is the likely successor
    with lamina.no_grad():
        favourite = completion_logits(teacher(lamina.tensor(held_out)), PROMPT).numpy().argmax(-1)
    assert (favourite == TRANSITIONS[held_out[:, PROMPT - 1:-1]].argmax(-1)).mean() > 0.95
    assert after < 0.3 * before and own_after < 0.3 * own_before     # on the data and on its own samples
    assert agree_after > 0.8 and agree_after > agree_before + 0.5


def test_bad_settings_are_refused(teacher):
    student = gpt2(1, 8)
    with pytest.raises(ValueError, match="lmbda"):
        GKDTrainer(student, teacher, lmbda=1.5)
    with pytest.raises(ValueError, match="beta"):
        GKDTrainer(student, teacher, beta=-0.1)
    with pytest.raises(ValueError, match="temperature"):
        GKDTrainer(student, teacher, temperature=0)
    with pytest.raises(ValueError, match="divergence"):
        GKDTrainer(student, teacher, divergence="tvd")
    with pytest.raises(ValueError, match="must not be the student"):
        GKDTrainer(student, student)
    with pytest.raises(TypeError, match="generate"):
        GKDTrainer(_built_dense(), teacher)
    with pytest.raises(ValueError, match="not built"):
        GKDTrainer(GPT2(vocab_size=VOCAB, n_positions=8, n_embd=8, n_layer=1, n_head=1), teacher)
    with pytest.raises(ValueError, match="need completions"):
        GKDTrainer(student, teacher, lmbda=0.5).fit(np.full((4, PROMPT), 3), steps=1)
    with pytest.raises(lamina.errors.ShapeError, match="completions"):
        GKDTrainer(student, teacher).loss(np.full((4, PROMPT), 3), np.full((3, NEW), 3))


def _built_dense():
    dense = lamina.nn.Dense(3)
    dense.build((None, 2))
    return dense


def test_readme_example():
    printed, names = run_readme_section("Distilling language models: GKD")
    assert names["after"] < 0.5 * names["before"]
    assert "forward_kl" in printed and "JSD" in printed

"""Self-speculative greedy decoding with a multi-token model's own extra heads (Stern et al.'s
blockwise parallel decoding, as used by Gloeckle et al., 2024, and DeepSeek-V3's MTP modules).

Each pass reads the text so far x_{1..m} plus the guesses g_1 .. g_k drafted by the extra
heads (:class:`~lamina.models.MultiTokenHeads` or :class:`~lamina.models.MTPModules`) in one
call of the model. With y_j = argmax of the main head after x_{1..m}, g_1 .. g_{j-1}, the
guesses are accepted while g_j = y_j; with a of them accepted the pass keeps

    g_1 .. g_a, y_{a+1}            (a + 1 tokens, 1 <= a + 1 <= k + 1)

and the extra heads, read at the position that gave y_{a+1} (its states are those of the
accepted text: the model is causal), draft the next guesses. Every kept token is the main
head's argmax after the kept text, so the output is the model's own greedy decoding. The
model reruns on the whole text each pass (no key/value cache).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.autograd import no_grad, tensor
from lamina.models.multi_token import MTPModules, MultiTokenHeads

__all__ = ["SelfSpeculativeOutput", "self_speculative_generate"]

_WHO = "self_speculative_generate"


@dataclass
class SelfSpeculativeOutput:
    """``tokens`` (new,) the continuation; ``accepted`` the tokens kept by each pass of the
    model (1 + accepted guesses); ``mean_accepted_length`` their mean (1.0 without guesses)."""

    tokens: np.ndarray
    accepted: list[int]

    @property
    def mean_accepted_length(self) -> float:
        return float(np.mean(self.accepted)) if self.accepted else 0.0


def _check(model, heads) -> None:
    if not isinstance(heads, (MultiTokenHeads, MTPModules)):
        raise TypeError(f"{_WHO}: heads must be MultiTokenHeads or MTPModules, got {type(heads).__name__}")
    vocab = getattr(model, "vocab_size", None)
    if vocab != heads.vocab_size:
        raise ValueError(f"{_WHO}: the model scores {vocab} tokens and the heads {heads.vocab_size}; "
                         f"they must share a vocabulary")
    if heads.model is not model:
        raise ValueError(f"{_WHO}: the heads were built on another {type(heads.model).__name__}; "
                         f"pass the model they wrap (heads.model)")


def self_speculative_decode(model, heads, prompt: np.ndarray, steps: int,
                            eos_token_id: int | None) -> SelfSpeculativeOutput:
    """The decoding loop of :func:`self_speculative_generate`, in evaluation mode under no_grad."""
    context = getattr(model, "max_len", None)
    text = [int(t) for t in prompt]
    guesses: list[int] = []
    tokens: list[int] = []
    accepted: list[int] = []
    while len(tokens) < steps and eos_token_id not in tokens:
        guesses = guesses[:steps - len(tokens) - 1]
        if context is not None:
            guesses = guesses[:max(0, context - len(text))]
        hidden = model.hidden_states(tensor(np.array([text + guesses], dtype=np.int64)))
        first = len(text) - 1
        best = np.argmax(model.logits(hidden[:, first:]).numpy()[0], axis=-1)
        a = 0
        while a < len(guesses) and guesses[a] == int(best[a]):
            a += 1
        new = guesses[:a] + [int(best[a])]
        text += new
        tokens += new
        accepted.append(len(new))
        if len(tokens) < steps and eos_token_id not in tokens:
            guesses = [int(g) for g in heads.draft(hidden[:, :first + a + 1], np.array([text], dtype=np.int64))]
    tokens = tokens[:steps]
    if eos_token_id is not None and eos_token_id in tokens:
        tokens = tokens[:tokens.index(eos_token_id) + 1]
    return SelfSpeculativeOutput(np.array(tokens, dtype=np.int64), accepted)


def self_speculative_generate(model, heads, prompt, max_new_tokens: int,
                              eos_token_id: int | None = None) -> SelfSpeculativeOutput:
    """Greedy decoding of one ``prompt`` (T,) for ``max_new_tokens`` (stopping after
    ``eos_token_id`` when given), the ``heads`` (:class:`~lamina.models.MultiTokenHeads` or
    :class:`~lamina.models.MTPModules` wrapping ``model``) drafting n - 1 tokens that the
    main head verifies in the next pass (see the module docstring). The tokens are the
    model's own greedy decoding; ``mean_accepted_length`` the tokens kept per pass."""
    _check(model, heads)
    prompt = np.asarray(prompt).reshape(-1)
    if prompt.size == 0 or not np.issubdtype(prompt.dtype, np.integer):
        raise ValueError(f"{_WHO}: needs a prompt of >= 1 integer token id, got {prompt.size} of {prompt.dtype}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
        raise ValueError(f"{_WHO}: max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
    if not (0 <= prompt.min() and prompt.max() < heads.vocab_size):
        raise ValueError(f"{_WHO}: prompt ids must lie in [0, {heads.vocab_size}), got [{prompt.min()}, "
                         f"{prompt.max()}]")
    modes = [(module, module.training) for module in heads.modules()]
    heads.eval()
    try:
        with no_grad():
            return self_speculative_decode(model, heads, prompt, int(max_new_tokens), eos_token_id)
    finally:
        for module, mode in modes:
            module.training = mode

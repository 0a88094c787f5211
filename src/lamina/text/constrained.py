"""Constrained generation: logits processors that let a model write only text of a given form.

The idea of Willard and Louf ("Efficient guided generation for large language models", 2023,
the ``outlines`` library): compile the constraint to a DFA over characters
(:func:`lamina.text.compile_regex`), then index the vocabulary once. For each DFA state q
reachable by tokens and each token t (its decoded string), walk t's characters from q; when
the walk stays alive, t is allowed in q and leads to the state it ends in. A generation step
is then one lookup: the row's state gives the allowed tokens. States from which no token
path reaches an accepting state are pruned, so every step has a way to finish; the end token
is allowed exactly in accepting states.

Each processor reads a row's generated tokens (the ids after the prompt, whose length it takes
from its first call unless given) and follows them through the index, remembering the state
of every prefix it has seen, so beams that reorder rows need no bookkeeping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np

from lamina.text.logits_processors import LogitsProcessor
from lamina.text.regex_fsm import DFA, compile_regex, escape_regex

__all__ = ["ChoiceLogitsProcessor", "PrefixAllowedTokensLogitsProcessor", "RegexLogitsProcessor", "TokenIndex",
           "vocabulary_strings"]


def vocabulary_strings(tokenizer_or_vocab) -> list[str]:
    """The decoded string of every token id: from a list of strings (index = id), a mapping
    id -> string, or a tokenizer with ``decode([id])`` and ``len`` (special tokens decode to
    '' and so are never allowed)."""
    who = "vocabulary_strings"
    if isinstance(tokenizer_or_vocab, Mapping):
        keys = list(tokenizer_or_vocab)
        if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in keys):
            raise TypeError(f"{who}: a vocabulary mapping must map int ids to strings, got keys such as {keys[:3]!r}")
        strings = [""] * (max(keys, default=-1) + 1)
        for token_id, text in tokenizer_or_vocab.items():
            strings[token_id] = text
    elif hasattr(tokenizer_or_vocab, "decode") and hasattr(tokenizer_or_vocab, "__len__"):
        strings = [tokenizer_or_vocab.decode([i]) for i in range(len(tokenizer_or_vocab))]
    elif isinstance(tokenizer_or_vocab, Sequence) and not isinstance(tokenizer_or_vocab, str):
        strings = list(tokenizer_or_vocab)
    else:
        raise TypeError(f"{who}: expected a list of token strings, a mapping id -> string or a tokenizer with "
                        f"decode, got {type(tokenizer_or_vocab).__name__}")
    bad = next((s for s in strings if not isinstance(s, str)), None)
    if bad is not None:
        raise TypeError(f"{who}: every token must decode to a str, got {bad!r}")
    return strings


def _trie(vocabulary: Sequence[str]) -> tuple[list[dict[str, int]], list[list[int]]]:
    """The prefix tree of the non-empty token strings: ``children[node]`` char -> node and
    ``ends[node]`` the ids of the tokens spelled from the root (node 0) to it."""
    children: list[dict[str, int]] = [{}]
    ends: list[list[int]] = [[]]
    for token_id, text in enumerate(vocabulary):
        if not text:
            continue
        node = 0
        for char in text:
            if char not in children[node]:
                children[node][char] = len(children)
                children.append({})
                ends.append([])
            node = children[node][char]
        ends[node].append(token_id)
    return children, ends


class TokenIndex:
    """For each DFA state, the tokens allowed in it and the states they lead to.

    ``allowed[q]``: a dict token id -> next state over the tokens whose whole string keeps
    the DFA alive from q and whose end state can still reach an accepting state by tokens;
    ``states``: the states reachable from the start by tokens (the keys of ``allowed``).
    Raises ValueError when no sequence of tokens satisfies the pattern. Empty token strings
    are never allowed (they would let a row loop without writing anything). The tokens are
    walked through their prefix tree, so a shared prefix is read once per state and a dead
    one cuts off every token below it."""

    def __init__(self, dfa: DFA, vocabulary: Sequence[str], who: str = "TokenIndex"):
        self.dfa, self.vocabulary = dfa, list(vocabulary)
        if dfa.start < 0:
            raise ValueError(f"{who}: the pattern {dfa.pattern!r} matches no string at all")
        children, ends = _trie(self.vocabulary)
        walks: dict[int, dict[int, int]] = {dfa.start: {}}
        frontier = [dfa.start]
        while frontier:
            state = frontier.pop()
            moves = walks[state]
            stack = [(0, state)]                     # (trie node, DFA state): shared prefixes walked once
            while stack:
                node, at = stack.pop()
                for token_id in ends[node]:
                    moves[token_id] = at
                    if at not in walks:
                        walks[at] = {}
                        frontier.append(at)
                for char, child in children[node].items():
                    after = dfa.step(at, char)
                    if after >= 0:
                        stack.append((child, after))
        finishing = self._can_finish(walks)
        if dfa.start not in finishing:
            raise ValueError(f"{who}: no sequence of the vocabulary's {len(self.vocabulary)} tokens spells a "
                             f"string matching {dfa.pattern!r} (dead end at the start state)")
        self.allowed = {state: {t: end for t, end in moves.items() if end in finishing}
                        for state, moves in walks.items() if state in finishing}
        self._arrays = {state: np.array(sorted(moves), dtype=np.int64) for state, moves in self.allowed.items()}

    def _can_finish(self, walks: dict[int, dict[int, int]]) -> set[int]:
        """The token-reachable states from which tokens can reach an accepting state."""
        incoming: dict[int, set[int]] = {state: set() for state in walks}
        for state, moves in walks.items():
            for end in moves.values():
                incoming[end].add(state)
        finishing = {state for state in walks if state in self.dfa.accepting}
        stack = list(finishing)
        while stack:
            for source in incoming[stack.pop()]:
                if source not in finishing:
                    finishing.add(source)
                    stack.append(source)
        return finishing

    @property
    def states(self) -> list[int]:
        return sorted(self.allowed)

    def allowed_tokens(self, state: int) -> np.ndarray:
        """The ids allowed in ``state`` (the end token aside), ascending."""
        return self._arrays[state]

    def next_state(self, state: int, token_id: int) -> int:
        """The state after ``token_id`` in ``state``; -1 when the token is not allowed there."""
        return self.allowed.get(state, {}).get(int(token_id), -1)

    def __repr__(self) -> str:
        return f"TokenIndex({self.dfa.pattern!r}, states={len(self.allowed)}, vocabulary={len(self.vocabulary)})"


class RegexLogitsProcessor(LogitsProcessor):
    """Allow only tokens that keep the row's text a prefix of a full match of ``pattern``;
    the end token(s) ``eos_token_id`` only once the text fully matches. Every other score
    becomes -inf. A row that has ended (an end token after a full match) is left as it is.

    ``tokenizer_or_vocab``: see :func:`vocabulary_strings`. ``prompt_length``: the number of
    prompt tokens in ``input_ids`` (default: the width at the first call). Given to
    :func:`lamina.text.generate_ids` as ``logits_processor=[processor]``, each generation
    works on a copy made by :meth:`with_prompt_length` (sharing the index), so one processor
    serves any number of calls."""

    _who = "RegexLogitsProcessor"

    def __init__(self, pattern: str | DFA, tokenizer_or_vocab, eos_token_id: int | Sequence[int],
                 prompt_length: int | None = None):
        dfa = pattern if isinstance(pattern, DFA) else compile_regex(pattern)
        self.pattern = dfa.pattern
        self.eos_token_id = np.atleast_1d(eos_token_id).astype(np.int64).tolist()
        if not self.eos_token_id:
            raise ValueError(f"{self._who}: eos_token_id must name at least one end token")
        strings = vocabulary_strings(tokenizer_or_vocab)
        for token_id in self.eos_token_id:          # an end token ends the text; it spells nothing
            if 0 <= token_id < len(strings):
                strings[token_id] = ""
        self.index = TokenIndex(dfa, strings, self._who)
        self.prompt_length = prompt_length
        self._states: dict[tuple[int, ...], int] = {(): self.index.dfa.start}

    def with_prompt_length(self, length: int) -> RegexLogitsProcessor:
        """A processor sharing this one's index, for prompts of ``length`` tokens."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.prompt_length, other._states = length, {(): self.index.dfa.start}
        return other

    def state_of(self, generated: Sequence[int]) -> int | None:
        """The DFA state after the ``generated`` tokens; None once they end with an end token
        (the row is done). Raises ValueError when they leave the pattern."""
        key = tuple(int(t) for t in generated)
        known = len(key)
        while key[:known] not in self._states:
            known -= 1
        state = self._states[key[:known]]
        for length in range(known + 1, len(key) + 1):
            token = key[length - 1]
            if state is not None and not (token in self.eos_token_id and state in self.index.dfa.accepting):
                state = self.index.next_state(state, token)
                if state < 0:
                    raise ValueError(f"{self._who}: the generated tokens {list(key[:length])} "
                                     f"({self._text(key[:length])!r}) leave the pattern {self.pattern!r} at "
                                     f"token {token}")
            else:
                state = None
            self._states[key[:length]] = state
        return state

    def _text(self, ids: Sequence[int]) -> str:
        vocabulary = self.index.vocabulary
        return "".join(vocabulary[t] if 0 <= t < len(vocabulary) else f"<{t}>" for t in ids)

    def process(self, input_ids, scores):
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        if input_ids.shape[1] < self.prompt_length:
            raise ValueError(f"{self._who}: input_ids has {input_ids.shape[1]} tokens, fewer than the prompt's "
                             f"{self.prompt_length}")
        out = np.full_like(scores, -np.inf)
        for row, ids in enumerate(input_ids[:, self.prompt_length:].tolist()):
            state = self.state_of(ids)
            if state is None:
                out[row] = scores[row]
                continue
            allowed = self.index.allowed_tokens(state)
            allowed = allowed[allowed < scores.shape[1]]
            out[row, allowed] = scores[row, allowed]
            if state in self.index.dfa.accepting:
                out[row, self.eos_token_id] = scores[row, self.eos_token_id]
            elif not allowed.size:
                raise ValueError(f"{self._who}: no token of the model's {scores.shape[1]} allows continuing "
                                 f"{self._text(ids)!r} towards {self.pattern!r} (a dead end)")
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pattern!r}, eos_token_id={self.eos_token_id})"


class ChoiceLogitsProcessor(RegexLogitsProcessor):
    """Generate exactly one of the strings ``choices`` (the regex alternation of them as literals)."""

    _who = "ChoiceLogitsProcessor"

    def __init__(self, choices: Iterable[str], tokenizer_or_vocab, eos_token_id: int | Sequence[int],
                 prompt_length: int | None = None):
        choices = list(choices)
        if not choices or not all(isinstance(c, str) for c in choices):
            raise ValueError(f"{self._who}: choices must be a non-empty list of strings, got {choices!r}")
        self.choices = choices
        super().__init__("|".join(f"(?:{escape_regex(c)})" for c in choices), tokenizer_or_vocab, eos_token_id,
                         prompt_length)


class PrefixAllowedTokensLogitsProcessor(LogitsProcessor):
    """Hugging Face's ``prefix_allowed_tokens_fn``: ``fn(batch_id, ids)`` gives the tokens
    allowed after the row ``ids`` (the whole row, prompt included), where ``batch_id`` is
    the prompt's index, row // ``num_beams``; every other score becomes -inf."""

    def __init__(self, prefix_allowed_tokens_fn: Callable[[int, np.ndarray], Sequence[int]], num_beams: int = 1):
        if not callable(prefix_allowed_tokens_fn):
            raise TypeError("PrefixAllowedTokensLogitsProcessor: prefix_allowed_tokens_fn must be callable "
                            "(batch_id, ids) -> allowed token ids")
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise ValueError(f"PrefixAllowedTokensLogitsProcessor: num_beams must be a positive int, got {num_beams!r}")
        self.prefix_allowed_tokens_fn, self.num_beams = prefix_allowed_tokens_fn, num_beams

    def process(self, input_ids, scores):
        out = np.full_like(scores, -np.inf)
        for row, ids in enumerate(input_ids):
            allowed = np.asarray(list(self.prefix_allowed_tokens_fn(row // self.num_beams, ids)), dtype=np.int64)
            if allowed.size == 0:
                raise ValueError(f"PrefixAllowedTokensLogitsProcessor: prefix_allowed_tokens_fn returned no tokens "
                                 f"for batch_id {row // self.num_beams} after {ids.tolist()} (a dead end)")
            if allowed.min() < 0 or allowed.max() >= scores.shape[1]:
                raise ValueError(f"PrefixAllowedTokensLogitsProcessor: allowed ids must lie in [0, "
                                 f"{scores.shape[1]}), got {allowed.tolist()}")
            out[row, allowed] = scores[row, allowed]
        return out

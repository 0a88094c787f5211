"""BLEU (Papineni et al. 2002) as sacrebleu computes it, and NLTK's variant on token lists.

For a corpus of hypotheses h_i, each with references r_i1 .. r_iK, after tokenization:

* the modified n-gram precision p_n = sum_i sum_g min(c_h(g), max_k c_rk(g)) / sum_i
  (number of n-grams of h_i), the counts clipped by the largest count in any one reference;
* the brevity penalty BP = 1 if c >= r, else exp(1 - r / c) (0 when c = 0), with c the
  total hypothesis length and r the sum over sentences of the *closest* reference length
  (the one nearest to the hypothesis's length, the shorter on a tie);
* BLEU = BP exp((1/N) sum_{n=1..N} log p_n), in percent; 0 when nothing matches at all.

Smoothing of a zero precision (Chen & Cherry 2014), as sacrebleu names them:
``'none'`` (the score is 0), ``'floor'`` (p_n = smooth_value / total_n, default 0.1),
``'add-k'`` (adds smooth_value, default 1, to the matches and totals of n >= 2, zero or not),
``'exp'`` (the k-th zero precision becomes 1 / (2^k total_n), as mteval-v13a's NIST
smoothing; sacrebleu's default). ``effective_order`` stops at the first order with no
n-gram in the hypotheses (sentence-level BLEU of short sentences).

:func:`bleu` and :func:`corpus_bleu_tokens` follow NLTK's ``sentence_bleu`` and
``corpus_bleu`` on lists of tokens instead: weights w_n, BP from the closest reference
length (the shorter on a tie), score in [0, 1], and Chen & Cherry's smoothing methods 1 to 4.
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from lamina.text.metrics.ngrams import clipped_matches, ngram_counts
from lamina.text.metrics.tokenizers import get_tokenizer

__all__ = ["BLEUScore", "bleu", "corpus_bleu", "corpus_bleu_tokens", "sentence_bleu"]

SMOOTHING_DEFAULTS = {"none": None, "floor": 0.1, "add-k": 1, "exp": None}


@dataclass
class BLEUScore:
    """A BLEU result: ``score`` and ``precisions`` in percent, the clipped matches
    ``counts`` and n-gram ``totals`` per order, the brevity penalty ``bp``, the total
    hypothesis length ``sys_len`` and effective reference length ``ref_len``, and the
    ``signature`` of the settings (sacrebleu's, without its version)."""

    score: float
    counts: list
    totals: list
    precisions: list[float]
    bp: float
    sys_len: int
    ref_len: int
    signature: str = ""

    @property
    def ratio(self) -> float:
        """sys_len / ref_len (0 without references)."""
        return self.sys_len / self.ref_len if self.ref_len > 0 else 0.0

    def __str__(self) -> str:
        precisions = "/".join(f"{p:.1f}" for p in self.precisions)
        return (f"BLEU = {self.score:.2f} {precisions} (BP = {self.bp:.3f} ratio = {self.ratio:.3f} "
                f"hyp_len = {self.sys_len:d} ref_len = {self.ref_len:d})")


def closest_reference_length(hypothesis_length: int, reference_lengths: Sequence[int]) -> int:
    """The reference length nearest to the hypothesis's, the shorter one on a tie."""
    return min(reference_lengths, key=lambda length: (abs(hypothesis_length - length), length))


def _sentence_statistics(hypothesis: list[str], references: list[list[str]], max_order: int):
    """(hypothesis length, closest reference length, matches per order, totals per order)."""
    matches, totals = [0] * max_order, [0] * max_order
    for n in range(1, max_order + 1):
        hypothesis_counts = ngram_counts(hypothesis, n)
        most: Counter = Counter()
        for reference in references:
            most |= ngram_counts(reference, n)        # elementwise maximum over the references
        matches[n - 1] = clipped_matches(hypothesis_counts, most)
        totals[n - 1] = max(0, len(hypothesis) - n + 1)
    return len(hypothesis), closest_reference_length(len(hypothesis), [len(r) for r in references]), matches, totals


def compute_bleu(matches: list, totals: list, sys_len: int, ref_len: int, smooth: str = "exp",
                 smooth_value: float | None = None, effective_order: bool = False) -> tuple[float, list, float]:
    """(score, precisions, bp) in percent from the corpus statistics (see the module notes)."""
    if smooth_value is None:
        smooth_value = SMOOTHING_DEFAULTS[smooth]
    bp = 1.0 if sys_len >= ref_len else (math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0)
    max_order = len(matches)
    precisions = [0.0] * max_order
    if not any(matches):
        return 0.0, precisions, bp
    matches, totals = list(matches), list(totals)
    zeros_seen, orders = 0, max_order
    for n in range(1, max_order + 1):
        if smooth == "add-k" and n > 1:
            matches[n - 1] += smooth_value
            totals[n - 1] += smooth_value
        if totals[n - 1] == 0:
            break
        if effective_order:
            orders = n
        if matches[n - 1] > 0:
            precisions[n - 1] = 100.0 * matches[n - 1] / totals[n - 1]
        elif smooth == "exp":
            zeros_seen += 1
            precisions[n - 1] = 100.0 / (2 ** zeros_seen * totals[n - 1])
        elif smooth == "floor":
            precisions[n - 1] = 100.0 * smooth_value / totals[n - 1]
    if any(p == 0.0 for p in precisions[:orders]):
        return 0.0, precisions, bp
    return bp * math.exp(sum(math.log(p) for p in precisions[:orders]) / orders), precisions, bp


def _check_options(caller: str, max_order: int, smooth: str) -> None:
    if isinstance(max_order, bool) or not isinstance(max_order, int) or max_order < 1:
        raise ValueError(f"{caller}: max_order must be a positive int, got {max_order!r}")
    if smooth not in SMOOTHING_DEFAULTS:
        raise ValueError(f"{caller}: unknown smooth={smooth!r}; expected one of {list(SMOOTHING_DEFAULTS)}")


def _reference_streams(caller: str, hypotheses: Sequence[str], references) -> list[list[str]]:
    """The references of each sentence out of sacrebleu's streams (references[k][i] is
    the k-th reference of hypothesis i; a None is skipped)."""
    if isinstance(hypotheses, str):
        raise TypeError(f"{caller}: hypotheses must be a list of strings, got one string")
    if isinstance(references, str) or not references:
        raise ValueError(f"{caller}: references must be a non-empty list of reference streams (each a list of "
                         f"{len(hypotheses)} strings, one per hypothesis), got {references!r}")
    if any(isinstance(stream, str) for stream in references):
        raise TypeError(f"{caller}: references must be a list of reference streams, each a list of strings; got "
                        f"a list of strings (wrap one stream in a list: [references])")
    for k, stream in enumerate(references):
        if len(stream) != len(hypotheses):
            raise ValueError(f"{caller}: {len(hypotheses)} hypotheses but reference stream {k} holds "
                             f"{len(stream)} references")
    per_sentence = [[ref for ref in refs if ref is not None] for refs in zip(*references)]
    for i, refs in enumerate(per_sentence):
        if not refs:
            raise ValueError(f"{caller}: hypothesis {i} has no reference (every stream holds None there)")
    return per_sentence


def _signature(n_refs: int, lowercase: bool, effective_order: bool, tokenize: str, smooth: str,
               smooth_value: float | None) -> str:
    smoothing = smooth if smooth_value is None or smooth in ("none", "exp") else f"{smooth}[{smooth_value:.2f}]"
    return (f"nrefs:{n_refs}|case:{'lc' if lowercase else 'mixed'}|eff:{'yes' if effective_order else 'no'}"
            f"|tok:{tokenize}|smooth:{smoothing}")


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str | None]], max_order: int = 4,
                smooth: str = "exp", smooth_value: float | None = None, tokenize: str = "13a",
                lowercase: bool = False, effective_order: bool = False) -> BLEUScore:
    """sacrebleu's ``corpus_bleu``: BLEU of the detokenized ``hypotheses`` against
    ``references``, a list of reference streams (``references[k][i]``: the k-th reference
    of hypothesis i), each text lowercased if asked, stripped at its end and tokenized by
    ``tokenize`` ('13a', 'intl', 'char' or 'none'; :mod:`lamina.text.metrics.tokenizers`)."""
    _check_options("corpus_bleu", max_order, smooth)
    tokenizer = get_tokenizer(tokenize, "corpus_bleu")
    per_sentence = _reference_streams("corpus_bleu", hypotheses, references)

    def tokens(text: str) -> list[str]:
        return tokenizer((text.lower() if lowercase else text).rstrip()).split()

    sys_len = ref_len = 0
    matches, totals = [0] * max_order, [0] * max_order
    for hypothesis, refs in zip(hypotheses, per_sentence):
        h, r, m, t = _sentence_statistics(tokens(hypothesis), [tokens(ref) for ref in refs], max_order)
        sys_len, ref_len = sys_len + h, ref_len + r
        matches = [a + b for a, b in zip(matches, m)]
        totals = [a + b for a, b in zip(totals, t)]
    score, precisions, bp = compute_bleu(matches, totals, sys_len, ref_len, smooth, smooth_value, effective_order)
    signature = _signature(len(references), lowercase, effective_order, tokenize, smooth, smooth_value)
    return BLEUScore(score, matches, totals, precisions, bp, sys_len, ref_len, signature)


def sentence_bleu(hypothesis: str, references: Sequence[str], max_order: int = 4, smooth: str = "exp",
                  smooth_value: float | None = None, tokenize: str = "13a", lowercase: bool = False,
                  effective_order: bool = True) -> BLEUScore:
    """sacrebleu's ``sentence_bleu``: one hypothesis against its references (a list of
    strings), with the effective order on by default."""
    if isinstance(references, str):
        references = [references]
    if not references:
        raise ValueError("sentence_bleu: references must hold at least one reference string, got none")
    return corpus_bleu([hypothesis], [[ref] for ref in references], max_order, smooth, smooth_value, tokenize,
                       lowercase, effective_order)


# -- NLTK's BLEU on token lists -------------------------------------------------------------

def _smoothed(precisions: list[tuple[int, int]], method: int, hyp_len: int) -> list[float]:
    """Chen & Cherry's methods as NLTK's ``SmoothingFunction``: 0 (a zero precision becomes
    the smallest float), 1 (numerator + 0.1), 2 (+1 to numerator and denominator for n >= 2),
    3 (the k-th zero becomes 1 / (2^k denominator)), 4 (the k-th zero becomes
    log(length) / (5 2^k denominator), for hypotheses longer than one token)."""
    smoothed: list[float] = []
    zeros_seen = 0
    for n, (numerator, denominator) in enumerate(precisions, start=1):
        if method == 2 and n > 1:
            smoothed.append((numerator + 1) / (denominator + 1))
        elif numerator != 0:
            smoothed.append(numerator / denominator)
        elif method == 0:
            smoothed.append(sys.float_info.min)
        elif method == 1:
            smoothed.append(0.1 / denominator)
        elif method == 3:
            zeros_seen += 1
            smoothed.append(1 / (2 ** zeros_seen * denominator))
        elif method == 4 and hyp_len > 1:
            zeros_seen += 1
            smoothed.append(math.log(hyp_len) / (5 * 2 ** zeros_seen) / denominator)
        else:
            smoothed.append(0.0)
    return smoothed


def corpus_bleu_tokens(list_of_references: Sequence[Sequence[Sequence[Hashable]]],
                       hypotheses: Sequence[Sequence[Hashable]], weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25),
                       smoothing: int = 0) -> float:
    """NLTK's ``corpus_bleu``: hypotheses and references as token lists
    (``list_of_references[i]`` the references of ``hypotheses[i]``), precisions summed over
    the corpus, BP from the total lengths, the score in [0, 1] (0 without a unigram match);
    ``smoothing`` 0..4 is ``SmoothingFunction().method<k>``."""
    if len(list_of_references) != len(hypotheses):
        raise ValueError(f"corpus_bleu_tokens: {len(hypotheses)} hypotheses but {len(list_of_references)} "
                         "lists of references")
    if smoothing not in range(5):
        raise ValueError(f"corpus_bleu_tokens: smoothing must be a method number 0..4, got {smoothing!r}")
    orders = len(weights)
    numerators, denominators = [0] * orders, [0] * orders
    hyp_len = ref_len = 0
    for i, (references, hypothesis) in enumerate(zip(list_of_references, hypotheses)):
        if not references:
            raise ValueError(f"corpus_bleu_tokens: hypothesis {i} has an empty list of references")
        for n in range(1, orders + 1):
            counts = ngram_counts(hypothesis, n)
            most: Counter = Counter()
            for reference in references:
                most |= ngram_counts(reference, n)
            numerators[n - 1] += clipped_matches(counts, most)
            denominators[n - 1] += max(1, sum(counts.values()))
        hyp_len += len(hypothesis)
        ref_len += closest_reference_length(len(hypothesis), [len(r) for r in references])
    if numerators[0] == 0:
        return 0.0
    bp = 1.0 if hyp_len > ref_len else (0.0 if hyp_len == 0 else math.exp(1 - ref_len / hyp_len))
    precisions = _smoothed(list(zip(numerators, denominators)), smoothing, hyp_len)
    if any(p <= 0 for p in precisions):
        return 0.0
    return bp * math.exp(math.fsum(w * math.log(p) for w, p in zip(weights, precisions)))


def bleu(references: Sequence[Sequence[Hashable]], hypothesis: Sequence[Hashable],
         weights: Sequence[float] = (0.25, 0.25, 0.25, 0.25), smoothing: int = 0) -> float:
    """NLTK's ``sentence_bleu``: one token-list hypothesis against its token-list references."""
    return corpus_bleu_tokens([references], [hypothesis], weights, smoothing)

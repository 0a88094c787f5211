"""Generation metrics on hand-made examples whose n-gram counts are written out: sacrebleu's
BLEU (smoothing, brevity penalty, closest reference length, effective order), the 13a and
international tokenizers, NLTK's BLEU with Chen & Cherry's smoothing, chrF / chrF++,
rouge-score's ROUGE-N/L/Lsum, CIDEr-D (by hand and against a dense NumPy rewrite of the
published formula) and exact-match METEOR."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest

from helpers import run_readme_section
from lamina.text import (
    bleu,
    chrf,
    cider,
    cider_d,
    corpus_bleu,
    corpus_bleu_tokens,
    meteor_exact,
    rouge_corpus,
    rouge_scores,
    sentence_bleu,
    sentence_chrf,
)
from lamina.text.metrics import rouge_tokenize, tokenize_13a, tokenize_intl

HYP = "the cat sat on the mat"
REF = "the cat is on the mat"
# HYP against REF, both 6 tokens:
#   1-grams: the x2 (ref x2) -> 2, cat 1, sat 0, on 1, mat 1           -> 5 / 6
#   2-grams: the cat, cat sat, sat on, on the, the mat                  -> 3 / 5 (the cat, on the, the mat)
#   3-grams: the cat sat, cat sat on, sat on the, on the mat            -> 1 / 4 (on the mat)
#   4-grams: the cat sat on, cat sat on the, sat on the mat             -> 0 / 3
MATCHES, TOTALS = [5, 3, 1, 0], [6, 5, 4, 3]


def _geometric(precisions) -> float:
    return math.exp(sum(math.log(p) for p in precisions) / len(precisions))


# -- sacrebleu BLEU -----------------------------------------------------------------------------

def test_bleu_counts_and_smoothing_methods():
    none = corpus_bleu([HYP], [[REF]], smooth="none")
    assert none.counts == MATCHES and none.totals == TOTALS
    assert none.score == 0.0 and none.bp == 1.0 and (none.sys_len, none.ref_len) == (6, 6)
    exp = corpus_bleu([HYP], [[REF]], smooth="exp")          # the first zero precision: 1 / (2 * 3)
    assert exp.precisions == pytest.approx([500 / 6, 60.0, 25.0, 100 / 6])
    assert exp.score == pytest.approx(100 * _geometric([5 / 6, 3 / 5, 1 / 4, 1 / 6]))
    floor = corpus_bleu([HYP], [[REF]], smooth="floor")      # 0.1 / 3
    assert floor.score == pytest.approx(100 * _geometric([5 / 6, 3 / 5, 1 / 4, 0.1 / 3]))
    add_k = corpus_bleu([HYP], [[REF]], smooth="add-k")      # +1 to the matches and totals of n >= 2
    assert add_k.score == pytest.approx(100 * _geometric([5 / 6, 4 / 6, 2 / 5, 1 / 4]))
    assert corpus_bleu([HYP], [[REF]], smooth="floor", smooth_value=0.5).score == pytest.approx(
        100 * _geometric([5 / 6, 3 / 5, 1 / 4, 0.5 / 3]))


def test_bleu_of_sacrebleus_documented_example():
    references = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
                  ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    hypotheses = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    result = corpus_bleu(hypotheses, references)
    assert str(result) == "BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)"
    assert result.signature == "nrefs:2|case:mixed|eff:no|tok:13a|smooth:exp"
    assert chrf(hypotheses, references).score == pytest.approx(59.73, abs=0.005)


def test_zero_matches_score_zero_even_when_smoothed():
    for smooth in ("none", "exp", "floor", "add-k"):
        result = corpus_bleu(["a b c d"], [["w x y z"]], smooth=smooth)
        assert result.score == 0.0 and result.precisions == [0.0] * 4 and result.counts == [0, 0, 0, 0]


def test_short_hypothesis_brevity_penalty_and_effective_order():
    # "the cat" against 6 reference tokens: p1 = 2/2, p2 = 1/1, no 3- or 4-grams; BP = exp(1 - 6/2)
    plain = corpus_bleu(["the cat"], [[HYP]])
    assert plain.bp == pytest.approx(math.exp(-2)) and plain.totals == [2, 1, 0, 0]
    assert plain.score == 0.0                     # the missing orders count as zero precisions
    effective = corpus_bleu(["the cat"], [[HYP]], effective_order=True)
    assert effective.score == pytest.approx(100 * math.exp(-2))
    sentence = sentence_bleu("the cat", [HYP])    # sacrebleu's sentence default: effective order on
    assert sentence.score == pytest.approx(effective.score) and "eff:yes" in sentence.signature


def test_longer_hypothesis_has_no_brevity_penalty():
    # 8 tokens against 6: 1-grams the x3 (ref x2) -> 2, cat, sat, on, mat, and, dog -> 2+1+0+1+1+0+0 = 5 / 8
    result = corpus_bleu([HYP + " and dog"], [[REF]], smooth="exp")
    assert result.bp == 1.0 and result.ratio == pytest.approx(8 / 6)
    assert result.counts[0] == 5 and result.totals == [8, 7, 6, 5]


def test_closest_reference_length_tie_goes_to_the_shorter():
    # hypothesis of 4 tokens; references of 3 and 5 tokens are equally close -> 3
    result = corpus_bleu(["a b c d"], [["a b c"], ["a b c d e"]])
    assert result.ref_len == 3 and result.bp == 1.0
    reversed_streams = corpus_bleu(["a b c d"], [["a b c d e"], ["a b c"]])
    assert reversed_streams.ref_len == 3
    assert corpus_bleu(["a b c d"], [["a b"], ["a b c d e"]]).ref_len == 5


def test_counts_clip_at_the_largest_count_in_one_reference():
    # 'the' x4 in the hypothesis; references hold it once and twice -> 2 matches, not 3
    result = corpus_bleu(["the the the the"], [["the cat"], ["the the dog"]])
    assert result.counts[0] == 2 and result.totals[0] == 4


def test_empty_hypothesis():
    result = corpus_bleu([""], [[REF]])
    assert result.score == 0.0 and result.bp == 0.0 and result.sys_len == 0 and result.ref_len == 6


def test_lowercase_and_tokenizers():
    assert corpus_bleu(["THE CAT"], [["the cat"]], max_order=2).score == 0.0
    assert corpus_bleu(["THE CAT"], [["the cat"]], max_order=2, lowercase=True).score == pytest.approx(100.0)
    # without 13a the period stays glued to "mat."
    assert corpus_bleu(["on the mat."], [["on the mat ."]], tokenize="none", max_order=1).counts == [2]
    assert corpus_bleu(["on the mat."], [["on the mat ."]], tokenize="13a", max_order=1).counts == [4]
    assert corpus_bleu(["ab"], [["abc"]], tokenize="char", max_order=2).counts == [2, 1]


@pytest.mark.parametrize("text, tokens", [
    ("Hello, world!", "Hello , world !"),
    ("It costs $3.50, or 1,000 yen.", "It costs $ 3.50 , or 1,000 yen ."),
    ("a well-known fact; don't (really)", "a well-known fact ; don't ( really )"),
    ("pages 5-7 and 1990-", "pages 5 - 7 and 1990 -"),
    ("&quot;quoted&quot; &amp; &lt;tag&gt;", '" quoted " & < tag >'),
    ("line one-\nbroken <skipped>here", "line onebroken here"),
    ("e.g. x.y 3.", "e . g . x . y 3 ."),   # only digits keep a period or comma
])
def test_13a_tokenizer(text, tokens):
    assert tokenize_13a(text) == tokens


def test_intl_tokenizer_matches_unicode_property_rules():
    regex = pytest.importorskip("regex")
    rules = [(regex.compile(r"(\P{N})(\p{P})"), r"\1 \2 "), (regex.compile(r"(\p{P})(\P{N})"), r" \1 \2"),
             (regex.compile(r"(\p{S})"), r" \1 ")]
    for text in ["Hello, world! 3.14 €5 «quoted» end.", "¿Qué? ¡Sí! 1,5 km² — fin…", "a+b=c (x) 10%"]:
        expected = text
        for pattern, replacement in rules:
            expected = pattern.sub(replacement, expected)
        assert tokenize_intl(text) == " ".join(expected.split())
    assert tokenize_intl("¿Qué? 3.14") == "¿ Qué ? 3.14"


def test_bleu_errors_are_clear():
    with pytest.raises(ValueError, match="2 hypotheses but reference stream 0 holds 1"):
        corpus_bleu(["a", "b"], [["a"]])
    with pytest.raises(ValueError, match="unknown tokenize='moses'"):
        corpus_bleu(["a"], [["a"]], tokenize="moses")
    with pytest.raises(ValueError, match="non-empty list of reference streams"):
        corpus_bleu(["a"], [])
    with pytest.raises(TypeError, match="wrap one stream"):
        corpus_bleu(["a"], ["a"])
    with pytest.raises(ValueError, match="at least one reference"):
        sentence_bleu("a", [])
    with pytest.raises(ValueError, match="hypothesis 0 has no reference"):
        corpus_bleu(["a"], [[None]])
    with pytest.raises(ValueError, match="unknown smooth"):
        corpus_bleu(["a"], [["a"]], smooth="laplace")


# -- NLTK BLEU ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method, p4", [
    (1, 0.1 / 3), (3, 1 / (2 * 3)), (4, math.log(6) / (5 * 2) / 3),
])
def test_nltk_bleu_smoothing_of_a_zero_precision(method, p4):
    score = bleu([REF.split()], HYP.split(), smoothing=method)
    assert score == pytest.approx(_geometric([5 / 6, 3 / 5, 1 / 4, p4]))


def test_nltk_bleu_method2_and_method0():
    assert bleu([REF.split()], HYP.split(), smoothing=2) == pytest.approx(_geometric([5 / 6, 4 / 6, 2 / 5, 1 / 4]))
    tiny = bleu([REF.split()], HYP.split())      # a zero precision becomes the smallest float, not 0
    assert tiny == pytest.approx(_geometric([5 / 6, 3 / 5, 1 / 4, sys.float_info.min]), rel=1e-9) and tiny > 0
    assert bleu([["w", "x"]], ["a", "b"], smoothing=1) == 0.0   # no unigram match


def test_nltk_corpus_bleu_sums_over_sentences():
    # sentence 1: p = 5/6, 3/5 (bigrams); sentence 2: "a b" vs "a c": 1/2, 0/1 -> corpus 6/8, 3/6
    score = corpus_bleu_tokens([[REF.split()], [["a", "c"]]], [HYP.split(), ["a", "b"]], weights=(0.5, 0.5))
    assert score == pytest.approx(math.sqrt(6 / 8 * 3 / 6))
    with pytest.raises(ValueError, match="2 hypotheses but 1 lists of references"):
        corpus_bleu_tokens([[["a"]]], [["a"], ["b"]])


# -- chrF ---------------------------------------------------------------------------------------

def test_chrf_by_hand():
    # char_order 2: unigrams a, b of a, b, c -> P1 = 1, R1 = 2/3; bigrams ab of ab, bc -> P2 = 1, R2 = 1/2
    # P = 1, R = 7/12, chrF2 = 5 P R / (4 P + R) = 7/11
    assert sentence_chrf("ab", ["abc"], char_order=2).score == pytest.approx(100 * 7 / 11)
    assert sentence_chrf("a b", ["ab"], char_order=2).score == pytest.approx(100.0)   # whitespace dropped
    # an order the reference lacks is left out: "abc" vs "a" -> only unigrams, P = 1/3, R = 1 -> 5/7
    assert sentence_chrf("abc", ["a"], char_order=2).score == pytest.approx(100 * 5 / 7)
    assert sentence_chrf("", ["abc"]).score == 0.0
    # over a corpus the hypothesis's n-grams of an order its reference lacks are not counted:
    # "abc"/"a" adds unigrams (3, 1, 1) and no bigrams; "ab"/"ab" adds (2, 2, 2) and (1, 1, 1)
    p, r = (3 / 5 + 1 / 1) / 2, (3 / 3 + 1 / 1) / 2
    assert chrf(["abc", "ab"], [["a", "ab"]], char_order=2).score == pytest.approx(100 * 5 * p * r / (4 * p + r))


def test_chrf_plus_plus_word_ngrams_split_punctuation():
    # chars (order 1): "hi." vs "hi": h, i, . against h, i -> P = 2/3, R = 1
    # words (order 1): hi, . against hi -> P = 1/2, R = 1; words order 2: "hi ." vs no bigram -> left out
    p, r = (2 / 3 + 1 / 2) / 2, 1.0
    expected = 100 * 5 * p * r / (4 * p + r)
    assert sentence_chrf("hi.", ["hi"], char_order=1, word_order=2).score == pytest.approx(expected)
    assert str(sentence_chrf("hi.", ["hi"], char_order=1, word_order=2)).startswith("chrF2++ = ")


def test_chrf_picks_the_best_reference_per_sentence():
    best = sentence_chrf("the cat", ["the cat"]).score
    assert sentence_chrf("the cat", ["a dog", "the cat"]).score == pytest.approx(best)
    corpus = chrf(["the cat", "ab"], [["a dog", "abc"], ["the cat", "zz"]], char_order=2)   # two streams
    # sentence statistics summed: "the cat"/"the cat" (6 chars, 5 bigrams) + "ab"/"abc"
    p, r = (8 / 8 + 6 / 6) / 2, (8 / 9 + 6 / 7) / 2
    assert corpus.score == pytest.approx(100 * 5 * p * r / (4 * p + r))
    with pytest.raises(ValueError, match="2 hypotheses but reference stream 0 holds 1"):
        chrf(["a", "b"], [["a"]])


# -- ROUGE --------------------------------------------------------------------------------------

def test_rouge_tokenizer():
    assert rouge_tokenize("Hello, World! It's 2024 -- café") == ["hello", "world", "it", "s", "2024", "caf"]
    assert rouge_tokenize("running dogs", stemmer=lambda t: t[:3]) == ["run", "dog"]


def test_rouge_n_and_l_by_hand():
    scores = rouge_scores(HYP, REF)
    assert scores["rouge1"].precision == pytest.approx(5 / 6) and scores["rouge1"].recall == pytest.approx(5 / 6)
    assert scores["rouge2"].fmeasure == pytest.approx(3 / 5)
    assert scores["rougeL"].precision == pytest.approx(5 / 6)          # LCS: the cat on the mat
    uneven = rouge_scores("the cat", REF, types=("rouge1", "rougeL"))  # 2 of 2 predicted, 2 of 6 wanted
    assert uneven["rouge1"].precision == 1.0 and uneven["rouge1"].recall == pytest.approx(1 / 3)
    assert uneven["rougeL"].fmeasure == pytest.approx(2 * (1 / 3) / (4 / 3))
    empty = rouge_scores("", REF)
    assert all(s.fmeasure == 0.0 for s in empty.values())


def test_rouge_lsum_takes_the_union_of_sentence_lcs():
    # Lin's example: reference sentence w1..w5, candidate sentences (w1 w2 w6 w7 w8), (w1 w3 w8 w9 w5)
    # LCS with each: w1 w2 and w1 w3 w5 -> union w1 w2 w3 w5: 4 hits; 5 reference, 10 candidate tokens
    scores = rouge_scores("a b f g h\na c h i e", "a b c d e", types=("rougeLsum", "rougeL"))
    assert scores["rougeLsum"].recall == pytest.approx(4 / 5) and scores["rougeLsum"].precision == pytest.approx(0.4)
    # as one sequence, the candidate sentences swapped: the LCS is a c e only
    assert rouge_scores("a c h i e\na b f g h", "a b c d e", types=("rougeL",))["rougeL"].recall == pytest.approx(0.6)
    assert rouge_scores("a c h i e\na b f g h", "a b c d e", types=("rougeLsum",))["rougeLsum"].recall == 0.8
    # a token counts only while both sides have it unused: "a" once in the prediction
    repeated = rouge_scores("a b", "a x\na y", types=("rougeLsum",))["rougeLsum"]
    assert repeated.recall == pytest.approx(1 / 4) and repeated.precision == pytest.approx(1 / 2)


def test_rouge_corpus_mean_and_bootstrap():
    predictions, references = [HYP, "the cat"], [REF, REF]
    mean = rouge_corpus(predictions, references, types=("rouge1",))["rouge1"]
    assert mean.recall == pytest.approx((5 / 6 + 1 / 3) / 2)
    same = rouge_corpus([HYP] * 4, [REF] * 4, types=("rouge1",), bootstrap=50)["rouge1"]
    assert same["low"].fmeasure == pytest.approx(5 / 6) and same["high"].fmeasure == pytest.approx(5 / 6)
    spread = rouge_corpus(predictions * 3, references * 3, types=("rouge1",), bootstrap=200)["rouge1"]
    assert 1 / 3 <= spread["low"].recall <= spread["mid"].recall <= spread["high"].recall <= 5 / 6
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        rouge_corpus(predictions, [REF])
    with pytest.raises(ValueError, match="unknown ROUGE type 'rougeW'"):
        rouge_scores(HYP, REF, types=("rougeW",))
    with pytest.raises(ValueError, match="needs a stemmer"):
        rouge_scores(HYP, REF, use_stemmer=True)


# -- CIDEr-D ------------------------------------------------------------------------------------

def test_cider_d_by_hand():
    # 2 images, log I = log 2. Image 1: "a b" vs ["a b"], every n-gram in one image's references
    # (df 1): weights log 2, cosines 1 for n = 1, 2 and 0 for n = 3, 4 -> 10 (1 + 1) / 4 = 5.
    # Image 2: "c d" vs ["c e"]: unigram dot (log 2)^2 over norms 2 (log 2)^2 -> 1/2; no shared bigram
    # -> 10 (1/2) / 4 = 1.25. Equal bigram counts: no length penalty.
    mean, scores = cider_d(["a b", "c d"], [["a b"], ["c e"]])
    assert scores == pytest.approx([5.0, 1.25]) and mean == pytest.approx(3.125)


def _dense_cider_d(candidates, references, sigma=6.0, penalized=True):
    """CIDEr-D (or with ``penalized=False`` plain CIDEr) written with dense tf-idf vectors over
    every n-gram of the corpus."""
    def grams(caption, n):
        words = caption.split()
        return [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]

    scores = []
    for n_order in range(1, 5):
        vocab = sorted({g for refs in references for r in refs for g in grams(r, n_order)}
                       | {g for c in candidates for g in grams(c, n_order)})
        index = {g: k for k, g in enumerate(vocab)}
        df = np.zeros(len(vocab))
        for refs in references:
            for g in {g for r in refs for g in grams(r, n_order)}:
                df[index[g]] += 1
        idf = np.log(len(candidates)) - np.log(np.maximum(df, 1.0))

        def vector(caption, idf=idf, index=index, n_order=n_order):
            tf = np.zeros(len(index))
            for g in grams(caption, n_order):
                tf[index[g]] += 1
            return tf * idf

        per_image = []
        for c, refs in zip(candidates, references):
            vc, total = vector(c), 0.0
            for r in refs:
                vr = vector(r)
                dot = (np.minimum(vc, vr) if penalized else vc) @ vr
                norms = np.linalg.norm(vc) * np.linalg.norm(vr)
                dot = dot / norms if norms > 0 else dot
                delta = max(len(c.split()) - 1, 0) - max(len(r.split()) - 1, 0)
                total += dot * (np.exp(-delta ** 2 / (2 * sigma ** 2)) if penalized else 1.0)
            per_image.append(total / len(refs))
        scores.append(per_image)
    return 10 * np.mean(scores, axis=0)


def test_cider_d_against_a_dense_rewrite():
    rng = np.random.default_rng(0)
    words = ["a", "cat", "dog", "on", "the", "mat", "runs", "sits"]

    def caption():
        return " ".join(rng.choice(words, size=rng.integers(1, 14)))

    candidates = [caption() for _ in range(5)] + ["a a a cat"]
    references = [[caption() for _ in range(rng.integers(1, 4))] for _ in range(5)] + [["a cat on the mat"]]
    mean, scores = cider_d(candidates, references)
    expected = _dense_cider_d(candidates, references)
    np.testing.assert_allclose(scores, expected, rtol=1e-10, atol=1e-12)
    assert mean == pytest.approx(expected.mean())
    plain_mean, plain = cider(candidates, references)
    np.testing.assert_allclose(plain, _dense_cider_d(candidates, references, penalized=False), rtol=1e-10)
    assert plain[-1] > scores[-1] and plain_mean == pytest.approx(plain.mean())  # "a a a" is not clipped there
    with pytest.raises(ValueError, match="references\\[0\\] must be a non-empty list"):
        cider_d(["a"], [[]])
    with pytest.raises(ValueError, match="2 candidates but 1 lists"):
        cider_d(["a", "b"], [["a"]])


# -- METEOR (exact matches) ---------------------------------------------------------------------

def test_meteor_exact_by_hand():
    # every word matches (P = R = 1, F_mean = 1); the greedy alignment from the end gives the
    # pairs (0,3) (1,0) (2,5) (3,4) (4,1) (5,2): 5 chunks of 6 matches -> 1 - 0.5 (5/6)^3
    assert meteor_exact(["the cat sat on the mat"], "on the mat the cat sat") == pytest.approx(1 - 0.5 * (5 / 6) ** 3)
    # one chunk of 3 matches; P = 3/4, R = 3/3: F_mean = P R / (0.9 P + 0.1 R)
    p, r = 3 / 4, 1.0
    assert meteor_exact(["the cat sat"], "The cat sat down") == pytest.approx(
        p * r / (0.9 * p + 0.1 * r) * (1 - 0.5 * (1 / 3) ** 3))
    assert meteor_exact(["x y", "the cat sat"], "the cat sat down") == pytest.approx(
        meteor_exact(["the cat sat"], "the cat sat down"))
    assert meteor_exact(["a b"], "c d") == 0.0


def test_readme_section_runs():
    printed, names = run_readme_section("Generation metrics and image captioning")
    lines = printed.splitlines()
    assert lines[0].startswith("BLEU = ") and float(lines[1]) == pytest.approx(5 / 6)
    assert names["maps"].shape[:1] == (50,) and names["maps"].shape[2:] == (2, 8)
    np.testing.assert_allclose(names["maps"].sum(axis=(2, 3)), 1.0, rtol=1e-5)
    assert len(names["decoded"]) == 50 and float(lines[2].split()[0]) >= 0.0

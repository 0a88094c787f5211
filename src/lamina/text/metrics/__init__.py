"""Scores of generated text against references: BLEU (sacrebleu's and NLTK's), chrF and
chrF++, ROUGE-N/L/Lsum (rouge-score's), CIDEr and CIDEr-D (pycocoevalcap's) and METEOR on exact
matches; each module states its formula and whose implementation it follows."""

from lamina.text.metrics.bleu import BLEUScore, bleu, corpus_bleu, corpus_bleu_tokens, sentence_bleu
from lamina.text.metrics.chrf import CHRFScore, chrf, sentence_chrf
from lamina.text.metrics.cider import cider, cider_d
from lamina.text.metrics.meteor import meteor_exact
from lamina.text.metrics.rouge import RougeScore, rouge_corpus, rouge_scores, rouge_tokenize
from lamina.text.metrics.tokenizers import TOKENIZERS, get_tokenizer, tokenize_13a, tokenize_intl

__all__ = [
    "BLEUScore", "CHRFScore", "RougeScore", "TOKENIZERS", "bleu", "chrf", "cider", "cider_d", "corpus_bleu",
    "corpus_bleu_tokens", "get_tokenizer", "meteor_exact", "rouge_corpus", "rouge_scores", "rouge_tokenize",
    "sentence_bleu", "sentence_chrf", "tokenize_13a", "tokenize_intl",
]

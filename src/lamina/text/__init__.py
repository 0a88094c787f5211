"""Text for sequence models: vocabularies, corpora, padded batches and language-model windows."""

from lamina.text.corpora import load_names, load_tiny_shakespeare
from lamina.text.generate import sample_text
from lamina.text.sequences import language_model_windows, pad_sequences, shifted_pairs
from lamina.text.vocabulary import Vocabulary, word_tokens

__all__ = ["Vocabulary", "language_model_windows", "load_names", "load_tiny_shakespeare", "pad_sequences",
           "sample_text", "shifted_pairs", "word_tokens"]

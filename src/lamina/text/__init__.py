"""Text for sequence models: vocabularies, a byte-pair-encoding tokenizer, GPT-2's tokenizer (its vocab.json
and merges.txt), BERT's WordPiece tokenizer, Hugging Face tokenizer.json files (:class:`HFTokenizer`), corpora,
padded batches, language-model windows, skip-gram pairs with negative sampling for learning word embeddings
(Word2Vec), GloVe's co-occurrence matrix, and evaluations of word vectors (analogies, word similarity)."""

from lamina.text import embeddings, serving
from lamina.text.beam import Hypothesis, beam_search, beam_search_ids, beam_search_text
from lamina.text.bpe import GPT2_SPLIT, BPETokenizer, tokenizer_from_config
from lamina.text.constrained import (
    ChoiceLogitsProcessor,
    PrefixAllowedTokensLogitsProcessor,
    RegexLogitsProcessor,
    TokenIndex,
    vocabulary_strings,
)
from lamina.text.cooccurrence import cooccurrence_matrix
from lamina.text.corpora import load_names, load_tiny_shakespeare
from lamina.text.ctc_decode import (
    CTCHypothesis,
    ctc_collapse,
    ctc_greedy_decode,
    ctc_ids_to_text,
    ctc_prefix_beam_search,
)
from lamina.text.generate import (
    caching_keys_values,
    carrying_states,
    reorder_caches,
    sample_text,
    sample_texts,
    sample_token,
)
from lamina.text.generation_ids import GenerateOutput, GenerationMixin, build_processors, generate_ids
from lamina.text.gguf_tokenizer import tokenizer_from_gguf, tokenizer_json_from_gguf
from lamina.text.gpt2_tokenizer import ENDOFTEXT, GPT2Tokenizer, bytes_to_unicode, gpt2_pattern
from lamina.text.hf_convert import gpt2_tokenizer_json, wordpiece_tokenizer_json
from lamina.text.hf_question_answering import answer_token_positions
from lamina.text.hf_tokenizer import AddedToken, BatchEncoding, Encoding, HFTokenizer
from lamina.text.hf_trainers import BpeTrainer, WordLevelTrainer, WordPieceTrainer
from lamina.text.hf_training import byte_level_alphabet
from lamina.text.hf_unigram_trainer import UnigramTrainer
from lamina.text.json_schema import JSONSchemaLogitsProcessor, regex_from_schema
from lamina.text.logits_processors import (
    LogitsProcessor,
    LogitsProcessorList,
    MinNewTokensLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)
from lamina.text.metrics import (
    BLEUScore,
    CHRFScore,
    RougeScore,
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
from lamina.text.regex_fsm import DFA, RegexSyntaxError, compile_regex, escape_regex
from lamina.text.sequences import language_model_windows, pad_sequences, shifted_pairs
from lamina.text.serving import (
    BlockManager,
    LLMEngine,
    NoFreeBlocksError,
    RequestOutput,
    SamplingParams,
)
from lamina.text.sink_cache import attention_sinks
from lamina.text.skipgram import (
    analogy,
    keep_probabilities,
    most_similar,
    noise_distribution,
    skipgram_pairs,
    subsample_words,
)
from lamina.text.tagging import bio_allowed_transitions, bio_spans, entity_scores
from lamina.text.token_labels import align_labels_with_tokens, align_word_labels
from lamina.text.vocabulary import Vocabulary, word_tokens
from lamina.text.word_vectors import (
    ANALOGY_METHODS,
    WordSimilarityResult,
    analogy_accuracy,
    word_similarity_spearman,
)
from lamina.text.wordpiece import WordPieceTokenizer, basic_tokenize

__all__ = [
    "BPETokenizer", "ENDOFTEXT", "GPT2Tokenizer", "GPT2_SPLIT", "Hypothesis", "Vocabulary", "analogy",
    "beam_search", "beam_search_ids", "beam_search_text", "bytes_to_unicode", "caching_keys_values",
    "carrying_states", "gpt2_pattern", "keep_probabilities",
    "language_model_windows", "load_names", "load_tiny_shakespeare", "most_similar", "noise_distribution",
    "pad_sequences", "reorder_caches", "sample_text", "sample_texts", "sample_token", "shifted_pairs", "skipgram_pairs",
    "subsample_words", "tokenizer_from_config", "word_tokens", "WordPieceTokenizer", "basic_tokenize",
    "AddedToken", "Encoding", "HFTokenizer", "gpt2_tokenizer_json", "wordpiece_tokenizer_json",
    "BatchEncoding", "align_labels_with_tokens", "align_word_labels", "answer_token_positions",
    "CTCHypothesis", "ctc_collapse", "ctc_greedy_decode", "ctc_ids_to_text", "ctc_prefix_beam_search",
    "GenerateOutput", "GenerationMixin", "build_processors", "generate_ids",
    "LogitsProcessor", "LogitsProcessorList", "MinNewTokensLogitsProcessor", "MinPLogitsWarper",
    "NoBadWordsLogitsProcessor", "NoRepeatNGramLogitsProcessor", "RepetitionPenaltyLogitsProcessor",
    "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "TypicalLogitsWarper",
]
__all__ += ["bio_allowed_transitions", "bio_spans", "entity_scores"]  # entity spans and metrics (tagging)
__all__ += ["attention_sinks"]  # StreamingLLM's key/value cache of sinks and a window
__all__ += ["BpeTrainer", "UnigramTrainer", "WordLevelTrainer", "WordPieceTrainer",  # tokenizer.json trainers
            "byte_level_alphabet"]
__all__ += ["ANALOGY_METHODS", "WordSimilarityResult", "analogy_accuracy",  # GloVe's counts, word vector evaluation
            "cooccurrence_matrix", "word_similarity_spearman"]
__all__ += ["tokenizer_from_gguf", "tokenizer_json_from_gguf"]  # llama.cpp GGUF tokenizers
__all__ += ["embeddings"]  # sentence embeddings and retrieval (lamina.text.embeddings)
__all__ += ["BLEUScore", "CHRFScore", "RougeScore", "bleu", "chrf", "cider", "cider_d",  # generation metrics
            "corpus_bleu", "corpus_bleu_tokens", "meteor_exact", "rouge_corpus", "rouge_scores", "sentence_bleu",
            "sentence_chrf"]
__all__ += ["ChoiceLogitsProcessor", "DFA", "JSONSchemaLogitsProcessor",  # constrained generation
            "PrefixAllowedTokensLogitsProcessor", "RegexLogitsProcessor", "RegexSyntaxError", "TokenIndex",
            "compile_regex", "escape_regex", "regex_from_schema", "vocabulary_strings"]
__all__ += ["BlockManager", "LLMEngine", "NoFreeBlocksError", "RequestOutput", "SamplingParams",  # serving
            "serving"]

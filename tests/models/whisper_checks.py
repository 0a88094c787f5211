"""What the long-form Whisper tests share: the toy vocabulary (text ids 0..9, then the special
tokens with <|startofprev|>, then the timestamps <|0.00|> .. <|30.00|>), a tokenizer of it and a
tiny random Whisper on it."""

from lamina import models
from lamina.models.whisper_decoding import WhisperSpecialTokens
from lamina.models.whisper_features import N_FRAMES

SPECIALS = WhisperSpecialTokens(end_of_text=10, start_of_transcript=11, transcribe=15, translate=14,
                                no_timestamps=18, timestamp_begin=19, no_captions=17, languages={"en": 12, "de": 13},
                                start_of_prev=16)
VOCAB = SPECIALS.timestamp_begin + SPECIALS.n_timestamps


class Words:
    """Even tokens start a word (' a', ' c', ...), odd ones continue it; 9 is a full stop."""

    def decode(self, ids):
        return "".join("." if i == 9 else (" " if i % 2 == 0 else "") + "abcdefghij"[i] for i in ids)


def tiny_whisper():
    """A built random Whisper on the toy vocabulary, its decoder 40 positions long."""
    model = models.whisper("test", vocab_size=VOCAB, max_source_positions=N_FRAMES // 2, max_target_positions=40,
                           pad_token_id=10, bos_token_id=10, eos_token_id=10, decoder_start_token_id=11)
    model.build()
    return model

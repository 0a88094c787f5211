"""The toy vocabulary the long-form Whisper tests share: text ids 0..9, then the special
tokens (with <|startofprev|>), then the timestamps <|0.00|> .. <|30.00|>."""

from lamina.models.whisper_decoding import WhisperSpecialTokens

SPECIALS = WhisperSpecialTokens(end_of_text=10, start_of_transcript=11, transcribe=15, translate=14,
                                no_timestamps=18, timestamp_begin=19, no_captions=17, languages={"en": 12, "de": 13},
                                start_of_prev=16)
VOCAB = SPECIALS.timestamp_begin + SPECIALS.n_timestamps

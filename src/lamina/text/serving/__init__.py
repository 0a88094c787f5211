"""An educational LLM serving engine: a paged key/value cache with prefix caching
(:class:`BlockManager`), paged attention and continuous batching (:class:`LLMEngine`)."""

from lamina.text.serving.block_manager import BlockManager, NoFreeBlocksError
from lamina.text.serving.engine import LLMEngine, RequestOutput, SamplingParams
from lamina.text.serving.paged_attention import gather_paged_cache, prefill_attention, write_paged_cache

__all__ = ["BlockManager", "LLMEngine", "NoFreeBlocksError", "RequestOutput", "SamplingParams", "gather_paged_cache",
           "prefill_attention", "write_paged_cache"]

"""The lexical half of hybrid ranking: a tokeniser for shop text, a BM25 index (``bm25s``)
keyed like :class:`~retrieval.index.VectorIndex`, and the fusion of dense and lexical scores.

Why: dense MiniLM vectors blur model numbers ("ue55nu7100" and "ue55nu7400" are near
neighbours) while shoppers and merchants name products by them. On PriceRunner (offer title
-> product) BM25 alone beats the dense system by far, and the two fused beat both
(``benchmarks/lexical_tokenizer.py``).

Modules: :mod:`.tokens` (the tokeniser), :mod:`.index` (:class:`LexicalIndex`, BM25 with
bm25s), :mod:`.hybrid` (fusing dense and lexical scores; choosing the weight).
"""

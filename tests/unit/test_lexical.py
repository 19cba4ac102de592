import json
import random

import bm25s
import numpy as np
import pytest

from retrieval.errors import IndexError_, IndexMismatch
from retrieval.lexical.bm25 import BM25Params
from retrieval.lexical.hybrid import choose_weight, max_normalized, rrf, weighted
from retrieval.lexical.index import LexicalIndex
from retrieval.lexical.tokens import Tokenizer, TokenizerConfig, tokenize

# ---- tokeniser ----------------------------------------------------------------------------


def test_codes_stay_whole_and_give_their_parts() -> None:
    assert tokenize("Samsung UE55NU7100") == ["samsung", "ue55nu7100", "ue", "55", "nu", "7100"]
    assert tokenize("64GB") == ["64gb", "64", "gb"]
    assert tokenize("iPhone 8") == ["iphone", "8", "iphone8"]  # glued: see below
    assert Tokenizer(TokenizerConfig(glue=False))("iPhone 8") == ["iphone", "8"]


def test_codes_with_joiners() -> None:
    default = Tokenizer(TokenizerConfig(stopwords=False))("MQ8N2B/A")
    assert default == ["mq8n2b", "mq", "8", "n", "2", "b", "a"]
    assert tokenize("MQ8N2B/A") == default[:-1]  # "a" is a stop word
    whole = Tokenizer(TokenizerConfig(whole=True, joined=True))("MQ8N2B/A")
    assert whole[:2] == ["mq8n2b/a", "mq8n2ba"] and "mq8n2b" in whole
    assert "i5-8400" in Tokenizer(TokenizerConfig(whole=True))("Core i5-8400")
    # a hyphenated word without digits is no code: its pieces only
    assert Tokenizer(TokenizerConfig(whole=True))("wi-fi") == ["wi", "fi"]


def test_neighbours_glue_into_a_code_only_across_a_space() -> None:
    assert "tzaa10" in tokenize("Indesit TZAA 10")
    assert "xt2" in tokenize("fujifilm x t2")
    assert "tzaa10" not in tokenize("TZAA, 10")
    assert "tzaa10" not in Tokenizer(TokenizerConfig(glue=False))("TZAA 10")
    assert "samsungfridge" not in tokenize("samsung fridge")  # no digit: no glue
    assert "2019" not in tokenize("20 19")  # digits alone never glue


def test_case_and_width_are_folded() -> None:
    assert tokenize("ＵＥ５５ＮＵ") == tokenize("ue55nu") == ["ue55nu", "ue", "55", "nu"]
    assert tokenize("STRASSE Straße") == ["strasse", "strasse"]


def test_chinese_bigrams_and_mixed_text() -> None:
    assert tokenize("送货时间") == ["送货", "货时", "时间"]
    assert tokenize("吗") == ["吗"]
    assert tokenize("能用paypal付款吗") == ["能用", "paypal", "付款", "款吗"]
    assert tokenize("ソニー") == ["ソニ", "ニー"]
    uni = Tokenizer(TokenizerConfig(chinese="unibigram"))("付款吗")
    assert uni == ["付", "款", "吗", "付款", "款吗"]


def test_chinese_with_jieba() -> None:  # jieba is a dependency of the project
    tokens = Tokenizer(TokenizerConfig(chinese="jieba"))("送货需要多长时间")
    assert {"送货", "需要", "时间"} <= set(tokens)
    both = Tokenizer(TokenizerConfig(chinese="jieba+bigram"))("付款")
    assert both.count("付款") == 2  # the jieba word and the bigram


def test_stop_words_and_short_words() -> None:
    keep = Tokenizer(TokenizerConfig(stopwords=False, glue=False))
    assert keep("the fridge of a 2 door") == ["the", "fridge", "of", "a", "2", "door"]
    assert tokenize("the fridge of a 2 door") == ["fridge", "2", "door", "2door"]
    assert Tokenizer(TokenizerConfig(min_word=2, glue=False))("b 2 x5") == ["2", "x5", "5"]


def test_tokeniser_is_deterministic_and_named() -> None:
    text = "Apple iPhone 8 Plus 64GB MQ8N2B/A 能用paypal付款吗"
    assert tokenize(text) == tokenize(text) == Tokenizer()(text)
    assert Tokenizer().spec == TokenizerConfig().spec
    assert Tokenizer(TokenizerConfig(whole=True)).spec != Tokenizer().spec
    with pytest.raises(ValueError):
        TokenizerConfig(chinese="nope")


# ---- index --------------------------------------------------------------------------------

PRODUCTS = [
    ("tv-7100", "Samsung UE55NU7100 55 inch 4K TV"),
    ("tv-7400", "Samsung UE55NU7400 55 inch 4K TV"),
    ("phone-64", "Apple iPhone 8 64GB MQ6K2B/A"),
    ("phone-256", "Apple iPhone 8 256GB"),
    ("washer", "Bosch WAE24377GB washing machine"),
    ("fridge", "Indesit TZAA 10 freezer white"),
    ("zh", "苹果手机 iPhone 8 64GB"),
]


def rows(products=PRODUCTS):
    return [(pid, "title", text) for pid, text in products]


def synthetic_rows(n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(40)] + ["ue55nu7100", "64gb", "apple", "samsung", "送货"]
    return [
        (
            f"item{i % (n // 2)}",
            f"v{i // (n // 2)}",
            " ".join(rng.choices(words, k=rng.randint(1, 9))),
        )
        for i in range(n)
    ]


def reference_scores(rows_, query: str, params: BM25Params | None = None) -> dict[str, float]:
    """bm25s' own index on the same tokens; the best row of each item."""
    params = params or BM25Params()
    tok = Tokenizer()
    ref = bm25s.BM25(k1=params.k1, b=params.b, method=params.method)
    ref.index([tok(t) for _, _, t in rows_], show_progress=False)
    q = [t for t in tok(query) if t in ref.vocab_dict]
    scores = ref.get_scores(q) if q else np.zeros(len(rows_))
    best: dict[str, float] = {}
    for (item, _, _), s in zip(rows_, scores, strict=True):
        best[item] = max(best.get(item, 0.0), float(s))
    return best


QUERIES = ["ue55nu7100", "samsung 55 4k", "iphone 8 64 gb", "w1 w2 w2 apple", "送货 w7", "xyz"]


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
def test_scores_equal_bm25s_own_index(method: str) -> None:
    data = synthetic_rows(200) + rows()
    index = LexicalIndex.build(data, params=BM25Params(method=method))
    items = {item for item, _, _ in data}
    for q in QUERIES:
        ref = reference_scores(data, q, BM25Params(method=method))
        got = index.score_items(q, items)
        assert got.keys() == items
        for item in items:
            assert got[item] == pytest.approx(ref[item], rel=1e-6, abs=1e-6)


def test_search_is_best_per_item_best_first() -> None:
    data = synthetic_rows(200)
    index = LexicalIndex.build(data)
    assert index.item_count == 100 and len(index) == 200
    for q in QUERIES:
        ref = reference_scores(data, q)
        want = sorted(((i, s) for i, s in ref.items() if s > 0), key=lambda kv: -kv[1])[:10]
        got = index.search(q, 10)
        assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-6)
        assert len({i for i, _ in got}) == len(got)
        for item, score in got:
            assert score == pytest.approx(ref[item], rel=1e-6)


def test_one_scoring_pass_ranks_and_reads_like_search_and_score_items() -> None:
    data = synthetic_rows(200) + rows()
    index = LexicalIndex.build(data)
    items = sorted({item for item, _, _ in data})
    for q in QUERIES:
        scores = index.scores(q)
        if scores is None:
            assert index.search(q, 10) == [] and set(index.score_items(q, items).values()) == {0}
            continue
        assert scores.top(10) == index.search(q, 10)
        assert scores.top(5, exclude=["tv-7100"]) == index.search(q, 5, exclude=["tv-7100"])
        some = set(items[::3])
        assert scores.top(5, allowed=some) == index.search(q, 5, allowed=some)
        assert all(item in some for item, _ in scores.top(5, allowed=some))
        assert scores.of(items + ["unknown"]) == index.score_items(q, items)
        scores.top(3, exclude=items)  # reading never changes the scores
        assert scores.of(items) == index.score_items(q, items)


def test_the_code_decides() -> None:
    index = LexicalIndex.build(rows())
    assert index.search("samsung ue55nu7400", 1)[0][0] == "tv-7400"
    assert index.search("UE55NU7100", 2)[0][0] == "tv-7100"
    assert index.search("iphone 8 64 gb", 1)[0][0] in {"phone-64", "zh"}
    assert index.search("indesit tzaa10", 1)[0][0] == "fridge"
    assert index.search("苹果手机", 1)[0][0] == "zh"


def test_search_edges() -> None:
    index = LexicalIndex.build(rows())
    assert index.search("nothing matches", 5) == []
    assert index.search("samsung", 0) == []
    hits = index.search("samsung", 5, exclude=["tv-7100"])
    assert [i for i, _ in hits] == ["tv-7400"]
    # ties: the item added first, also when the cut at k falls inside the tie
    assert [i for i, _ in index.search("55", 5)] == ["tv-7100", "tv-7400"]
    many = LexicalIndex.build([(f"i{n:02d}", "v", "same words") for n in range(40)])
    assert [i for i, _ in many.search("same", 3)] == ["i00", "i01", "i02"]
    assert many.search("same", 1)[0][0] == "i00"
    assert index.search(["ue55nu7100"], 1)[0][0] == "tv-7100"  # tokens in, too
    assert index.score_items("samsung", ["tv-7100", "unknown", "washer"]) == {
        "tv-7100": pytest.approx(index.search("samsung", 1)[0][1]),
        "washer": 0.0,
    }
    empty = LexicalIndex()
    assert empty.search("samsung", 3) == [] and len(empty) == 0
    assert empty.score_items("samsung", ["a"]) == {}
    blank = LexicalIndex.build([("a", "v", "!!!")])  # a row without tokens
    assert blank.search("a", 3) == [] and "a" in blank
    with pytest.raises(ValueError, match="duplicate"):
        LexicalIndex.build([("a", "v", "x"), ("a", "v", "y")])


def test_rows_keep_their_tokens() -> None:
    index = LexicalIndex.build(rows())
    assert index.row_tokens("washer", "title") == tokenize("Bosch WAE24377GB washing machine")
    with pytest.raises(KeyError):
        index.row_tokens("washer", "nope")


# ---- updates ------------------------------------------------------------------------------


def same_index(a: LexicalIndex, b: LexicalIndex, queries=QUERIES) -> None:
    assert sorted(a.keys()) == sorted(b.keys())
    items = set(a.item_ids())
    assert items == set(b.item_ids())
    for q in queries:
        sa, sb = a.score_items(q, items), b.score_items(q, items)
        for item in items:
            assert sa[item] == pytest.approx(sb[item], rel=1e-6, abs=1e-7), (q, item)


def test_incremental_add_and_remove_equal_a_fresh_build() -> None:
    data = synthetic_rows(300, seed=1)
    index = LexicalIndex.build(data[:200])
    index.add(data[200:250])
    assert index.remove(["item3", "item7", "no-such-item"]) == 4  # two rows each
    changed = [("item10", "v0", "apple ue55nu7100 brand new"), ("new", "v0", "送货 samsung")]
    assert index.update(data[250:] + changed, remove=["item11"])
    final: dict[tuple[str, str], str] = {}
    for item, variant, text in data + changed:
        final[(item, variant)] = text
    for gone in ("item3", "item7", "item11"):
        final = {k: t for k, t in final.items() if k[0] != gone}
    fresh = LexicalIndex.build([(i, v, t) for (i, v), t in final.items()])
    same_index(index, fresh, QUERIES + ["brand new", "item10"])
    assert index.row_tokens("item10", "v0") == tokenize("apple ue55nu7100 brand new")


def test_removing_most_rows_compacts_the_vocabulary() -> None:
    data = [(f"i{n}", "v", f"unique{n} shared") for n in range(100)]
    index = LexicalIndex.build(data)
    index.remove([f"i{n}" for n in range(90)])
    fresh = LexicalIndex.build(data[90:])
    assert len(index._state.vocab) == len(fresh._state.vocab)  # the dead tokens went
    same_index(index, fresh, ["unique95 shared", "unique5"])
    index.remove([f"i{n}" for n in range(90, 100)])
    assert index.search("shared", 5) == [] and len(index) == 0
    index.add([("back", "v", "shared again")])
    assert index.search("shared", 5)[0][0] == "back"


def test_an_update_without_changes_does_nothing() -> None:
    index = LexicalIndex.build(rows())
    state = index._state
    assert index.update() is False
    assert index.update(remove=["unknown"]) is False
    assert index.remove([]) == 0
    assert index._state is state


def test_a_copy_is_independent() -> None:
    index = LexicalIndex.build(rows())
    twin = index.copy()
    twin.update([("new", "title", "Zanzibar Z1")], remove=["tv-7100"])
    assert "tv-7100" in index and "new" not in index and "tv-7100" not in twin
    assert index.search("zanzibar", 3) == []
    assert twin.search("zanzibar", 1)[0][0] == "new"


# ---- persistence --------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path) -> None:
    index = LexicalIndex.build(synthetic_rows(100) + rows(), meta={"version": "products-1"})
    index.save(tmp_path / "lexical")
    loaded = LexicalIndex.load(tmp_path / "lexical", expect={"version": "products-1"})
    assert loaded.meta == {"version": "products-1"}
    assert loaded.keys() == index.keys()
    for q in QUERIES:
        assert loaded.search(q, 20) == index.search(q, 20)
    # a loaded index updates like the one it came from
    loaded.update([("tv-7100", "title", "changed")], remove=["washer"])
    index.update([("tv-7100", "title", "changed")], remove=["washer"])
    same_index(loaded, index)


def test_save_load_empty_and_tokenless(tmp_path) -> None:
    for name, index in (
        ("empty", LexicalIndex()),
        ("blank", LexicalIndex.build([("a", "v", "?")])),
    ):
        index.save(tmp_path / name)
        loaded = LexicalIndex.load(tmp_path / name)
        assert loaded.keys() == index.keys() and loaded.search("a", 3) == []
        loaded.add([("b", "v", "walnut")])
        assert loaded.search("walnut", 3)[0][0] == "b"


def test_load_refuses_another_tokeniser_and_broken_folders(tmp_path) -> None:
    LexicalIndex.build(rows()).save(tmp_path / "lex")
    with pytest.raises(IndexMismatch, match="tokenizer"):
        LexicalIndex.load(tmp_path / "lex", tokenizer=Tokenizer(TokenizerConfig(whole=True)))
    with pytest.raises(IndexMismatch, match="version"):
        LexicalIndex.load(tmp_path / "lex", expect={"version": "other"})
    with pytest.raises(IndexError_, match="no lexical index"):
        LexicalIndex.load(tmp_path / "missing")
    meta = json.loads((tmp_path / "lex" / "lexical.json").read_text())
    meta["items"] = meta["items"][:-1]
    meta["variants"] = meta["variants"][:-1]
    (tmp_path / "lex" / "lexical.json").write_text(json.dumps(meta))
    with pytest.raises(IndexError_):
        LexicalIndex.load(tmp_path / "lex")
    (tmp_path / "lex" / "lexical.json").write_text("{not json")
    with pytest.raises(IndexError_, match="unreadable"):
        LexicalIndex.load(tmp_path / "lex")


# ---- fusion -------------------------------------------------------------------------------


def test_rrf() -> None:
    fused = rrf([["a", "b", "c"], ["b", "d"]], k=60)
    assert [i for i, _ in fused] == ["b", "a", "d", "c"]
    scores = dict(fused)
    assert scores["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert scores["a"] == pytest.approx(1 / 61)
    assert scores["c"] == pytest.approx(1 / 63)
    assert scores["d"] == pytest.approx(1 / 62)
    assert rrf([["a", "a", "b"]], k=0) == [("a", 1.0), ("b", pytest.approx(1 / 3))]
    assert rrf([]) == [] and rrf([[], []]) == []
    with pytest.raises(ValueError):
        rrf([["a"]], k=-1)


def test_weighted_fusion() -> None:
    dense = {"a": 0.9, "b": 0.8, "c": 0.5}
    lexical = {"b": 10.0, "d": 5.0}
    fused = dict(weighted(dense, lexical, 0.5))
    assert fused["a"] == pytest.approx(0.5 * 0.9)
    assert fused["b"] == pytest.approx(0.5 * 0.8 + 0.5 * 1.0)
    assert fused["c"] == pytest.approx(0.5 * 0.5)
    assert fused["d"] == pytest.approx(0.5 * 0.5 + 0.5 * 0.5)  # missing dense: the lowest given
    assert [i for i, _ in weighted(dense, lexical, 0.5)] == ["b", "d", "a", "c"]
    assert [i for i, _ in weighted(dense, lexical, 0.0)][:3] == ["a", "b", "c"]
    assert [i for i, _ in weighted(dense, lexical, 1.0)][:2] == ["b", "d"]
    # scale-free: BM25 scores times 7 fuse the same
    scaled = weighted(dense, {k: 7 * v for k, v in lexical.items()}, 0.3)
    plain = weighted(dense, lexical, 0.3)
    assert [i for i, _ in scaled] == [i for i, _ in plain]
    assert [s for _, s in scaled] == pytest.approx([s for _, s in plain])
    assert weighted({}, {}, 0.5) == []
    assert [i for i, _ in weighted({"a": 0.1}, {"b": 0.0}, 0.9)] == ["a", "b"]
    with pytest.raises(ValueError):
        weighted(dense, lexical, 1.5)
    assert max_normalized({"a": 2.0, "b": 1.0}) == {"a": 1.0, "b": 0.5}
    assert max_normalized({"a": 0.0}) == {"a": 0.0}


def synthetic_examples(n: int, seed: int = 0):
    """Queries whose relevant item wins with a lexical weight in about (0.25, 0.6) only: dense
    favours a decoy slightly, BM25 favours another decoy strongly."""
    rng = np.random.default_rng(seed)
    out = []
    for q in range(n):
        gap = rng.uniform(0.02, 0.05)
        dense = {"rel": 0.70, "dense-decoy": 0.70 + gap, "lex-decoy": 0.70 - 0.3}
        lexical = {"rel": 8.0, "dense-decoy": 8.0 * (1 - 2.5 * gap) - 0.5, "lex-decoy": 10.0}
        out.append(
            (
                {f"{k}{q}": v for k, v in dense.items()},
                {f"{k}{q}": v for k, v in lexical.items()},
                {f"rel{q}"},
            )
        )
    return out


def test_choose_weight_by_cross_validation() -> None:
    examples = synthetic_examples(60)
    choice = choose_weight(examples, folds=5, seed=0)
    assert 0.2 <= choice.weight < 0.6
    assert len(choice.table) == 21 and len(choice.fold_weights) == 5
    by_weight = {row["weight"]: row for row in choice.table}
    assert by_weight[0.0]["mean"] == 0.0 and by_weight[1.0]["mean"] == 0.0
    assert by_weight[choice.weight]["mean"] == max(r["mean"] for r in choice.table)
    assert all(len(r["folds"]) == 5 for r in choice.table)
    assert 0.0 <= choice.cv_score <= 1.0
    assert all(0.2 <= w < 0.6 for w in choice.fold_weights)
    assert choose_weight(examples, folds=5, seed=0) == choice  # deterministic
    # any metric: the generic path agrees with the hit@1 fast path
    slow = choose_weight(
        examples, folds=5, seed=0, metric=lambda r, rel: float(bool(r) and r[0][0] in rel)
    )
    assert slow.weight == choice.weight and slow.cv_score == choice.cv_score
    with pytest.raises(ValueError):
        choose_weight([])

"""Selection policies, dedup and diversity on hand-made tables: ties, empty strata, counts, order."""

import numpy as np
import polars as pl
import pytest
from instruct_selectors.dedup import find_duplicates, row_texts
from instruct_selectors.diversity import cluster_stratified, k_center_greedy
from instruct_selectors.policies import select
from instruct_selectors.policy_steps import TopK, parse_steps

from pipelines.schema import make_example, normalise_text, to_table


def _table(scores, task_types=None, texts=None):
    rows = []
    for i in range(len(scores)):
        text = texts[i] if texts else f"question number {i}"
        meta = {"task_type": task_types[i]} if task_types else {}
        rows.append(make_example(text, f"answer {i}", meta=meta))
    return to_table(rows).with_columns(pl.Series("score_x", scores, dtype=pl.Float64))


def _kept_ids(out):
    return out.filter(pl.col("keep"))["id"].to_list()


def test_top_k_ties_broken_by_id_whatever_the_row_order():
    t = _table([1.0, 2.0, 2.0, 2.0, 0.5, None])
    out, summary = select(t, [{"top_k": {"column": "score_x", "k": 2}}])
    tied = sorted(t.filter(pl.col("score_x") == 2.0)["id"].to_list())
    assert sorted(_kept_ids(out)) == tied[:2]
    shuffled, _ = select(
        t.sample(fraction=1.0, shuffle=True, seed=3), [{"top_k": {"column": "score_x", "k": 2}}]
    )
    assert sorted(_kept_ids(shuffled)) == tied[:2]
    assert out.filter(pl.col("keep"))["select_rank"].sort().to_list() == [1, 2]
    assert set(out.filter(~pl.col("keep"))["dropped_by"]) == {"top_k(score_x, k=2)"}
    assert summary.row(0, named=True) == {
        "step": 1,
        "name": "top_k(score_x, k=2)",
        "rows_in": 6,
        "rows_out": 2,
        "dropped": 4,
        "detail": "k=2",
    }


def test_top_k_tau_fraction_and_nulls_rank_last():
    t = _table([float(i) for i in range(20)] + [None])
    out, _ = select(t, [{"top_k": {"column": "score_x", "tau": 7}}])  # floor(21 / 7) = 3
    assert sorted(out.filter(pl.col("keep"))["score_x"].to_list()) == [17.0, 18.0, 19.0]
    out, _ = select(t, [{"top_k": {"column": "score_x", "fraction": 1.0, "largest": False}}])
    assert out.sort("select_rank")["score_x"].to_list()[-1] is None  # null ranks last


def test_top_k_fuse_ranks_by_reciprocal_rank_fusion_of_the_rows_entering():
    # row 2 is second on both columns; rows 0 and 4 are first on one and last on the other
    t = _table([4.0, 1.0, 3.0, 2.0, 0.0]).with_columns(pl.Series("score_y", [0.0, 1.0, 3.5, 3.0, 4.0]))
    step = {"top_k": {"fuse": ["score_x", "score_y"], "k": 1}}
    out, summary = select(t, [step])
    assert out.filter(pl.col("keep"))["score_x"].to_list() == [3.0]  # 2/62 beats 1/61 + 1/65
    assert summary["name"].to_list() == ["top_k(rrf(score_x, score_y), k=1)"]
    # ranks among the rows entering the step: of rows 0, 1, 3, row 3 is 2nd and 1st (over all five
    # rows it would be 3rd and 3rd, and row 0 would win)
    out, _ = select(t, [{"threshold": {"column": "score_y", "max": 3.2}}, step])
    assert out.filter(pl.col("keep"))["score_x"].to_list() == [2.0]
    # a null ranks last on its column; equal values share a rank
    t2 = _table([None, 1.0, 1.0]).with_columns(pl.Series("score_y", [9.0, 0.0, 5.0]))
    out, _ = select(t2, [{"top_k": {"fuse": ["score_x", "score_y"], "k": 1}}])
    assert out.filter(pl.col("keep"))["score_y"].to_list() == [5.0]
    with pytest.raises(ValueError, match="either column or fuse"):
        parse_steps([{"top_k": {"column": "score_x", "fuse": ["a", "b"], "k": 1}}])
    with pytest.raises(ValueError, match="two or more"):
        parse_steps([{"top_k": {"fuse": ["a"], "k": 1}}])


def test_threshold_inclusive_nulls_and_quantiles():
    t = _table([0.5, 1.0, 1.5, None, float("nan")])
    out, _ = select(t, [{"threshold": {"column": "score_x", "max": 1.0}}])
    assert out["keep"].to_list() == [True, True, False, False, False]
    out, _ = select(t, [{"threshold": {"column": "score_x", "max": 1.0, "keep_null": True}}])
    assert out["keep"].to_list() == [True, True, False, True, True]
    out, _ = select(t, [{"threshold": {"column": "score_x", "min_quantile": 0.5}}])
    assert out["keep"].to_list() == [False, True, True, False, False]


def test_ratio_is_seeded_and_independent_of_row_order():
    t = _table([0.0] * 50)
    a, _ = select(t, [{"ratio": {"fraction": 0.2, "seed": 1}}])
    b, _ = select(t.reverse(), [{"ratio": {"fraction": 0.2, "seed": 1}}])
    c, _ = select(t, [{"ratio": {"fraction": 0.2, "seed": 2}}])
    assert len(_kept_ids(a)) == 10
    assert sorted(_kept_ids(a)) == sorted(_kept_ids(b))
    assert sorted(_kept_ids(a)) != sorted(_kept_ids(c))


def test_quota_per_stratum_with_empty_strata():
    types = ["a", "a", "a", "b", "b", "c"]
    t = _table([5.0, 4.0, 3.0, 2.0, 1.0, 0.0], task_types=types)
    steps = [
        {"threshold": {"column": "score_x", "min": 0.5}},  # empties stratum c
        {
            "quota": {
                "field": "task_type",
                "per_stratum": 2,
                "column": "score_x",
                "strata": ["a", "b", "c", "d"],
            }
        },
    ]
    out, summary = select(t, steps)
    assert out["keep"].to_list() == [True, True, False, True, True, False]
    assert out["dropped_by"].to_list()[5] == "threshold(score_x>=0.5)"
    assert summary["detail"][1] == "a=2/3 b=2/2 c=0/0 d=0/0"
    # fraction per stratum: floor(fraction * size); a stratum of one gives none at 0.5
    out, _ = select(t, [{"quota": {"field": "task_type", "fraction": 0.5, "column": "score_x"}}])
    assert out["keep"].to_list() == [True, False, False, True, False, False]


def test_quota_without_column_keeps_incoming_rank_order():
    t = _table([1.0, 3.0, 2.0, 4.0], task_types=["a", "a", "b", "b"])
    out, _ = select(
        t, [{"top_k": {"column": "score_x", "k": 4}}, {"quota": {"field": "task_type", "per_stratum": 1}}]
    )
    assert out["keep"].to_list() == [False, True, False, True]


def test_summary_counts_chain_and_dedup_reasons():
    texts = [
        "What is the capital of France?",
        "what is  the CAPITAL of france?",
        "Name three primary colours.",
    ]
    t = _table([1.0, 2.0, 3.0], texts=texts)
    t = t.with_columns(pl.Series("response", ["Paris.", "paris.", "Red, yellow and blue."]))
    out, summary = select(t, [{"dedup": {}}, {"top_k": {"column": "score_x", "k": 1}}])
    assert out["dropped_by"].to_list() == ["top_k(score_x, k=1)", "dedup.exact", None]
    assert out["dup_of"].to_list() == [None, out["id"][0], None]
    assert summary["rows_in"].to_list() == [3, 2] and summary["rows_out"].to_list() == [2, 1]
    assert summary["detail"][0] == "exact=1 near=0"
    assert out.filter(pl.col("keep"))["keep_reason"].to_list() == ["top_k(score_x, k=1)"]


def test_steps_validated_with_clear_errors():
    with pytest.raises(ValueError, match=r"step 1 \(top_k\): .*exactly one of k, fraction, tau"):
        parse_steps([{"top_k": {"column": "s", "k": 3, "fraction": 0.1}}])
    with pytest.raises(ValueError, match="unknown step 'topk'"):
        parse_steps([{"topk": {}}])
    with pytest.raises(ValueError, match=r"step 1 \(threshold\): colum"):
        parse_steps([{"threshold": {"colum": "s", "max": 1}}])
    with pytest.raises(ValueError, match="dedup -> filters -> rank -> diversify"):
        parse_steps([{"top_k": {"column": "s", "k": 1}}, {"dedup": {}}])
    with pytest.raises(ValueError, match="not in the table"):
        select(_table([1.0]), [TopK(column="score_missing", k=1)])
    out, summary = select(_table([]), [{"top_k": {"column": "score_x", "fraction": 0.5}}])
    assert out.height == 0 and summary["rows_out"].to_list() == [0]


def test_dedup_counts_exact_and_near():
    base = (
        "the committee met on tuesday to discuss the budget for the new library and agreed to fund it in "
        "full after a long debate about the cost of the roof the size of the reading room and the hours it "
        "should open on weekends"
    )  # 40 words: one changed word leaves a word-3-gram Jaccard of ~0.86
    rows = [
        make_example(base, "ok"),
        make_example(base.upper() + "  ", "OK"),  # exact after normalisation
        make_example(base.replace("tuesday", "wednesday"), "ok"),  # near
        make_example("a completely different question about photosynthesis in plants and light", "ok"),
    ]
    kind, dup_of = find_duplicates(to_table(rows), near_threshold=0.7)
    assert kind == [None, "exact", "near", None]
    ids = to_table(rows)["id"].to_list()
    assert dup_of == [None, ids[0], ids[0], None]
    assert find_duplicates(to_table(rows), near=False)[0] == [None, "exact", None, None]


def test_row_texts_equal_normalise_text_of_each_row():
    # ASCII rows take polars' path, the others Python's: both must give normalise_text exactly
    cells = ["  Tabs\tand\nNewlines\r here ", "UPPER lower MiXeD", "sep\x1cfile\x1dgroup\x1erec\x1funit",
             "\x0bvertical\x0cfeed", "", "Stra\u00dfe \ufb01le \uff21\uff22", "nbsp\u00a0and\u2028line\x85next",
             "\u0130stanbul CAF\u00c9", "plain words only"]
    table = pl.DataFrame({"instruction": cells, "context": [None, "Ctx  X", "", "a", None, "b", "C", "", " z "],
                          "response": list(reversed(cells))})
    expected = [normalise_text("\x1f".join(c or "" for c in row))
                for row in table.select("instruction", "context", "response").iter_rows()]
    assert row_texts(table).to_list() == expected
    assert row_texts(table.head(0)).to_list() == []


def _blobs():
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    # 10 points around centre 0 first (best-ranked), then 3 around centre 1, 2 around centre 2
    sizes = [10, 3, 2]
    x = np.concatenate([c + rng.normal(0, 0.1, (n, 3)) for c, n in zip(centres, sizes, strict=True)])
    return x, np.repeat([0, 1, 2], sizes)


def test_k_center_picks_one_point_per_blob():
    x, blob = _blobs()
    picked = k_center_greedy(x, 3)
    assert picked[0] == 0  # starts from the best-ranked row
    assert sorted(blob[picked]) == [0, 1, 2]
    assert k_center_greedy(x, 0) == [] and len(k_center_greedy(x, 100)) == len(x)


def test_cluster_stratified_round_robin_over_clusters():
    x, blob = _blobs()
    picked = cluster_stratified(x, 6, n_clusters=3, seed=0)
    assert picked[0] == 0
    assert sorted(blob[picked]) == [0, 0, 1, 1, 2, 2]


def test_diversify_step_uses_embedding_column():
    x, blob = _blobs()
    t = _table(list(np.arange(len(x), 0, -1).astype(float)))
    t = t.with_columns(pl.Series("embedding", x.tolist(), dtype=pl.List(pl.Float32)))
    out, summary = select(t, [{"top_k": {"column": "score_x", "fraction": 1.0}}, {"diversify": {"k": 3}}])
    kept = out.filter(pl.col("keep")).sort("select_rank")
    assert sorted(blob[[t["id"].to_list().index(i) for i in kept["id"]]]) == [0, 1, 2]
    assert kept["keep_reason"].to_list() == ["diversify(k_center, k=3)"] * 3
    out, _ = select(t, [{"diversify": {"k": 3, "method": "cluster", "n_clusters": 3}}])
    assert out["keep"].sum() == 3

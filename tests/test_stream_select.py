"""Streaming selection over shards equals the in-memory selection; vectorised MinHash estimates Jaccard."""

import random

import numpy as np
import polars as pl
import pytest
from instruct_selectors.dedup import dedup_state, find_duplicates
from instruct_selectors.id_order import id_keys, id_rank
from instruct_selectors.minhash import shingle_hashes, signatures
from instruct_selectors.policies import select
from instruct_selectors.stream_select import select_shards

from pipelines.schema import make_example, to_table
from pipelines.shards import write_shards

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega river stone cloud forest ember lantern quartz meadow harbor").split()


def _text(rng: random.Random, n: int = 40) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _table(n: int = 120, seed: int = 0) -> pl.DataFrame:
    rng = random.Random(seed)
    rows, texts = [], []
    for i in range(n):
        r = rng.random()
        if texts and r < 0.15:  # exact duplicate after normalisation
            t = rng.choice(texts).upper() + "  "
        elif texts and r < 0.35:  # near duplicate: one word changed
            w = rng.choice(texts).split()
            w[rng.randrange(len(w))] = "changed"
            t = " ".join(w)
        else:
            t = _text(rng)
            texts.append(t)
        rows.append(make_example(t, f"answer {i % 7}", meta={"task_type": f"t{i % 3}"}))
    t = to_table(rows)
    scores = [None if i % 11 == 0 else round(rng.random(), 2) for i in range(t.height)]  # ties and nulls
    return t.with_columns(pl.Series("score_x", scores, dtype=pl.Float64),
                          pl.Series("score_y", [rng.random() for _ in range(t.height)]))


STEPS = [
    {"dedup": {"near_threshold": 0.7}},
    {"threshold": {"column": "score_y", "min_quantile": 0.1}},
    {"top_k": {"column": "score_x", "fraction": 0.6}},
    {"quota": {"field": "task_type", "per_stratum": 10, "column": "score_y"}},
]


@pytest.mark.parametrize("shard_size", [7, 50, 1000])
def test_streaming_select_equals_in_memory(tmp_path, shard_size):
    table = _table()
    expected, expected_summary = select(table, STEPS)
    assert set(expected["dropped_by"].drop_nulls()) >= {"dedup.exact", "dedup.near"}  # the table exercises both
    folder = tmp_path / "scored"
    write_shards(table, folder, shard_size)
    out = tmp_path / "selected" / "all.parquet"
    summary, _ = select_shards(sorted(folder.glob("part-*.parquet")), STEPS, out)
    got = pl.read_parquet(out)
    assert got.columns == expected.columns
    assert got.equals(expected)
    assert summary.equals(expected_summary)
    assert not list(out.parent.glob(".select-*"))  # the signature file is gone


def test_streaming_select_prepare_and_finish_apply_to_every_shard(tmp_path):
    table = _table(40, seed=1)
    write_shards(table, tmp_path / "s", 9)
    flag = lambda t: t.with_columns((pl.col("score_y") > 0.5).alias("hi"))  # noqa: E731
    cut = {}

    def finish(compact):
        cut["q"] = compact["score_x"].median()
        return lambda t: t.with_columns((pl.col("score_x") >= cut["q"]).alias("above"))

    steps = [{"threshold": {"column": "score_y", "max": 0.9}}]
    select_shards(sorted((tmp_path / "s").glob("*.parquet")), steps, tmp_path / "o.parquet",
                  prepare=flag, carry=["score_x"], finish=finish)
    got = pl.read_parquet(tmp_path / "o.parquet")
    expected, _ = select(flag(table).with_columns((pl.col("score_x") >= cut["q"]).alias("above")), steps)
    assert got.equals(expected)


@pytest.mark.parametrize("overwrite", [False, True])
def test_streaming_select_marks_each_shard_once(tmp_path, overwrite):
    """prepare (decontamination n-grams, row filters) runs in pass 1 only; pass 2 writes the
    same marks, also when prepare rewrites a column the shards already have."""
    table = _table(40, seed=2)
    if overwrite:
        table = table.with_columns(pl.lit("stale").alias("mark"))
    write_shards(table, tmp_path / "s", 9)
    calls = []

    def mark(t):
        calls.append(t.height)
        return t.with_columns(pl.when(pl.col("score_y") > 0.5).then(pl.lit("hi")).alias("mark"))

    steps = [{"top_k": {"column": "score_x", "fraction": 0.5}}]
    select_shards(sorted((tmp_path / "s").glob("*.parquet")), steps, tmp_path / "o.parquet", prepare=mark)
    assert sum(calls) == table.height  # once per row, not once per pass
    expected, _ = select(mark(table), steps)
    assert pl.read_parquet(tmp_path / "o.parquet").equals(expected)


def test_minhash_estimate_tracks_jaccard():
    rng = random.Random(3)
    pairs = []
    for _ in range(60):
        a = _text(rng, 60).split()
        b = list(a)
        for _ in range(rng.randrange(0, 25)):
            b[rng.randrange(len(b))] = rng.choice(WORDS) + "x"
        pairs.append((" ".join(a), " ".join(b)))
    texts = [t for p in pairs for t in p]
    rows, h = shingle_hashes(texts, 3)
    sets = [set(h[rows == i].tolist()) for i in range(len(texts))]
    sig = signatures(texts, 128, 3)
    err = []
    for i in range(len(pairs)):
        a, b = sets[2 * i], sets[2 * i + 1]
        true = len(a & b) / len(a | b)
        est = float((sig[2 * i] == sig[2 * i + 1]).mean())
        err.append(est - true)
    assert abs(np.mean(err)) < 0.03 and np.sqrt(np.mean(np.square(err))) < 0.08


def test_short_texts_and_chains():
    # chain a~b, b~c, a!~c: c is compared with kept rows only, so it stays
    base = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
            "seventeen eighteen nineteen twenty").split()
    b = base[:10] + ["x"] * 3 + base[13:]
    c = base[:5] + ["x"] * 3 + ["y"] * 3 + ["z"] * 2 + base[13:]
    rows = [make_example(" ".join(base), ""), make_example(" ".join(b), ""), make_example(" ".join(c), ""),
            make_example("hi", ""), make_example("HI", ""), make_example("hello there", "")]
    t = to_table(rows)
    st = dedup_state([" ".join(x) for x in (base, b, c)], near_threshold=0.3)
    est = lambda i, j: float((st.sig[i] == st.sig[j]).mean())  # noqa: E731
    kind, of = find_duplicates(t, near_threshold=0.3)
    assert kind[:2] == [None, "near"] and kind[3:] == [None, "exact", None]
    assert kind[2] == ("near" if est(0, 2) >= 0.3 else None)


def _big_table(n: int, seed: int) -> pl.DataFrame:
    """A few thousand rows: exact and near duplicates, tied and null scores, meta strata, marks."""
    rng = random.Random(seed)
    t = _table(n, seed)
    marks = [rng.choice(["mmlu:2", ""]) if rng.random() < 0.05 else None for _ in range(t.height)]
    return t.with_columns(pl.Series("contaminated_by", marks, dtype=pl.Utf8),
                          pl.Series("bucket", [rng.choice(["a", "b", None]) for _ in range(t.height)]))


BIG_STEPS = [
    [{"decontaminate": {}}, {"dedup": {"near_threshold": 0.7}}, {"dedup": {"exact": False, "near_threshold": 0.5}},
     {"threshold": {"column": "score_y", "min_quantile": 0.05, "max": 0.97, "keep_null": True}},
     {"top_k": {"column": "score_x", "fraction": 0.7}},
     {"quota": {"field": "task_type", "fraction": 0.8, "column": "score_x", "strata": ["t9"]}}],
    [{"dedup": {"near": False}}, {"ratio": {"fraction": 0.5, "seed": 3}},
     {"quota": {"field": "bucket", "per_stratum": 300, "random": True, "seed": 1}}],
    [{"top_k": {"column": "score_x", "tau": 2, "largest": False}},
     {"quota": {"field": "task_type", "per_stratum": 200}}],
    [{"dedup": {"near_threshold": 0.7}}, {"top_k": {"fuse": ["score_x", "score_y"], "fraction": 0.3}}],
    [],
]


@pytest.mark.parametrize("steps", BIG_STEPS, ids=["dedup-filter-rank", "ratio-random-quota", "smallest", "fused", "none"])
@pytest.mark.parametrize("long_ids", [False, True])
def test_streaming_select_equals_in_memory_on_thousands_of_rows(tmp_path, steps, long_ids):
    table = _big_table(3000, seed=5)
    if long_ids:  # ids alike in their first 16 bytes (full ids decide), and two rows sharing an id
        ids = [f"same-prefix-0123456789-{i:06d}" for i in random.Random(1).sample(range(10**6), table.height)]
        ids[7] = ids[1500]
        table = table.with_columns(pl.Series("id", ids))
    expected, expected_summary = select(table, steps)
    write_shards(table, tmp_path / "s", 250)
    summary, compact = select_shards(sorted((tmp_path / "s").glob("*.parquet")), steps, tmp_path / "o.parquet")
    assert pl.read_parquet(tmp_path / "o.parquet").equals(expected)
    assert summary.equals(expected_summary)
    assert compact["keep"].to_list() == expected["keep"].to_list()
    assert compact["dropped_by"].cast(pl.Utf8).to_list() == expected["dropped_by"].to_list()


def test_id_rank_is_string_order():
    rng = random.Random(2)
    alphabet = ["a", "b", "é", "\x00", "z", "中", "😀"]
    ids = ["".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 15, 16, 17, 30]))) for _ in range(400)]
    ids += ["p" * 16 + "a", "p" * 16, "p" * 16 + "\x00", "ab", "ab\x00", ids[5]]
    rank = id_rank(id_keys(pl.Series(ids)), lambda rows: [ids[i] for i in rows])
    dense = {s: r for r, s in enumerate(sorted(set(ids)))}
    assert rank.tolist() == [dense[s] for s in ids]


def test_streaming_select_reports_a_shard_that_fails_to_mark(tmp_path):
    """Shards are read and marked one ahead, in a thread: a failure there still reaches the caller."""
    write_shards(_table(40, seed=3), tmp_path / "s", 9)

    def mark(t):
        if t["score_y"].max() < 2:  # every shard
            raise ValueError("eval set unreadable")
        return t

    with pytest.raises(ValueError, match="eval set unreadable"):
        select_shards(sorted((tmp_path / "s").glob("*.parquet")), [{"top_k": {"column": "score_x", "k": 3}}],
                      tmp_path / "o.parquet", prepare=mark)
    assert not (tmp_path / "o.parquet").exists()


def test_ahead_map_keeps_order_draws_lazily_and_raises_where_the_item_was():
    import threading
    import time

    from pipelines.read_ahead import ahead_map

    drawn, running, most = [], [0], [0]
    lock = threading.Lock()

    def items():
        for i in range(12):
            drawn.append(i)
            yield i

    def slow_square(i):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.01 * (i % 3))  # later items may finish first
        with lock:
            running[0] -= 1
        if i == 9:
            raise ValueError("item 9")
        return i * i

    out = ahead_map(slow_square, items(), workers=3)
    assert [next(out) for _ in range(4)] == [0, 1, 4, 9]
    assert len(drawn) <= 4 + 3  # never more than the workers ahead of the caller
    with pytest.raises(ValueError, match="item 9"):
        list(out)
    assert 1 < most[0] <= 3


def test_near_dedup_tells_tasks_about_one_passage_apart():
    """Three tasks on one long passage share most of their words; by default they are not near
    duplicates (the passage would drown what they ask), a reworded copy of one is, and the same
    question and answer about another passage is not. same_context=False: the text as a whole."""
    passage = " ".join(f"{WORDS[i % len(WORDS)]}{i}" for i in range(300))
    ASK = "What do these findings suggest?"  # a long answer: MinHash estimates are noisy on a dozen shingles
    RISE = " ".join(f"finding{i}" for i in range(60)) + " trial"
    other = " ".join(f"{WORDS[i % len(WORDS)]}{i}" for i in range(300, 600))
    rows = to_table([
        make_example(ASK, RISE, passage, "t"),
        make_example("Is it true that the second measurement rose after treatment?", "No. It fell.", passage, "t"),
        make_example("Which number fills the blank in the third sentence?", "Twelve patients.", passage, "t"),
        make_example(ASK, RISE.replace("trial", "study"), passage, "t"),
        make_example(ASK, RISE, other, "t"),
    ])
    kind, of = find_duplicates(rows, same_context=True)
    assert kind == [None, None, None, "near", None] and of[3] == rows["id"][0]
    kept, _ = select(rows, [{"dedup": {"near": True}}])
    assert kept["dropped_by"].to_list() == [None, None, None, "dedup.near", None]
    whole, of = find_duplicates(rows, same_context=False)
    assert whole[2] == "near" and of[2] == rows["id"][1]  # the text as a whole: two tasks of one passage merge

"""Fine-tuning data: assistant-only labels at exact positions, the [IND] indicator, selection loading."""

import json

import polars as pl
import pytest

from pipelines.export import export_dataset
from pipelines.finetune.data import (
    IGNORE_INDEX,
    INDICATOR,
    ChatCollator,
    add_indicator,
    chat_rows,
    encode_chat,
    encode_rows,
    ensure_indicator_token,
    load_examples,
    read_rows,
)
from pipelines.llm.base import LossRequest
from pipelines.llm.nll import encode
from pipelines.schema import make_example, to_messages, to_table, user_content
from pipelines.shards import read_rejects


@pytest.fixture
def tok(tiny):
    return tiny.tokenizer()


def _render_ids(tok, messages, generation_prompt):
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    return tok(text, add_special_tokens=False)["input_ids"]


def test_labels_cover_exactly_the_answer_and_end_of_turn(tok):
    messages = [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
    ]
    enc = encode_chat(tok, messages)
    prompt_len = len(_render_ids(tok, messages[:1], True))
    answer_ids = tok("Paris.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert enc.input_ids[:prompt_len] == _render_ids(tok, messages[:1], True)
    assert enc.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert enc.labels[prompt_len : prompt_len + len(answer_ids)] == answer_ids
    assert enc.input_ids[prompt_len + len(answer_ids) - 1] == tok.eos_token_id
    # The template's trailing newline after <|im_end|> is not part of the answer.
    assert enc.labels[prompt_len + len(answer_ids) :] == [IGNORE_INDEX] * (
        len(enc.labels) - prompt_len - len(answer_ids)
    )
    assert tok.decode(enc.input_ids) == tok.apply_chat_template(messages, tokenize=False)


def test_multi_turn_labels_every_assistant_turn_and_no_user_turn(tok):
    messages = [
        {"role": "user", "content": "Say yes."},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "Say no."},
        {"role": "assistant", "content": "no"},
    ]
    enc = encode_chat(tok, messages)
    labelled = tok.decode([t for t in enc.labels if t != IGNORE_INDEX])
    assert labelled == "yes<|im_end|>no<|im_end|>"


def test_collator_padding(tok):
    messages = [{"role": "user", "content": "hi " * 50}, {"role": "assistant", "content": "ok"}]
    a = encode_chat(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    b = encode_chat(tok, messages)
    batch = ChatCollator(tok.pad_token_id)([vars(a), vars(b)])
    n = len(a.input_ids)
    assert batch["input_ids"].shape == (2, len(b.input_ids))
    assert batch["attention_mask"][0, :n].all() and not batch["attention_mask"][0, n:].any()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()


def _labelled(enc):
    return [t for t in enc.labels if t != IGNORE_INDEX]


def test_over_long_row_keeps_the_whole_answer_and_the_prompt_tail(tok):
    messages = [{"role": "user", "content": "hi " * 50 + "END"}, {"role": "assistant", "content": "ok"}]
    full = encode_chat(tok, messages)
    enc = encode_chat(tok, messages, max_length=10)
    assert len(enc.input_ids) == 10 and enc.truncated and not full.truncated
    answer = tok("ok<|im_end|>", add_special_tokens=False)["input_ids"]
    assert _labelled(enc) == answer == enc.input_ids[-len(answer) :]  # whole answer, at the end
    # The prompt is the tail of the untruncated prompt (the assistant header, the end of the user turn).
    prompt = enc.input_ids[: -len(answer)]
    full_prompt = full.input_ids[: full.labels.index(answer[0])]
    assert prompt == full_prompt[-len(prompt) :]
    assert tok.decode(prompt).endswith("<|im_start|>assistant\n")
    # Nothing is dropped, however short the limit: every row keeps answer tokens.
    rows = [messages, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]]
    encoded, truncated = encode_rows(tok, rows, max_length=4)
    assert len(encoded) == 2 and truncated == 2 and all(e.n_target > 0 for e in encoded)
    assert all(len(e.input_ids) <= 4 for e in encoded)


def test_long_answer_is_cut_to_its_cap_and_the_prompt_keeps_a_quarter(tok):
    messages = [{"role": "user", "content": "question " * 40}, {"role": "assistant", "content": "word " * 80}]
    enc = encode_chat(tok, messages, max_length=40)
    assert len(enc.input_ids) == 40
    assert enc.labels[:10] == [IGNORE_INDEX] * 10 and enc.n_target == 30  # prompt room: 40 // 4
    answer = tok("word " * 80, add_special_tokens=False)["input_ids"]
    assert _labelled(enc) == answer[:30]


def test_truncated_multi_turn_keeps_earlier_labels_aligned(tok):
    messages = [
        {"role": "user", "content": "Say yes."},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "Now say no. " + "please " * 30},
        {"role": "assistant", "content": "no"},
    ]
    full = encode_chat(tok, messages)
    tail = full.input_ids.index(tok.eos_token_id, len(full.input_ids) - 4)  # last answer's end-of-turn
    for max_length in (12, len(full.input_ids) - 1):
        enc = encode_chat(tok, messages, max_length=max_length)
        n = len(enc.input_ids)
        # Ids and labels are one window of the untruncated row, ending at the last answer's end-of-turn.
        assert enc.input_ids == full.input_ids[tail + 1 - n : tail + 1]
        assert enc.labels == full.labels[tail + 1 - n : tail + 1]
        assert tok.decode(_labelled(enc)).endswith("no<|im_end|>")


def test_trainer_and_scorer_cut_an_over_long_row_the_same_way(tok):
    """The trainer's labelled tokens are the scorer's completion tokens (+ the end-of-turn token it
    does not score), with the same prompt tail, for an answer under its cap and one over it."""
    for answer, max_length in (("Paris is the capital.", 24), ("Paris is the capital. " * 20, 48)):
        instruction, context = "Where is it? " * 30, "Some passage. " * 10
        enc = encode_chat(tok, to_messages(instruction, context, answer), max_length=max_length)
        req = LossRequest([{"role": "user", "content": user_content(instruction, context)}], answer)
        scored = encode(tok, req, max_length=max_length)
        assert enc.truncated and scored.length == len(enc.input_ids) == max_length
        labelled = _labelled(enc)
        if labelled[-1] == tok.eos_token_id:  # answer whole: the trainer also learns to stop
            labelled = labelled[:-1]
        assert labelled == scored.completion_ids
        prompt = enc.input_ids[: len(enc.input_ids) - enc.n_target]
        assert scored.prompt_ids[-len(prompt) :] == prompt


def test_add_indicator_places_it_at_end_of_last_user_message():
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "Q?\n\nA passage."}]
    out = add_indicator(msgs)
    assert out[1]["content"] == "Q?\n\nA passage. " + INDICATOR
    assert msgs[1]["content"] == "Q?\n\nA passage."  # input untouched
    assert add_indicator(out) == out  # never twice
    assert add_indicator([{"role": "user", "content": "Q? no passage"}]) == [
        {"role": "user", "content": "Q? no passage"}
    ]
    assert add_indicator([{"role": "user", "content": "Q?"}], has_context=True)[0]["content"].endswith(
        " [IND]"
    )


def test_indicator_token_added_embeddings_resized_and_placed(tiny, tok):
    model = tiny.model(tok)
    before = len(tok)
    token_id = ensure_indicator_token(tok, model)
    assert len(tok) == before + 1 and token_id == before
    assert model.get_input_embeddings().weight.shape[0] == before + 1
    assert ensure_indicator_token(tok, model) == token_id and len(tok) == before + 1  # idempotent
    table = to_table(
        [
            make_example("Who?", "Ann", context="Ann wrote it.", meta={"ctx_dependent": True}),
            make_example("Who?", "Bob", context="Bob wrote it.", meta={"ctx_dependent": False}),
        ]
    )
    tagged, untagged = chat_rows(table, conditional_indicator=True)
    assert tagged[-2]["content"] == "Who?\n\nAnn wrote it. [IND]"
    assert INDICATOR not in untagged[-2]["content"]
    ids = encode_chat(tok, tagged).input_ids
    assert ids.count(token_id) == 1
    # [IND] is the last token of the user turn: right before that turn's <|im_end|>.
    assert ids[ids.index(token_id) + 1] == tok.eos_token_id
    assert token_id not in encode_chat(tok, untagged).input_ids
    assert all(INDICATOR not in m["content"] for m in chat_rows(table, conditional_indicator=False)[0])


def test_load_examples_formats(tmp_path):
    table = to_table([make_example("a", "b"), make_example("c", "d")]).with_columns(
        pl.Series("keep", [True, False])
    )
    table.write_parquet(tmp_path / "sel.parquet")
    assert load_examples(tmp_path / "sel.parquet")["instruction"].to_list() == ["a"]
    shards = tmp_path / "shards"
    shards.mkdir()
    table.head(1).write_parquet(shards / "part-00000.parquet")
    table.tail(1).with_columns(pl.lit(True).alias("keep")).write_parquet(shards / "part-00001.parquet")
    assert load_examples(shards)["instruction"].to_list() == ["a", "c"]
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"context": "ctx", "question": "q?", "answer": "x"}) + "\n")
    rows = load_examples(qa)
    assert rows["response"].to_list() == ["x"] and json.loads(rows["meta"][0])["ctx_dependent"] is True
    chat = tmp_path / "chat.jsonl"
    chat.write_text(
        json.dumps({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "v"}]})
        + "\n"
    )
    assert chat_rows(load_examples(chat))[0][-1]["content"] == "v"
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown file type"):
        load_examples(tmp_path / "x.csv")


def test_load_examples_keeps_bad_lines_as_rejects(tmp_path, caplog):
    path = tmp_path / "qa.jsonl"
    good = {"context": "ctx", "question": "q?", "answer": "x"}
    path.write_text(
        json.dumps(good) + "\n" + '{"question": "broken' + "\n" + json.dumps({"question": "no answer"}) + "\n"
    )
    with caplog.at_level("WARNING"):
        rows = load_examples(path, rejects_path=tmp_path / "rejects" / "rejects-00000.jsonl")
    assert rows["response"].to_list() == ["x"]
    assert "2 bad row(s)" in caplog.text
    lines = {r["line"]: r for r in read_rejects(tmp_path / "rejects")}
    assert lines[2]["reason"].startswith("malformed JSON line") and lines[2]["file"] == path.name  # relative, never absolute (issue 23)
    assert lines[3]["field"] == "answer"
    table, rejects = read_rows(path)
    assert table.height == 1 and len(rejects) == 2


def test_load_examples_chat_rows_keep_system_and_earlier_turns(tmp_path):
    conv = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say yes."},
        {"role": "assistant", "content": "yes"},
        {"role": "user", "content": "Say no."},
        {"role": "assistant", "content": "no"},
    ]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": conv, "ctx_dependent": True}) + "\n")
    (row,) = load_examples(path)
    assert row["messages"] == conv
    assert chat_rows([row], conditional_indicator=True)[0][-2]["content"] == "Say no. [IND]"


def test_load_examples_reads_an_export_as_example_rows(tmp_path):
    table = to_table([make_example("Q?", "A.", context="P."), make_example("R?", "B.")]).with_columns(
        pl.Series("keep", [True, False]), pl.Series("ctx_dependent", [True, None])
    )
    paths = export_dataset(table, tmp_path / "dataset", card_info={})
    rows = load_examples(paths["parquet"])  # rows carry a derived `messages` column too
    assert rows["context"].to_list() == ["P."] and rows["id"].to_list() == [table["id"][0]]
    assert chat_rows(rows, conditional_indicator=True)[0][-2]["content"] == "Q?\n\nP. [IND]"

"""Fine-tuning data: assistant-only labels at exact positions, the [IND] indicator, selection loading."""

import json

import polars as pl
import pytest

from pipelines.finetune.data import (
    IGNORE_INDEX,
    INDICATOR,
    ChatCollator,
    add_indicator,
    chat_rows,
    encode_chat,
    ensure_indicator_token,
    load_examples,
)
from pipelines.llm.tiny import tiny_model, tiny_tokenizer
from pipelines.schema import make_example, to_table


@pytest.fixture
def tok():
    return tiny_tokenizer()


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


def test_truncation_and_collator_padding(tok):
    messages = [{"role": "user", "content": "hi " * 50}, {"role": "assistant", "content": "ok"}]
    assert encode_chat(tok, messages, max_length=10).n_target == 0  # answer cut away
    a = encode_chat(tok, [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}])
    b = encode_chat(tok, messages)
    batch = ChatCollator(tok.pad_token_id)([vars(a), vars(b)])
    n = len(a.input_ids)
    assert batch["input_ids"].shape == (2, len(b.input_ids))
    assert batch["attention_mask"][0, :n].all() and not batch["attention_mask"][0, n:].any()
    assert (batch["labels"][0, n:] == IGNORE_INDEX).all()


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


def test_indicator_token_added_embeddings_resized_and_placed(tok):
    model = tiny_model(tok)
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
    with pytest.raises(ValueError, match="cannot read"):
        load_examples(tmp_path / "x.csv")

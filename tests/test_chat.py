"""Conversations through the published chat templates of Gemma 3, Phi-4, Phi-4-mini, Qwen2.5 and QwQ, on tiny
byte-level tokenizers that carry each model's special tokens; and the chat record shapes."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from distill_studio.engine.chat import ChatFormat, chat_record
from distill_studio.engine.errors import DataError
from distill_studio.engine.records import check_record, describe
from distill_studio.engine.train.data import IGNORE_INDEX, chat_format, conversation_ids, encode, prompt_ids, \
    read_records

TEMPLATES = Path(__file__).parent / "data" / "chat_templates"

# name -> (bos, eos, special tokens, non-special added tokens)
MODELS = {
    "gemma-3": ("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"], []),
    "phi-4": (None, "<|im_end|>", ["<|im_start|>", "<|im_sep|>", "<|endoftext|>"], []),
    "phi-4-mini": (None, "<|endoftext|>", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], []),
    "qwen2.5": (None, "<|im_end|>", ["<|im_start|>", "<|endoftext|>"], []),
    "qwq": (None, "<|im_end|>", ["<|im_start|>", "<|endoftext|>"], ["<think>", "</think>"]),
}

TWO_TURNS = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]

# Written out by hand from each model card's documented format.
EXPECTED = {
    "gemma-3": [
        ("<bos><start_of_turn>user\nBe terse.\n\nHi<end_of_turn>\n<start_of_turn>model\n", False),
        ("Hello!<end_of_turn>", True),
        ("\n<start_of_turn>user\n2+2?<end_of_turn>\n<start_of_turn>model\n", False),
        ("4<end_of_turn>", True),
        ("\n", False),
    ],
    "phi-4": [
        ("<|im_start|>system<|im_sep|>Be terse.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>"
         "<|im_start|>assistant<|im_sep|>", False),
        ("Hello!<|im_end|>", True),
        ("<|im_start|>user<|im_sep|>2+2?<|im_end|><|im_start|>assistant<|im_sep|>", False),
        ("4<|im_end|>", True),
    ],
    "phi-4-mini": [
        ("<|system|>Be terse.<|end|><|user|>Hi<|end|><|assistant|>", False),
        ("Hello!<|end|>", True),
        ("<|user|>2+2?<|end|><|assistant|>", False),
        ("4<|end|><|endoftext|>", True),  # the template ends the conversation with EOS: it is trained
    ],
    "qwen2.5": [
        ("<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
        ("Hello!<|im_end|>", True),
        ("\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n", False),
        ("4<|im_end|>", True),
        ("\n", False),
    ],
}
EXPECTED["qwq"] = EXPECTED["qwen2.5"]

END_OF_TURN = {"gemma-3": "<end_of_turn>", "phi-4": "<|im_end|>", "phi-4-mini": "<|end|>", "qwen2.5": "<|im_end|>",
               "qwq": "<|im_end|>"}

GENERATION_PROMPT = {
    "gemma-3": "<bos><start_of_turn>user\nBe terse.\n\nHi<end_of_turn>\n<start_of_turn>model\n",
    "phi-4": "<|im_start|>system<|im_sep|>Be terse.<|im_end|><|im_start|>user<|im_sep|>Hi<|im_end|>"
             "<|im_start|>assistant<|im_sep|>",
    "phi-4-mini": "<|system|>Be terse.<|end|><|user|>Hi<|end|><|assistant|>",
    "qwen2.5": "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "qwq": "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n",
}


def tiny_tokenizer(name: str):
    """Bytes as tokens (no merges) plus the model's special tokens, with its published chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bos, eos, special, plain = MODELS[name]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=eos)
    fast.add_tokens([AddedToken(t, special=True) for t in special])
    fast.add_tokens(plain)
    fast.chat_template = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    return fast


@pytest.mark.parametrize("name", sorted(MODELS))
def test_published_template_renders_and_trains_only_the_assistant_turns(name):
    tok = tiny_tokenizer(name)
    chat = chat_format(tok, "student.model")
    pieces = chat.segments(TWO_TURNS)
    assert pieces == EXPECTED[name]
    full = "".join(t for t, _ in pieces)
    assert full == tok.apply_chat_template(TWO_TURNS, tokenize=False)  # the renderer is transformers' own
    ids, labels = conversation_ids(chat, TWO_TURNS, tok)
    assert tok.decode(ids) == full
    trained = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert tok.decode(trained) == "".join(t for t, on in pieces if on)
    assert all(label in (IGNORE_INDEX, i) for i, label in zip(ids, labels))
    # the turn ends on one special token id (no EOS appended where the template ends the turn)
    end = tok.convert_tokens_to_ids(END_OF_TURN[name])
    assert trained.count(end) == 2 and trained.count(tok.eos_token_id) == (1 if name == "phi-4-mini" else
                                                                           2 if END_OF_TURN[name] == tok.eos_token
                                                                           else 0)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_generation_prompt_is_the_conversation_up_to_the_last_answer(name):
    tok = tiny_tokenizer(name)
    chat = chat_format(tok, "teacher.model")
    assert chat.prompt(TWO_TURNS[:3]) == GENERATION_PROMPT[name]
    ids = prompt_ids({"messages": TWO_TURNS[:3]}, tok, chat)
    assert tok.decode(ids) == GENERATION_PROMPT[name]
    assert chat.generation_prefix(TWO_TURNS[:3]) == ("<think>\n" if name == "qwq" else "")
    stops = chat.stop_texts()
    assert stops and all(t in MODELS[name][2] + [MODELS[name][1]] for t in stops)


def test_gemma_has_no_system_role_and_folds_it_into_the_first_user_turn():
    tok = tiny_tokenizer("gemma-3")
    pieces = chat_format(tok, "x").segments(TWO_TURNS)
    assert "system" not in pieces[0][0] and pieces[0][0].count("<start_of_turn>") == 2
    assert "Be terse.\n\nHi" in pieces[0][0]


def test_gemma_trims_the_answer_as_its_template_does():
    tok = tiny_tokenizer("gemma-3")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  Hello!\n"}]
    pieces = chat_format(tok, "x").segments(msgs)
    assert pieces[1] == ("Hello!<end_of_turn>", True)
    assert "".join(t for t, _ in pieces) == tok.apply_chat_template(msgs, tokenize=False)


THINKING = [
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "<think>\nsay hello\n</think>\n\nHello!"},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "<think>\nadd\n</think>\n\n4"},
]


def test_qwq_reasoning_kept_where_its_template_keeps_it_and_stripped_on_request():
    tok = tiny_tokenizer("qwq")
    chat = chat_format(tok, "student.model")
    kept = [t for t, on in chat.segments(THINKING, "keep") if on]
    # QwQ's template drops the trace of every turn but the last; the last keeps it
    assert kept == ["Hello!<|im_end|>", "<think>\nadd\n</think>\n\n4<|im_end|>"]
    assert "".join(t for t, _ in chat.segments(THINKING, "keep")) == tok.apply_chat_template(THINKING, tokenize=False)
    stripped = [t for t, on in chat.segments(THINKING, "strip") if on]
    assert stripped == ["Hello!<|im_end|>", "4<|im_end|>"]
    ids, labels = conversation_ids(chat, THINKING, tok, "keep")
    assert tok.convert_tokens_to_ids("<think>") in [label for label in labels if label != IGNORE_INDEX]
    # Qwen2.5's template keeps every trace: so does "keep"
    qwen = chat_format(tiny_tokenizer("qwen2.5"), "x")
    assert [t for t, on in qwen.segments(THINKING, "keep") if on][0].startswith("<think>\nsay hello")


def test_reasoning_content_field_becomes_a_trace():
    chat = chat_format(tiny_tokenizer("qwen2.5"), "x")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "reasoning_content": "greet"}]
    assert [t for t, on in chat.segments(msgs, "keep") if on] == ["<think>\ngreet\n</think>\n\nHello!<|im_end|>"]
    assert [t for t, on in chat.segments(msgs, "strip") if on] == ["Hello!<|im_end|>"]


def test_a_template_that_does_not_end_the_turn_gets_eos():
    tok = tiny_tokenizer("qwen2.5")
    chat = ChatFormat(template="{% for m in messages %}{{ m['content'] }}{% endfor %}", special={},
                      special_texts=("<|im_end|>",), eos_token="<|im_end|>")
    pieces = chat.segments([{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}])
    assert pieces == [("2+2=", False), ("4<|im_end|>", True)]
    ids, labels = conversation_ids(chat, [{"role": "user", "content": "2+2="}, {"role": "assistant", "content": "4"}],
                                   tok)
    assert ids[-1] == tok.eos_token_id and labels[-1] == tok.eos_token_id and labels.count(IGNORE_INDEX) == 4


def test_a_template_that_refuses_a_conversation_says_so():
    tok = tiny_tokenizer("gemma-3")
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(DataError, match="student.model: its chat template refuses.*alternate"):
        chat_format(tok, "student.model").segments(bad)


# ---- record shapes ----------------------------------------------------------------------------------------------
def test_record_shapes_are_read_as_conversations(tmp_path):
    msgs = [{"role": "user", "content": "Hi"}]
    answer = {"role": "assistant", "content": "Hello!"}
    lines = [
        {"messages": msgs + [answer], "answer": "x"},
        {"messages": [{"role": "developer", "content": [{"type": "text", "text": "Be"}, {"type": "text",
                                                                                         "text": " terse."}]},
                      *msgs, answer]},
        {"input_messages": msgs, "choices": [{"index": 0, "message": answer}], "object": "chat.completion"},
        {"request": {"messages": msgs}, "response": {"choices": [{"message": answer}]}},
        {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": msgs}},
        {"custom_id": "r1", "response": {"status_code": 200, "body": {"choices": [{"message": answer}]}}},
        {"custom_id": "r2", "body": {"messages": msgs}},
    ]
    f = tmp_path / "data.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines))
    rows = read_records(f)
    assert len(rows) == 6
    assert rows[0] == {"messages": msgs + [answer], "answer": "x"}
    assert rows[1]["messages"][0] == {"role": "system", "content": "Be terse."}
    assert all(r["messages"] == msgs + [answer] for r in rows[2:5])
    assert rows[5]["messages"] == msgs  # a batch request without its answer: a prompt for generation
    assert describe(rows) == "6 conversations (messages)"


def test_batch_answer_without_request_names_its_line(tmp_path):
    f = tmp_path / "out.jsonl"
    f.write_text(json.dumps({"custom_id": "z", "response": {"body": {"choices": [{"message": {
        "role": "assistant", "content": "4"}}]}}}) + "\n")
    with pytest.raises(DataError, match=r"out.jsonl:1.*custom_id 'z'.*batch input file"):
        read_records(f)


@pytest.mark.parametrize("row, match", [
    ({"messages": []}, r"f.jsonl:1: messages: expected a non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, r"f.jsonl:1: messages\[0\].role: 'bot' is not a role"),
    ({"messages": [{"role": "user"}]}, r"f.jsonl:1: messages\[0\].content: missing"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     r"messages\[0\].content\[0\]: a content part of type 'image_url'"),
    ({"prompt": 3, "response": "x"}, r"f.jsonl:1: `prompt` is int, not a string"),
])
def test_malformed_lines_name_file_line_and_field(tmp_path, row, match):
    f = tmp_path / "f.jsonl"
    f.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=match):
        read_records(f)


def test_explicit_format_refuses_other_shapes(tmp_path):
    f = tmp_path / "f.jsonl"
    f.write_text(json.dumps({"prompt": "a", "response": "b"}) + "\n")
    with pytest.raises(DataError, match=r'f.jsonl:1: data.format is "messages" but this record is prompt-response'):
        read_records(f, fmt="messages")
    assert read_records(f, fmt="prompt-response")[0]["response"] == "b"
    assert check_record({"messages": [{"role": "user", "content": "q"}]}, "w", "messages")["messages"]


def test_arrow_dataset_folder_is_read(tmp_path):
    pa = pytest.importorskip("pyarrow")
    table = pa.table({"messages": [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]]})
    folder = tmp_path / "ds"
    folder.mkdir()
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
    (folder / "dataset_info.json").write_text("{}")
    rows = read_records(folder)
    assert rows == [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}]


def test_encode_conversations_needs_a_template_and_masks_everything_else():
    tok = tiny_tokenizer("qwen2.5")
    chat = chat_format(tok, "student.model")
    enc = encode([{"messages": TWO_TURNS}, {"prompt": "a", "response": "b"}], tok, 512, chat=chat)
    first = enc.examples[0]
    assert first.trained_tokens == len(tok("Hello!<|im_end|>4<|im_end|>", add_special_tokens=False)["input_ids"])
    with pytest.raises(DataError, match="record 1 is a conversation.*no.*chat template|neither model"):
        encode([{"messages": TWO_TURNS}], tok, 512, chat=None)
    assert chat_record({"prompt": "a"}, "w") is None


def test_the_app_scan_counts_conversations_and_assistant_tokens_as_training_does(tmp_path):
    import distill_studio.engine.plan  # noqa: F401  (pydantic before Qt's shiboken, as the app imports them)
    from distill_studio.gui.wizard.scan import scan_data

    tok = tiny_tokenizer("gemma-3")
    folder = tmp_path / "teacher"
    tok.save_pretrained(folder)
    rows = [{"messages": TWO_TURNS}, {"messages": THINKING}, {"messages": TWO_TURNS[:2]}]
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gen = scan_data(str(data), str(folder / "tokenizer.json"))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            result = stop.value
            break
    from transformers import AutoTokenizer

    loaded = AutoTokenizer.from_pretrained(folder)
    chat = chat_format(loaded, "teacher.model")
    pairs = [conversation_ids(chat, r["messages"], loaded) for r in rows[:2]]
    prompt = len(prompt_ids(rows[2], loaded, chat))
    assert result.conversations == result.examples == 3 and result.counted
    assert result.tokens == sum(len(ids) for ids, _ in pairs) + prompt
    assert result.assistant_tokens == sum(sum(1 for x in labels if x != IGNORE_INDEX) for _, labels in pairs)
    assert "3 conversations" in result.summary() and "in assistant turns" in result.summary()


def test_tool_calls_are_trained_with_their_turn_and_the_tools_reach_the_template():
    tok = tiny_tokenizer("qwen2.5")
    chat = chat_format(tok, "student.model")
    tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
    call = {"type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 2}}}
    msgs = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "4"}, {"role": "assistant", "content": "4"}]
    rows = read_records_from([{"messages": msgs, "tools": tools}])
    pieces = chat.segments(rows[0]["messages"], tools=rows[0]["tools"])
    expected = tok.apply_chat_template(msgs, tools=tools, tokenize=False)
    assert "".join(t for t, _ in pieces) == expected and "# Tools" in expected
    trained = [t for t, on in pieces if on]
    assert trained == ['<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 2}}\n</tool_call><|im_end|>',
                       "4<|im_end|>"]


# A Qwen3-style template (written for this test): the trace goes into the template's own <think> block, and a turn
# without one gets an empty block.
QWEN3_LIKE = (
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}"
    "{%- set c = m.content %}{%- set r = '' %}"
    "{%- if '</think>' in c %}{%- set r = c.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{%- set c = c.split('</think>')[-1].lstrip('\\n') %}{%- endif %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + r + '\\n</think>\\n\\n' + c + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}")


def test_a_template_that_writes_its_own_reasoning_block_gets_the_trace_once():
    tok = tiny_tokenizer("qwq")
    tok.chat_template = QWEN3_LIKE
    chat = chat_format(tok, "student.model")
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<think>\nreason\n</think>\n\nHello"}]
    keep = chat.segments(msgs, "keep")
    assert "".join(t for t, _ in keep) == tok.apply_chat_template(msgs, tokenize=False)
    assert [t for t, on in keep if on] == ["<think>\nreason\n</think>\n\nHello<|im_end|>"]
    strip = chat.segments(msgs, "strip")
    assert [t for t, on in strip if on] == ["Hello<|im_end|>"]
    assert "<think>\n\n</think>\n\n" in strip[0][0]  # the template's empty block: prompt side, not trained


def read_records_from(rows, tmp=None):
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "x.jsonl"
        f.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return read_records(f)


def test_a_sentencepiece_style_tokenizer_is_labelled_on_the_whole_text():
    """Tokenised piece by piece, a Metaspace tokenizer would put a word marker at each piece's start: ids the model
    never reads. The whole text is tokenised instead and its ids labelled by the characters they cover."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set("▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!?+=.\n<>|_"))
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(chars)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")
    fast.add_tokens([AddedToken(t, special=True) for t in ("</s>", "<|user|>", "<|assistant|>", "<|end|>")])
    fast.chat_template = "{% for m in messages %}{{ '<|' + m.role + '|>\n' + m.content + '<|end|>' }}{% endfor %}"
    chat = chat_format(fast, "student.model")
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    ids, labels = conversation_ids(chat, msgs, fast)
    whole = fast(fast.apply_chat_template(msgs, tokenize=False), add_special_tokens=False)["input_ids"]
    assert ids == whole  # the ids the model reads at inference, not the pieces' own
    trained = [i for i, label in zip(ids, labels) if label != IGNORE_INDEX]
    assert fast.convert_ids_to_tokens(trained) == ["H", "e", "l", "l", "o", "<|end|>"]


def test_a_saved_dataset_reads_its_train_split_and_skips_caches(tmp_path):
    pa = pytest.importorskip("pyarrow")

    def write(folder, rows):
        folder.mkdir(parents=True)
        table = pa.table({"messages": rows})
        with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink:
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(table)
        (folder / "state.json").write_text(json.dumps({"_data_files": [{"filename": "data-00000-of-00001.arrow"}]}))
        (folder / "cache-123.arrow").write_bytes((folder / "data-00000-of-00001.arrow").read_bytes())

    conv = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    write(tmp_path / "ds" / "train", [conv])
    write(tmp_path / "ds" / "test", [conv, conv])
    (tmp_path / "ds" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    assert len(read_records(tmp_path / "ds")) == 1  # the train split only, once (its map() cache skipped)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "dataset_dict.json").write_text(json.dumps({"splits": ["validation"]}))
    with pytest.raises(DataError, match="the splits validation"):
        read_records(tmp_path / "other")


def test_failed_batch_requests_stay_prompts_and_are_left_out_of_training(tmp_path):
    msgs = [{"role": "user", "content": "Hi"}]
    lines = [{"custom_id": "a", "body": {"messages": msgs}}, {"custom_id": "b", "body": {"messages": msgs}},
             {"custom_id": "a", "response": {"status_code": 200, "body": {"choices": [{"message": {
                 "role": "assistant", "content": "Hello"}}]}}},
             {"custom_id": "b", "response": None, "error": {"code": "rate_limit", "message": "later"}}]
    rows = read_records_from(lines)
    assert [len(r["messages"]) for r in rows] == [2, 1]
    tok = tiny_tokenizer("qwen2.5")
    enc = encode(rows, tok, 512, chat=chat_format(tok, "s"))
    assert len(enc.examples) == 1 and enc.dropped == 1


def test_sharegpt_records_and_untrained_turns():
    rows = read_records_from([
        {"conversations": [{"from": "system", "value": "Be terse."}, {"from": "human", "value": "Hi"},
                           {"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "2+2?"},
                           {"from": "gpt", "value": "4"}]},
        {"messages": [*TWO_TURNS[:2], {**TWO_TURNS[2], "weight": 0}, *TWO_TURNS[3:]]},
    ])
    assert rows[0]["messages"] == TWO_TURNS
    chat = chat_format(tiny_tokenizer("qwen2.5"), "s")
    assert [t for t, on in chat.segments(rows[1]["messages"]) if on] == ["4<|im_end|>"]  # weight 0: not trained
    assert "".join(t for t, _ in chat.segments(rows[1]["messages"])) == "".join(t for t, _ in EXPECTED["qwen2.5"])
    with pytest.raises(DataError, match=r"messages\[2\].weight: 0.5; allowed: 0"):
        read_records_from([{"messages": [*TWO_TURNS[:2], {**TWO_TURNS[2], "weight": 0.5}]}])


def test_the_scan_uses_the_students_template_and_the_reasoning_choice(tmp_path):
    import distill_studio.engine.plan  # noqa: F401  (pydantic before Qt's shiboken, as the app imports them)
    from distill_studio.gui.wizard.scan import scan_data

    teacher, student = tiny_tokenizer("qwen2.5"), tiny_tokenizer("qwq")
    teacher.save_pretrained(tmp_path / "teacher")
    student.save_pretrained(tmp_path / "student")
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": THINKING}) + "\n")

    def scan(**kw):
        gen = scan_data(str(data), str(tmp_path / "teacher" / "tokenizer.json"), **kw)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    keep = scan(student_tokenizer_file=str(tmp_path / "student" / "tokenizer.json"))
    strip = scan(student_tokenizer_file=str(tmp_path / "student" / "tokenizer.json"), reasoning="strip")
    assert "student's chat template" in keep.note
    chat = chat_format(student, "student.model")
    for result, mode in ((keep, "keep"), (strip, "strip")):
        trained = sum(len(teacher(t, add_special_tokens=False)["input_ids"]) for t, on in chat.segments(THINKING, mode)
                      if on)
        assert result.assistant_tokens == trained
    assert strip.assistant_tokens < keep.assistant_tokens
    assert "teacher's chat template" in scan().note  # no student folder: the teacher's

"""The tokenizer against llama.cpp's reference tokenizations, and the s1 chat format against the
exact string of docs/s1.md §4.1 and the Qwen2.5 chat template itself."""
import os

import pytest
from conftest import ROOT, TOKENIZER_DIR

from machinery import chat

FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.fixture(scope="module")
def tokenizer():
    return chat.load_tokenizer(TOKENIZER_DIR)


def test_tokenizer_reproduces_llamacpp_reference_tokenizations(tokenizer):
    # Format of llama.cpp's models/ggml-vocab-*.gguf.inp/.out: cases separated by a marker line,
    # and one line of expected ids per case.
    with open(os.path.join(FIXTURES, "llamacpp-vocab-qwen2-test.inp"), encoding="utf-8") as f:
        cases = f.read().split("\n__ggml_vocab_test__\n")[:-1]
    with open(os.path.join(FIXTURES, "llamacpp-vocab-qwen2-test.out")) as f:
        expected = [[int(t) for t in line.split()] for line in f.read().split("\n")[:-1]]
    assert len(cases) == len(expected) == 46
    for text, ids in zip(cases, expected):
        assert tokenizer.encode(text, add_special_tokens=False) == ids, repr(text)


def test_special_token_ids(tokenizer):
    ids = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>", "<|endoftext|>"])
    assert ids == [151644, 151645, 151643]


QUESTION = "How many r in raspberry?"
THINKING = "  r-a-s-p-b-e-r-r-y: one r, then two more.\nSo 3.  "
EXPECTED = ("<|im_start|>system\n"
            "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nHow many r in raspberry?<|im_end|>\n"
            "<|im_start|>assistant\n<|im_start|>think\n"
            "r-a-s-p-b-e-r-r-y: one r, then two more.\nSo 3.\n"
            "<|im_start|>answer\nAnswer: 3<|im_end|>\n")


def test_rendered_example_is_the_exact_s1_string(tokenizer):
    text = chat.prompt_text(QUESTION) + chat.completion_text(THINKING, "3")
    assert text == EXPECTED
    # s1 built the same string with the Qwen2.5 chat template (s1 tokenization.py); so does ours.
    content = "<|im_start|>think\n" + THINKING.strip() + "\n<|im_start|>answer\nAnswer: 3"
    templated = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION},
                                               {"role": "assistant", "content": content}],
                                              tokenize=False)
    assert text == templated
    # An attempt that already says "Answer:" is not prefixed twice.
    assert chat.completion_text("t", "The Answer: 3").endswith("answer\nThe Answer: 3<|im_end|>\n")


def test_loss_mask_starts_at_the_think_token(tokenizer):
    ids, mask = chat.render(tokenizer, QUESTION, THINKING, "3")
    assert ids == tokenizer.encode(EXPECTED, add_special_tokens=False)
    first = mask.index(1)
    assert ids[first] == 151644 and tokenizer.decode(ids[first:first + 2]) == "<|im_start|>think"
    assert tokenizer.decode(ids[:first]).endswith("<|im_start|>assistant\n")
    assert not any(mask[:first]) and all(mask[first:])
    assert tokenizer.decode(ids[first:]) == EXPECTED[EXPECTED.index("<|im_start|>think"):]


def test_generation_prompt_ends_in_think_without_newline(tokenizer):
    ids, mask = chat.render(tokenizer, QUESTION)
    assert tokenizer.decode(ids).endswith("<|im_start|>assistant\n<|im_start|>think")
    assert not any(mask)

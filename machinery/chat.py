"""The s1 chat format, in one place (train.py, sample.py, eval.py and curate.py all use it).

One training example, as s1 renders it with the Qwen2.5 chat template (docs/s1.md §4.1):

    <|im_start|>system\\n
    You are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n
    <|im_start|>user\\n{question}<|im_end|>\\n
    <|im_start|>assistant\\n<|im_start|>think\\n{thinking}\\n
    <|im_start|>answer\\nAnswer: {answer}<|im_end|>\\n

(line breaks added for display: the text breaks only where it says \\n). <|im_start|> and
<|im_end|> are single special tokens; "think" and "answer" are ordinary text. There is no
end-of-thinking tag: thinking ends when the model emits <|im_start|>, which begins
"<|im_start|>answer". The loss covers everything after "<|im_start|>assistant\\n": the thinking,
the answer and the closing <|im_end|>\\n.
"""
import os

SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
THINK = IM_START + "think"    # opens the thinking phase
ANSWER = IM_START + "answer"  # opens the answer phase (the model's natural end of thinking)
# What budget forcing appends at the cap: s1's harness's `thinking_end_max`
# (eval/lm-evaluation-harness/lm_eval/models/vllm_causallms.py l. 254), after a "\n" only when the
# thinking does not already end in one (l. 404-409), as the model saw in training
# ("{thinking}\n<|im_start|>answer").
FINAL_ANSWER = ANSWER + "\nFinal Answer:"
# Not a stop in s1's code: vLLM 0.6 merges the *evaluated model's* generation_config.json EOS ids
# into its stop set (SamplingParams.update_from_generation_config). Qwen2.5-Instruct's config lists
# <|im_end|> and this one; that s1-32B's and s1.1-32B's do too is unverified (no copy reachable
# here).
EOS = "<|endoftext|>"


def prompt_text(question, system=SYSTEM):
    """The chat-templated prompt, up to and including "<|im_start|>assistant\\n"."""
    return (f"{IM_START}system\n{system}{IM_END}\n"
            f"{IM_START}user\n{question}{IM_END}\n"
            f"{IM_START}assistant\n")


def completion_text(thinking=None, answer=None):
    """The assistant turn. With neither part it is the generation prompt, "<|im_start|>think", with
    no newline: the model writes it, as in s1's evaluation harness (docs/s1.md §5.1)."""
    if thinking is None and answer is None:
        return THINK
    text = ""
    if thinking is not None:
        text += f"{THINK}\n{thinking.strip()}\n"
    if answer is not None:
        answer = answer if "Answer:" in answer else "Answer: " + answer  # s1 tokenization.py
        text += f"{ANSWER}\n{answer.strip()}{IM_END}\n"
    return text


def render(tokenizer, question, thinking=None, answer=None):
    """Token ids and a loss mask (1 = this token is a training target) for one example."""
    prompt_ids = tokenizer.encode(prompt_text(question), add_special_tokens=False)
    completion_ids = tokenizer.encode(completion_text(thinking, answer), add_special_tokens=False)
    # Training marks a loss only where there is something to learn; a bare generation prompt has
    # none.
    target = 1 if thinking is not None or answer is not None else 0
    return prompt_ids + completion_ids, [0] * len(prompt_ids) + [target] * len(completion_ids)


def build_byte_tokenizer(out_dir, words=()):
    """A byte-level tokenizer (256 byte tokens) plus Qwen's special tokens, saved in transformers
    format: tiny models trained from scratch (tests, the demo) need ~260 embeddings, not Qwen's
    151,936. words: whole strings that become one token each wherever they occur, as a trained BPE
    makes its frequent words (the demo's: the chat template's words and its question's,
    mini.WORDS). The chat format renders the same strings; only the ids differ."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    backend = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(sorted(alphabet))}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=IM_END,
                                        pad_token="<|endoftext|>",
                                        additional_special_tokens=[IM_START])
    tokenizer.add_tokens([AddedToken(w, normalized=False, special=False) for w in words])
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def load_tokenizer(name_or_path):
    """A Hugging Face tokenizer from a local directory or a hub name (HF_HUB_OFFLINE=1 uses the
    cache), which must know the chat format's tokens."""
    from transformers import AutoTokenizer
    files = ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    if os.path.isdir(name_or_path) and not any(os.path.exists(os.path.join(name_or_path, f))
                                               for f in files):
        raise FileNotFoundError(f"{name_or_path}: no tokenizer files (tokenizer.json, "
                                "tokenizer_config.json); give the tokenizer's directory or hub "
                                "name with --tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    except Exception as e:
        raise FileNotFoundError(f"{name_or_path}: cannot load a tokenizer "
                                f"({type(e).__name__}: {e})") from None
    for token in (IM_START, IM_END):
        if len(tokenizer.encode(token, add_special_tokens=False)) != 1:
            raise FileNotFoundError(f"{name_or_path}: its tokenizer has no {token} token "
                                    "(not a Qwen2.5 chat tokenizer)")
    return tokenizer

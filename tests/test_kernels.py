"""The CUDA attention kernels' call conventions, on a CPU. Pure-torch stand-ins with the kernels'
documented signatures take their place: torch's varlen_attn (torch/nn/attention/varlen.py, torch
2.13), flash-attn's flash_attn_varlen_func and flash_attn_with_kvcache (flash_attn_interface.py,
2.8.3). They check what the real kernels check (int32 cumulative lengths and block tables, block
table with seqused_k, [pages, page, Hkv, D] pools, pages a multiple of 256 tokens, GQA only when
asked) and compute plain softmax attention. The stand-ins are first tested against SDPA, then
model.py and sample.py run through them: a wrong argument order or layout fails here, not on a
rented node. Plus the decode fallback's SDPA calls (no mask: never the math kernel on CUDA) and
the host syncs of a decode step."""
import functools
import types

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_hf_model

import model as M
import sample
from machinery import chat, engine, hf_checkpoint


def attention(q, k, v, causal):
    """One sequence: q (Tq, Hq, D), k and v (Tk, Hkv, D); kv head h // (Hq / Hkv) serves query head
    h; causal is aligned to the bottom right (flash-attn's convention): query i sees keys
    <= i + Tk - Tq."""
    (Tq, Hq, D), Tk = q.shape, k.shape[0]
    k, v = (t.repeat_interleave(Hq // t.shape[1], dim=1) for t in (k, v))
    scores = torch.einsum("qhd,khd->hqk", q.double(), k.double()) / D ** 0.5
    if causal:
        hidden = torch.arange(Tk)[None] > torch.arange(Tq)[:, None] + Tk - Tq
        scores = scores.masked_fill(hidden, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v.double()).to(q.dtype)


def int32_vector(name, t, n=None):
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int32 and t.dim() == 1, (
        f"{name} must be int32, 1-D")
    assert n is None or t.numel() == n, f"{name} must have {n} elements"


def paged_keys(key, value, table, n):
    """The first n keys and values of a sequence through its row of the block table."""
    page = key.shape[1]
    assert key.dim() == 4 and page % 256 == 0, "Paged KV cache block size must be divisible by 256"
    pages = table[:-(-n // page)].long()
    return key[pages].flatten(0, 1)[:n], value[pages].flatten(0, 1)[:n]


def varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, return_aux=None,
                scale=None, window_size=(-1, -1), enable_gqa=False, seqused_k=None,
                block_table=None, num_splits=None):
    """torch.nn.attention.varlen.varlen_attn's signature (torch 2.13), computed plainly."""
    assert return_aux is None and scale is None and num_splits is None
    assert isinstance(max_q, int) and isinstance(max_k, int), (
        "max_q, max_k are ints (a tensor costs a sync)")
    assert cu_seq_q is not None and cu_seq_k is not None, (
        "cumulative_sequence_length_q and _k must be both set")
    B = cu_seq_q.numel() - 1
    int32_vector("cu_seq_q", cu_seq_q), int32_vector("cu_seq_k", cu_seq_k, B + 1)
    Hq, Hkv = query.shape[1], key.shape[2] if block_table is not None else key.shape[1]
    assert query.dim() == 3 and (Hq == Hkv or enable_gqa and Hq % Hkv == 0), (
        "GQA needs enable_gqa=True")
    assert window_size in [(-1, -1), (-1, 0)], (
        "windows other than none and causal are not used here")
    causal = window_size == (-1, 0)  # as torch: a list [-1, 0] would not be causal
    if block_table is not None:
        assert seqused_k is not None, "block_table requires seqused_k"
        assert block_table.dtype == torch.int32 and block_table.dim() == 2 \
            and len(block_table) == B, "block_table must be int32, (batch, pages)"
    if seqused_k is not None:
        int32_vector("seqused_k", seqused_k, B)
    cq, ck = cu_seq_q.tolist(), cu_seq_k.tolist()
    out = []
    for b in range(B):
        n = seqused_k[b].item() if seqused_k is not None else ck[b + 1] - ck[b]
        assert cq[b + 1] - cq[b] <= max_q and n <= max_k
        k, v = (paged_keys(key, value, block_table[b], n) if block_table is not None else
                (key[ck[b]:ck[b] + n], value[ck[b]:ck[b] + n]))
        assert k.dim() == 3, "without a block table, key is (total_k, Hkv, D)"
        out.append(attention(query[cq[b]:cq[b + 1]], k, v, causal))
    return torch.cat(out)


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                           dropout_p=0.0, softmax_scale=None, causal=False, block_table=None,
                           **rest):
    """flash-attn 2.8.3's flash_attn_varlen_func (its positional order), computed plainly."""
    assert dropout_p == 0.0 and softmax_scale is None and block_table is None and not rest
    return varlen_attn(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                       window_size=(-1, 0) if causal else (-1, -1), enable_gqa=True)


def flash_attn_with_kvcache(q, k_cache, v_cache, k=None, v=None, rotary_cos=None, rotary_sin=None,
                            cache_seqlens=None, cache_batch_idx=None, cache_leftpad=None,
                            block_table=None, softmax_scale=None, causal=False, **rest):
    """flash-attn 2.8.3's flash_attn_with_kvcache with a paged cache: q (batch, seqlen, nheads,
    headdim), k_cache (num_blocks, page_block_size, nheads_k, headdim), cache_seqlens int32
    (batch,)."""
    assert k is None and v is None and rotary_cos is None
    assert cache_batch_idx is None and cache_leftpad is None
    assert softmax_scale is None and not rest and q.dim() == 4
    B = len(q)
    int32_vector("cache_seqlens", cache_seqlens, B)
    assert block_table.dtype == torch.int32 and block_table.shape[0] == B
    return torch.stack([attention(q[b], *paged_keys(k_cache, v_cache, block_table[b],
                                                    cache_seqlens[b].item()), causal)
                        for b in range(B)])


# ----------------------------------------------------------------------------------------------
# The stand-ins against SDPA

def test_the_stand_ins_agree_with_sdpa_and_refuse_what_the_kernels_refuse():
    gen = torch.Generator().manual_seed(0)
    Hq, Hkv, D, lengths = 4, 2, 16, [5, 300, 1, 77]
    cu = torch.tensor([0, *lengths]).cumsum(0).to(torch.int32)
    q, k, v = (torch.randn(sum(lengths), h, D, generator=gen) for h in (Hq, Hkv, Hkv))
    sdpa = M.packed_attention(q, k, v, cu, max(lengths))  # on a CPU: SDPA per document
    packed = varlen_attn(q, k, v, cu, cu, max(lengths), max(lengths), window_size=(-1, 0),
                         enable_gqa=True)
    assert (packed - sdpa).abs().max() < 1e-5
    flash = flash_attn_varlen_func(q, k, v, cu, cu, max(lengths), max(lengths), causal=True)
    assert (flash - sdpa).abs().max() < 1e-5

    # paged: each sequence's keys in 256-token pages, shuffled in the pool, vs SDPA on its own keys
    pages = torch.randperm(8, generator=gen)
    k_pool, v_pool = (torch.randn(8, 256, Hkv, D, generator=gen) for _ in range(2))
    table = torch.stack([pages[:4], pages[4:]]).to(torch.int32)
    seqused = torch.tensor([700, 300], dtype=torch.int32)
    q1 = torch.randn(2, Hq, D, generator=gen)
    gathered = lambda pool, b: pool[table[b].long()].flatten(0, 1)[:seqused[b]]
    want = torch.stack([F.scaled_dot_product_attention(q1[b, :, None],
                                                       gathered(k_pool, b).transpose(0, 1),
                                                       gathered(v_pool, b).transpose(0, 1),
                                                       enable_gqa=True)[:, 0]
                        for b in range(2)])
    cu_q = torch.tensor([0, 1, 2], dtype=torch.int32)
    cu_k = torch.tensor([0, 700, 1000], dtype=torch.int32)
    got = varlen_attn(q1, k_pool, v_pool, cu_q, cu_k, 1, 700, enable_gqa=True, seqused_k=seqused,
                      block_table=table)
    assert (got - want).abs().max() < 1e-5
    got = flash_attn_with_kvcache(q1[:, None], k_pool, v_pool, cache_seqlens=seqused,
                                  block_table=table, causal=True)
    assert (got[:, 0] - want).abs().max() < 1e-5

    # what the kernels refuse, the stand-ins refuse
    call = dict(enable_gqa=True, seqused_k=seqused, block_table=table)
    for bad, message in ((dict(call, seqused_k=seqused.long()), "int32"),
                         (dict(call, block_table=table.long()), "block_table"),
                         (dict(call, seqused_k=None), "requires seqused_k"),
                         (dict(call, enable_gqa=False), "GQA")):
        with pytest.raises(AssertionError, match=message):
            varlen_attn(q1, k_pool, v_pool, cu_q, cu_k, 1, 700, **bad)
    with pytest.raises(AssertionError, match="divisible by 256"):
        varlen_attn(q1, k_pool.view(128, 16, Hkv, D), v_pool.view(128, 16, Hkv, D), cu_q, cu_k, 1,
                    700, **call)
    with pytest.raises(AssertionError, match="ints"):
        varlen_attn(q, k, v, cu, cu, torch.tensor(300), 300, window_size=(-1, 0), enable_gqa=True)
    # a causal window given as a list is not causal to torch (window_size == (-1, 0) is False):
    # visible
    full = varlen_attn(q, k, v, cu, cu, 300, 300, window_size=(-1, -1), enable_gqa=True)
    assert (full - sdpa).abs().max() > 0.1


# ----------------------------------------------------------------------------------------------
# model.py and sample.py through the stand-ins

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-kernels")
    tiny_hf_model(vocab=320, hidden=64, layers=2, heads=4, kv_heads=2, seed=5).save_pretrained(path)
    return (hf_checkpoint.from_pretrained(str(path), dtype=torch.float32),
            chat.build_byte_tokenizer(str(path)))


def kernels(monkeypatch, packed=None, flash_packed=None, paged=None, flash_paged=None):
    """Make the CPU take the CUDA paths, with these stand-ins as the only kernels installed."""
    monkeypatch.setattr(M, "flash_kernels_run", lambda t: True)
    monkeypatch.setattr(M, "varlen_attn", packed)
    monkeypatch.setattr(M, "flash_attn_varlen_func", flash_packed)
    monkeypatch.setattr(engine, "paged_varlen_attn", paged)
    monkeypatch.setattr(engine, "flash_attn_with_kvcache", flash_paged)


def counted(fn, calls):
    @functools.wraps(fn)  # the kernel's signature too: model.py reads its keywords from it
    def wrapper(*a, **kw):
        calls.append(fn.__name__)
        return fn(*a, **kw)
    return wrapper


def packed_loss_and_grads(model):
    docs = [torch.randint(0, 320, (n,), generator=torch.Generator().manual_seed(n))
            for n in (7, 30, 2, 19)]
    ids, pos = torch.cat(docs)[None], torch.cat([torch.arange(len(d)) for d in docs])[None]
    model.zero_grad(set_to_none=True)
    logits = model(ids, position_ids=pos)
    logits.float().pow(2).mean().backward()
    return logits.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("which", ["torch varlen_attn", "flash-attn varlen"])
def test_packed_training_through_each_varlen_kernel_equals_sdpa(tiny, monkeypatch, which):
    model, _ = tiny
    want_logits, want_grads = packed_loss_and_grads(model)  # SDPA per document
    calls = []
    if which == "torch varlen_attn":
        kernels(monkeypatch, packed=counted(varlen_attn, calls),
                flash_packed=counted(flash_attn_varlen_func, calls))
    else:  # a torch without varlen_attn: flash-attn's
        kernels(monkeypatch, flash_packed=counted(flash_attn_varlen_func, calls))
    logits, grads = packed_loss_and_grads(model)
    kernel = "varlen_attn" if which == "torch varlen_attn" else "flash_attn_varlen_func"
    assert set(calls) == {kernel}
    assert (logits - want_logits).abs().max() < 1e-5
    assert all((g - w).abs().max() < 1e-5 for g, w in zip(grads, want_grads))


def test_the_causal_keyword_is_read_from_varlen_attns_signature(tiny, monkeypatch):
    """torch 2.13 says causal with window_size=(-1, 0), torch 2.10-2.11 with is_causal=True: the
    keyword comes from the signature, so an error inside the kernel is raised as it is, never
    hidden by a retry with the other spelling."""
    model, _ = tiny
    want, _ = packed_loss_and_grads(model)
    seen = []

    def old_varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, is_causal=False,
                        enable_gqa=False):
        seen.append(is_causal)
        return varlen_attn(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k,
                           window_size=(-1, 0) if is_causal else (-1, -1), enable_gqa=enable_gqa)
    kernels(monkeypatch, packed=old_varlen_attn)
    logits, _ = packed_loss_and_grads(model)
    assert seen and all(seen) and (logits - want).abs().max() < 1e-5
    assert M.causal_keywords(varlen_attn) == dict(window_size=(-1, 0), enable_gqa=True)

    def failing(query, key, value, cu_seq_q, cu_seq_k, max_q, max_k, *, window_size=(-1, -1),
                enable_gqa=False):
        seen.append("called")
        raise TypeError("a bug inside the kernel")
    kernels(monkeypatch, packed=failing)
    seen.clear()
    with pytest.raises(TypeError, match="a bug inside the kernel"):
        packed_loss_and_grads(model)
    assert seen == ["called"]  # once, not retried


@pytest.mark.parametrize("capability, flash", [((7, 0), False), ((7, 5), False), ((8, 0), True),
                                               ((9, 0), True)])
def test_a_gpu_older_than_ampere_takes_sdpa_and_says_so_once(monkeypatch, capsys, capability,
                                                             flash):
    """torch's varlen kernel and flash-attn stop on a T4 (7.5) or V100 (7.0) with "FlashAttention
    only supports Ampere GPUs or newer": there model.py and engine.py take SDPA, with one note."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "Tesla T4")
    M.ampere_or_newer.cache_clear()
    try:
        # a bf16 CUDA tensor as flash_kernels_run sees one (this CPU has none to make)
        cuda_bf16 = types.SimpleNamespace(is_cuda=True, dtype=torch.bfloat16,
                                          device=torch.device("cuda", 0))
        for _ in range(3):  # every layer of every forward asks
            assert M.flash_kernels_run(cuda_bf16) is flash
            assert (engine.paged_kernel(cuda_bf16, engine.PAGED_BLOCK) is not None) is flash
    finally:
        M.ampere_or_newer.cache_clear()
    note = capsys.readouterr().err
    if flash:
        assert note == ""
    else:
        assert note.count("\n") == 1 and note.startswith(
            f"note: Tesla T4 has compute capability {capability[0]}.{capability[1]}; "
            "the flash kernels need 8.0 (Ampere) or newer, so attention runs on SDPA")


@torch.no_grad()
def decode_logits(model, block_size, steps=12):
    """A prefill of rows of different lengths (two of them equal), then `steps` decoded tokens
    (teacher-forced): every step's logits, through engine.PagedBatch as the engine builds it."""
    gen = torch.Generator().manual_seed(1)
    rows = [torch.randint(0, 320, (n + steps,), generator=gen).tolist()
            for n in (3, 40, 17, 17, 300)]
    blocks = sum(-(-len(r) // block_size) for r in rows)
    pool = engine.BlockPool(model.cfg, blocks, block_size, model.cfg.num_key_value_heads, "cpu",
                            torch.float32)
    seqs = [engine.Seq(r[:len(r) - steps], rows=[]) for r in rows]
    out = []
    for _ in range(steps + 1):
        for s in seqs:
            while len(s.blocks) * block_size < len(s.ids):
                s.blocks.append(pool.allocate())
        view = engine.PagedBatch(pool, seqs, "cpu")
        new = torch.tensor([t for s in seqs for t in s.ids[s.cached:]])
        out.append(model(new.view(view.positions.shape), cache=view))
        for s, r in zip(seqs, rows):
            s.cached, s.ids = len(s.ids), r[:len(s.ids) + 1]
    return torch.stack(out)


@pytest.mark.parametrize("which", ["torch varlen_attn", "flash_attn_with_kvcache"])
def test_paged_decode_through_each_kernel_equals_gather_and_sdpa(tiny, monkeypatch, which):
    model, tokenizer = tiny
    want = decode_logits(model, 16)  # the CPU's path: gather the blocks, SDPA
    calls = []
    paged = dict(paged=counted(varlen_attn, calls)) if which == "torch varlen_attn" else {}
    kernels(monkeypatch, packed=counted(varlen_attn, calls),
            flash_paged=counted(flash_attn_with_kvcache, calls), **paged)
    # the kernels' rule
    assert engine.Engine(model, 64, kv_memory_gb=0.01).pool.block_size == engine.PAGED_BLOCK
    got = decode_logits(model, engine.PAGED_BLOCK)
    kernel = "varlen_attn" if which == "torch varlen_attn" else "flash_attn_with_kvcache"
    # every layer of every decode step
    assert calls.count(kernel) == 2 * 12 + (2 if kernel == "varlen_attn" else 0)
    assert (got - want).abs().max() < 1e-5
    calls.clear()  # with blocks the kernels do not take, decoding gathers the blocks instead
    assert (decode_logits(model, 16) - want).abs().max() < 1e-5
    assert set(calls) == {"varlen_attn"}  # the prefills'
    # and the engine, end to end: the same greedy text as on the CPU's path
    kw = dict(max_tokens=300, max_thinking_tokens=40, num_ignore=1, progress=False)
    questions = ["What is 2+3?", "Why?"]
    fast = [o["text"] for o in sample.generate(model, tokenizer, questions, **kw)]
    monkeypatch.undo()
    assert fast == [o["text"] for o in sample.generate(model, tokenizer, questions, **kw)]


def test_decode_fallback_calls_sdpa_without_a_mask(tiny, monkeypatch):
    """Without a paged kernel, decode calls SDPA once per group of rows of one length, with no
    mask and no causal flag: on CUDA the flash kernel takes that call (a mask would leave cuDNN or
    the math kernel, which copies K and V to every query head). Here: the arguments; on CUDA, the
    next test runs them with only the flash and efficient kernels allowed."""
    model, _ = tiny
    # a GPU in fp16/bf16 without a paged kernel (a CPU, or fp32, takes one masked call)
    kernels(monkeypatch)
    sdpa, calls = F.scaled_dot_product_attention, []

    def recording(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                  enable_gqa=False):
        calls.append(dict(q=q.shape, k=k.shape, v=v.shape, mask=attn_mask, causal=is_causal,
                          gqa=enable_gqa, strides=(q.stride(-1), k.stride(-1), v.stride(-1))))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, enable_gqa=enable_gqa)
    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    decode_logits(model, 16, steps=1)
    decode = [c for c in calls if c["q"][2] == 1]  # (rows, heads, 1 query, head_dim)
    # rows of lengths 4, 41, 18, 18, 301 after one decoded token: 4 groups per layer, 2 layers
    assert sorted((c["q"][0], c["k"][2]) for c in decode) == sorted(
        [(1, 4), (1, 41), (2, 18), (1, 301)] * 2)
    for c in decode:
        assert c["mask"] is None and not c["causal"] and c["gqa"] and c["strides"] == (1, 1, 1)
        assert c["k"] == c["v"] and c["q"][0] == c["k"][0] and (c["q"][1], c["k"][1]) == (4, 2)


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="CUDA only: which SDPA kernels take the decode call")
def test_decode_fallback_runs_with_only_flash_or_efficient_on_cuda(monkeypatch):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    cfg = M.Config(vocab_size=320, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2)
    model = M.Qwen2(cfg).to("cuda", torch.bfloat16).eval()
    monkeypatch.setattr(engine, "paged_varlen_attn", None)
    monkeypatch.setattr(engine, "flash_attn_with_kvcache", None)
    rows = [[1] * n for n in (5, 60, 60, 700)]
    with torch.no_grad(), sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION]):
        runner = engine.Engine(model, 800, max_rows=4, kv_memory_gb=0.1)
        for r in rows:
            special = dict(im_start=-1, im_end=-1, eos=[])
            runner.add(r, [sample.Row(prompt_len=len(r), max_len=len(r) + 4, special=special,
                                      ignores_left=0, phase="answer")])
        while runner.busy():
            runner.step()  # raises if SDPA has no flash or efficient kernel for a call


# ----------------------------------------------------------------------------------------------
# Host syncs

SYNCS = ("item", "tolist", "__int__", "__float__", "__bool__", "__index__", "cpu", "numpy")


@pytest.mark.parametrize("path", ["gather + SDPA", "a paged kernel"])
def test_a_decode_step_waits_for_the_device_once(tiny, monkeypatch, path):
    """Every read of a tensor's value from Python is a host sync on a GPU. A decode step has one:
    the sampled tokens. Counted per engine step, sampling (temperature, top_p, banned ids)
    included."""
    model, tokenizer = tiny
    if path == "a paged kernel":  # stand-ins that read nothing: this test counts the engine's reads
        stub = lambda q, *a, **kw: torch.zeros_like(q)
        kernels(monkeypatch, packed=stub, paged=stub)
    reads = []
    for name in SYNCS:
        real = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _real=real, _name=name, **kw:
                            reads.append(_name) or _real(self, *a, **kw))
    runner = engine.Engine(model, 200, max_rows=8, vocab_size=len(tokenizer), kv_memory_gb=0.05)
    ids = sample.special_ids(tokenizer, "Wait")
    prompt = tokenizer.encode(chat.prompt_text("Why?") + chat.completion_text(),
                              add_special_tokens=False)
    for i in range(4):  # sampled rows, one with a round start (banned ids); one greedy
        row = sample.Row(prompt_len=len(prompt) + 1, max_len=len(prompt) + 30, special=ids,
                         ignores_left=i % 2, temperature=1.0 if i else 0.0, top_p=0.9, seed=i)
        runner.add(prompt + [i], [row])
    per_step = []
    while runner.busy():
        reads.clear()
        runner.step()
        per_step.append(len(reads))
    # The first step is the prefill: on the CPU's path, SDPA per document reads the document bounds
    # once per layer (2 here); CUDA's varlen kernel takes them as they are.
    prefill = 1 if path == "a paged kernel" else 1 + model.cfg.num_hidden_layers
    assert runner.steps > 20 and per_step == [prefill] + [1] * (len(per_step) - 1), per_step

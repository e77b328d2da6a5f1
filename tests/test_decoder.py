import pytest
import torch

from assistants.generation.decoder import BatchDecoder, HFDecoder, KVCache, make_decoder, supports
from assistants.generation.base import BASE

PROMPTS = ["Where is my order?", "My landlord kept my deposit and will not answer.", "fever?"]
ADAPTERS = ["legal", BASE, "medical"]


def prompt(engine, i: int):
    return torch.tensor([engine.prompt_ids([{"role": "user", "content": PROMPTS[i]}])])


def reference_logits(engine, ids, adapter: str):
    """The model's own forward through peft, one request alone: what every path must reproduce."""
    with torch.inference_mode():
        return engine.model(input_ids=ids, adapter_names=[adapter]).logits[0, -1].float()


def prefill(decoder, engine, i: int, adapter: str):
    ids = prompt(engine, i)
    cache = decoder.new_cache()
    with torch.inference_mode():
        logits = decoder.forward(ids, torch.arange(ids.shape[1])[None], [adapter], cache)
    return ids, cache, logits[0]


@pytest.mark.parametrize("kind", [BatchDecoder, HFDecoder])
def test_prefill_matches_the_peft_forward(tiny_engine, kind):
    decoder = kind(tiny_engine.model, BASE)
    for i, adapter in enumerate(ADAPTERS):
        ids, _, logits = prefill(decoder, tiny_engine, i, adapter)
        torch.testing.assert_close(logits, reference_logits(tiny_engine, ids, adapter), atol=1e-4, rtol=1e-4)


def mixed_decode_step(decoder, engine):
    """Prefill each of ADAPTERS' prompts alone, then one decode step of all rows in one batch.

    Returns (prompt ids per row, prefill logits per row, next tokens, their positions, batch logits)."""
    batch, ids_by_row, prefill_logits = KVCache(), [], []
    for i, adapter in enumerate(ADAPTERS):  # prompts of different lengths: rows end at different columns
        ids, cache, logits = prefill(decoder, engine, i, adapter)
        batch.add(cache)
        ids_by_row.append(ids)
        prefill_logits.append(logits)
    tokens = torch.tensor([[int(logits.argmax())] for logits in prefill_logits])
    positions = torch.tensor([[ids.shape[1]] for ids in ids_by_row])
    with torch.inference_mode():
        logits = decoder.forward(tokens, positions, ADAPTERS, batch)
    return ids_by_row, prefill_logits, tokens, positions, logits


@pytest.mark.parametrize("kind", [BatchDecoder, HFDecoder])
def test_mixed_batch_decode_step_matches_each_row_alone(tiny_engine, kind):
    decoder = kind(tiny_engine.model, BASE)
    ids_by_row, _, tokens, _, logits = mixed_decode_step(decoder, tiny_engine)
    for row, (ids, adapter) in enumerate(zip(ids_by_row, ADAPTERS)):
        full = torch.cat([ids, tokens[row:row + 1]], dim=1)
        torch.testing.assert_close(logits[row], reference_logits(tiny_engine, full, adapter), atol=1e-4, rtol=1e-4)


def test_adapters_are_stored_once(tiny_engine):
    decoder = BatchDecoder(tiny_engine.model, BASE)
    attn = decoder.lm.model.layers[0].self_attn
    fused = decoder.groups[0]["qkv"].weight
    start, end = fused.data_ptr(), fused.data_ptr() + fused.numel() * fused.element_size()
    for p in (attn.q_proj.base_layer.weight, attn.k_proj.weight, attn.q_proj.lora_A["legal"].weight,
              attn.v_proj.lora_A["medical"].weight):
        assert start <= p.data_ptr() < end  # a view of the fused matrix, not a copy


def test_rebuild_picks_up_a_newly_loaded_adapter(tiny_engine, tiny_tokenizer, tmp_path):
    from conftest import save_tiny_adapter

    decoder = BatchDecoder(tiny_engine.model, BASE)
    path = save_tiny_adapter(tiny_tokenizer, tmp_path / "support", seed=3)
    tiny_engine.model.load_adapter(str(path), adapter_name="support")
    ids, _, logits = prefill(decoder, tiny_engine, 0, "support")  # unknown name: rebuilt on the fly
    torch.testing.assert_close(logits, reference_logits(tiny_engine, ids, "support"), atol=1e-4, rtol=1e-4)
    with pytest.raises(KeyError, match="not loaded"):
        prefill(decoder, tiny_engine, 0, "nonexistent")


def test_cache_remove_moves_the_last_row_into_the_freed_slot(tiny_engine):
    decoder = BatchDecoder(tiny_engine.model, BASE)
    batch, caches = KVCache(), []
    for i, adapter in enumerate(ADAPTERS):
        ids, cache, _ = prefill(decoder, tiny_engine, i, adapter)
        batch.add(cache)
        caches.append(cache)
    assert batch.lengths == [c.length for c in caches] and batch.slots >= 3
    order = batch.remove([0])
    assert order == [2, 1] and batch.lengths == [caches[2].length, caches[1].length]
    for row, old in enumerate(order):  # every kept row's keys and values, exactly, in its new slot
        n = caches[old].length
        for layer in range(len(batch.keys)):
            torch.testing.assert_close(batch.keys[layer][row, :, :n], caches[old].keys[layer][0, :, :n], rtol=0, atol=0)
            torch.testing.assert_close(batch.values[layer][row, :, :n], caches[old].values[layer][0, :, :n], rtol=0, atol=0)
    assert batch.remove([1]) == [0] and batch.rows == 1
    assert batch.remove([0]) == [] and batch.rows == 0 and batch.keys == []


def test_decoding_after_rows_left_matches_each_row_alone(tiny_engine):
    """Rows leave mid-generation and the survivors keep decoding: their logits stay the alone ones."""
    decoder = BatchDecoder(tiny_engine.model, BASE)
    batch, alone, tokens, positions = KVCache(), [], [], []
    for i, adapter in enumerate(ADAPTERS):
        ids, cache, logits = prefill(decoder, tiny_engine, i, adapter)
        batch.add(cache)
        alone.append(prefill(decoder, tiny_engine, i, adapter)[1])
        tokens.append(int(logits.argmax()))
        positions.append(ids.shape[1])
    rows = list(range(3))
    with torch.inference_mode():
        for step in range(3):
            names = [ADAPTERS[r] for r in rows]
            mixed = decoder.forward(torch.tensor([[tokens[r]] for r in rows]), torch.tensor([[positions[r]] for r in rows]), names, batch)
            for j, r in enumerate(rows):
                own = decoder.forward(torch.tensor([[tokens[r]]]), torch.tensor([[positions[r]]]), [ADAPTERS[r]], alone[r])
                torch.testing.assert_close(mixed[j], own[0], atol=1e-4, rtol=1e-4)
                tokens[r], positions[r] = int(own[0].argmax()), positions[r] + 1
            if step == 0:
                rows = [rows[i] for i in batch.remove([0])]  # the first row finishes: the last takes its slot
    assert batch.rows == 2 and batch.lengths == [alone[r].length for r in rows]


def test_multi_token_forward_with_several_rows_raises_without_verification(tiny_engine):
    decoder = HFDecoder(tiny_engine.model, BASE)
    assert not decoder.verifies
    with pytest.raises(ValueError, match="one row"):
        decoder.forward(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long), [BASE, BASE],
                        decoder.new_cache(rows=2))


def test_draft_verification_matches_each_row_alone_and_drop_forgets_rejected_tokens(tiny_engine):
    """Rows of mixed adapters each feed their next token and 3 draft tokens in one forward: every
    position's logits are the model's own for that row's prefix, and after the rejected tokens are
    dropped the next step continues exactly as if they had never been fed."""
    decoder = BatchDecoder(tiny_engine.model, BASE)
    assert decoder.verifies
    batch, rows = KVCache(), []
    for i, adapter in enumerate(ADAPTERS):
        ids, cache, logits = prefill(decoder, tiny_engine, i, adapter)
        batch.add(cache)
        rows.append(ids[0].tolist() + [int(logits.argmax())])
    drafts = [[5, 6, 7], [8, 9, 10], [11, 12, 13]]
    fed = torch.tensor([[r[-1]] + d for r, d in zip(rows, drafts)])
    positions = torch.tensor([[len(r) - 1 + t for t in range(4)] for r in rows])
    with torch.inference_mode():
        logits = decoder.forward(fed, positions, ADAPTERS, batch, every_position=True)
    assert logits.shape[:2] == (3, 4)
    for row, adapter in enumerate(ADAPTERS):
        for t in range(4):
            ids = torch.tensor([rows[row] + drafts[row][:t]])
            torch.testing.assert_close(logits[row, t], reference_logits(tiny_engine, ids, adapter), atol=1e-4, rtol=1e-4)
    kept = [1, 3, 0]  # draft tokens each row keeps
    for row, k in enumerate(kept):
        batch.drop(row, 3 - k)
        rows[row] += drafts[row][:k]
    assert batch.lengths == [len(r) for r in rows]
    nxt = torch.tensor([[1], [2], [3]])
    with torch.inference_mode():
        logits = decoder.forward(nxt, torch.tensor([[len(r)] for r in rows]), ADAPTERS, batch)
    for row, adapter in enumerate(ADAPTERS):
        ids = torch.tensor([rows[row] + [int(nxt[row, 0])]])
        torch.testing.assert_close(logits[row], reference_logits(tiny_engine, ids, adapter), atol=1e-4, rtol=1e-4)


def test_one_row_verification_matches_the_peft_forward(tiny_engine):
    decoder = BatchDecoder(tiny_engine.model, BASE)
    ids, cache, logits = prefill(decoder, tiny_engine, 1, "legal")
    seq = ids[0].tolist() + [int(logits.argmax()), 4, 9]
    with torch.inference_mode():
        out = decoder.forward(torch.tensor([seq[-3:]]), torch.arange(len(seq) - 3, len(seq))[None], ["legal"], cache,
                              every_position=True)
    for t in range(3):
        torch.testing.assert_close(out[0, t], reference_logits(tiny_engine, torch.tensor([seq[:len(seq) - 2 + t]]), "legal"),
                                   atol=1e-4, rtol=1e-4)


def test_other_architectures_fall_back_to_the_model_forward(tiny_tokenizer):
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tiny_tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=256)).eval()
    assert "gpt2" in supports(model)
    decoder = make_decoder(model, BASE)
    assert isinstance(decoder, HFDecoder)
    ids = torch.tensor([[5, 6, 7, 8]])
    cache = decoder.new_cache()
    with torch.inference_mode():
        first = decoder.forward(ids, torch.arange(4)[None], [BASE], cache)
        step = decoder.forward(torch.tensor([[9]]), torch.tensor([[4]]), [BASE], cache)
        full = model(input_ids=torch.tensor([[5, 6, 7, 8, 9]])).logits[0, -1]
    torch.testing.assert_close(first[0], model(input_ids=ids).logits[0, -1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(step[0], full, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", [BatchDecoder, HFDecoder])
def test_prompt_after_a_cached_prefix_matches_the_whole_prompt(tiny_engine, kind):
    decoder = kind(tiny_engine.model, BASE)
    ids = prompt(tiny_engine, 1)
    n = ids.shape[1] // 2
    prefix = decoder.new_cache()
    with torch.inference_mode():
        decoder.forward(ids[:, :n], torch.arange(n)[None], ["legal"], prefix)
        cache = decoder.new_cache()
        cache.extend(prefix)
        logits = decoder.forward(ids[:, n:], torch.arange(n, ids.shape[1])[None], ["legal"], cache)
    torch.testing.assert_close(logits[0], reference_logits(tiny_engine, ids, "legal"), atol=1e-4, rtol=1e-4)


def snap_to_4bit_grid(model) -> None:
    """Make every decoder linear weight exactly 4-bit values per block of 32 (as a dequantized GGUF Q4_1 is)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() == 2 and "lora_" not in name and "embed" not in name:
                w = p.view(p.shape[0], -1, 32)
                low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
                step = (high - low) / 15
                p.copy_((torch.round((w - low) / step) * step + low).view_as(p))


def test_quant_linear_packs_only_exact_4bit_weights():
    from assistants.generation.decoder import QuantLinear

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48, bias=False)
    assert QuantLinear.pack(layer.weight) is None  # random floats: packing would change the model
    lossy = QuantLinear.pack(layer.weight, lossy=True)
    assert lossy is not None
    snap_to_4bit_grid(layer)
    packed = QuantLinear.pack(layer.weight)
    assert packed is not None and packed.nbytes < layer.weight.numel() * 4 / 6
    x = torch.randn(3, 1, 64)
    # the weights are exact; only the activations are rounded to bf16
    torch.testing.assert_close(packed(x), layer(x), atol=2e-2, rtol=2e-2)
    assert packed(x).dtype == x.dtype


def test_half_linear_rounds_only_the_weights_to_float16():
    from assistants.generation.decoder import HalfLinear

    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48, bias=False)
    packed = HalfLinear.pack(layer.weight)
    if packed is None:
        pytest.skip("this torch build has no fbgemm fp16 kernel")
    assert packed.nbytes == layer.weight.numel() * 2
    x = torch.randn(5, 2, 64)
    rounded = torch.nn.functional.linear(x, layer.weight.half().float())  # float16 weights, float32 arithmetic
    torch.testing.assert_close(packed(x), rounded, atol=1e-5, rtol=1e-5)
    assert (packed(x) - layer(x)).abs().max() > 0  # the rounding is real: not the float layer itself
    assert packed(x.bfloat16()).dtype == torch.bfloat16
    assert packed.prompts and not HalfLinear.pack(layer.weight.bfloat16()).prompts  # a bf16 model's prompts keep its matmuls
    big = torch.full((16, 64), 1e6)  # beyond float16's range: not packed (the caller keeps another path)
    assert HalfLinear.pack(big) is None


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, share: float = 0.02) -> None:
    """Packed weights round activations or weights: the error must be small next to the logits' own spread
    (a fixed atol of 3e-2 on logits of ~0.1 would pass for a wrong adapter). The int4 path rounds activations
    to bf16: ~1% of the spread; fp16 weights ~0.05%; another adapter's logits differ by far more (checked below)."""
    spread = (expected - expected.mean()).abs().max().item()
    error = (actual.float() - expected.float()).abs().max().item()
    assert error <= share * spread, f"max error {error:.2e} vs logit spread {spread:.2e}"


@pytest.mark.parametrize("weights", ["auto", "fp16", "int4"])
def test_packed_decoder_matches_the_float_forward(tiny_engine, weights):
    from assistants.generation.decoder import HalfLinear, QuantLinear

    snap_to_4bit_grid(tiny_engine.model)
    decoder = BatchDecoder(tiny_engine.model, BASE, weights=weights)
    assert decoder.packed and all(q is not None for q in decoder.packed.values())
    layers = [q for key, q in decoder.packed.items() if key != ("head",)]
    half = HalfLinear.pack(torch.ones(16, 32)) is not None
    if weights == "fp16" and not half:
        pytest.skip("this torch has no fbgemm fp16 kernel (fp16 falls back to the float forward)")
    if weights == "int4" or not half:
        assert all(isinstance(q, QuantLinear) for q in layers)
    else:
        assert all(isinstance(q, HalfLinear) for q in decoder.packed.values())
    ids_by_row, prefill_logits, tokens, positions, mixed = mixed_decode_step(decoder, tiny_engine)  # packed weights
    for ids, logits, adapter in zip(ids_by_row, prefill_logits, ADAPTERS):
        assert_close_to_scale(logits, reference_logits(tiny_engine, ids, adapter))
        other = next(a for a in ADAPTERS if a != adapter)
        with pytest.raises(AssertionError):  # the tolerance tells adapters apart
            assert_close_to_scale(logits, reference_logits(tiny_engine, ids, other))
    for row, (ids, adapter) in enumerate(zip(ids_by_row, ADAPTERS)):
        full = torch.cat([ids, tokens[row:row + 1]], dim=1)
        assert_close_to_scale(mixed[row], reference_logits(tiny_engine, full, adapter))
        _, cache, _ = prefill(decoder, tiny_engine, row, adapter)
        with torch.inference_mode():
            alone = decoder.forward(tokens[row:row + 1], positions[row:row + 1], [adapter], cache)[0]
        torch.testing.assert_close(mixed[row], alone, atol=1e-5, rtol=1e-5)  # batch or alone: the same numbers


def test_auto_weights_fall_back_to_4bit_where_float16_cannot_hold_a_layer(tiny_engine, monkeypatch):
    from assistants.generation import decoder as D

    snap_to_4bit_grid(tiny_engine.model)
    monkeypatch.setattr(D.HalfLinear, "pack", classmethod(lambda cls, weight: None))  # as on a build without fbgemm
    auto = BatchDecoder(tiny_engine.model, BASE, weights="auto")
    assert all(isinstance(q, D.QuantLinear) for key, q in auto.packed.items() if key != ("head",))
    assert isinstance(auto.packed[("head",)], D.Int8Linear)
    assert not any(BatchDecoder(tiny_engine.model, BASE, weights="fp16").packed.values())  # fp16 asked for: float, not 4-bit


def test_float_weights_pack_nothing(tiny_engine):
    snap_to_4bit_grid(tiny_engine.model)
    assert not BatchDecoder(tiny_engine.model, BASE, weights="float").packed
    with pytest.raises(ValueError, match="weights must be"):
        BatchDecoder(tiny_engine.model, BASE, weights="int3")

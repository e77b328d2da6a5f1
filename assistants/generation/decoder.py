"""A lean batched forward pass for Llama-family models, with a different LoRA adapter on every row.

Why not the model's own forward with peft ``adapter_names``: on 2 CPU cores a decode step of a
135M model is dominated by per-operation overhead, not arithmetic. peft loops over the adapters
present in the batch inside each of the 210 LoRA layers (slice rows, run A, run B, scatter back),
and the Hugging Face forward rebuilds masks and concatenates every layer's KV cache each step.
Here, per layer and per decode step:

- every adapter's LoRA ``A`` matrices sit side by side in one tensor, so one matmul computes all
  adapters' rank-r features for all rows; a per-row mask (the adapter's scaling in its own
  columns, zeros elsewhere) keeps each row's own adapter; one more matmul adds ``B``'s output in
  place. Three operations per LoRA layer, whatever the mix of adapters in the batch (two when all
  rows share one adapter: its scaling rides on the ``B`` matmul);
- keys and values are written in place into a preallocated cache (``KVCache``), never copied.

The adapter weights live once: peft's own LoRA parameters are re-pointed to views of these
tensors, so the naive path, evaluation and this path share them (in the model's dtype).

Decode steps (a few rows, up to ``QUANT_MAX_TOKENS`` tokens in all) read every weight once per
step; prompts (hundreds of tokens) are compute-bound. With ``weights="auto"`` (the engine's
default) the base weights are packed:

- ``"fp16"`` (what ``auto`` picks where torch has fbgemm's kernel, as on x86): every linear layer
  and the output head rounded to float16 and prepacked for fbgemm's fp16 GEMM, which converts
  weights to float32 in registers and keeps activations and sums in float32. Measured on 2 AVX2
  cores: 30 layers at 16 tokens 25 ms against 46 ms for the 4-bit kernel below (at one token 8.9
  against 10.6 ms, though in the engine one row of one token runs ~4% slower: there reading the
  weights bounds it, and float16 has 4x the bytes); the head at 16 tokens 5.6 ms against 13.5 ms
  for int8; prompts 5-7% faster than with float32 weights, so a float32 model's prompts use it
  too (a bf16 model keeps its own matmuls for prompts: bf16 hardware runs them faster). Rounding a
  weight to float16 changes it by at most 2^-11 of itself, less than the 4-bit path's rounding of
  the activations to bf16 (2^-8).
- ``"int4"``-style packing (``QuantLinear``), what ``auto`` falls back to without fbgemm: the
  embedded model comes from a Q4_1 GGUF, so its linear layers are exactly 4-bit values with a scale
  and an offset per block of 32, and the packed copy holds the same numbers in an eighth of fp32's
  bytes (bf16 activations inside those matmuls). ``auto`` packs only such layers, so nothing is
  rounded but the activations; ``"int4"`` packs every layer, rounding. The output head (the tied
  embedding, Q8_0 in the GGUF) then gets an int8 copy with one scale per row. Prompts keep the
  float weights, where torch's float matmul is faster than this kernel.

Models outside the family fall back to the Hugging Face forward (``supports`` says why).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import cached_property

from .base import WEIGHTS

log = logging.getLogger(__name__)

GROW = 128  # cache columns added at a time: one reallocation per 128 decode steps, not one per step
QUANT_GROUP = 32  # weights per (scale, offset) block, as in GGUF's Q4_1
QUANT_MAX_TOKENS = 32  # forwards of up to this many tokens use the packed weights (faster than float there: fp16 2x at 24 tokens); longer ones are compute-bound

SUPPORTED = ("llama", "mistral", "qwen2")  # same block: RMSNorm, RoPE, GQA attention, SwiGLU MLP


def supports(model) -> str | None:
    """None when ``BatchDecoder`` can run ``model``; otherwise why not (the scheduler falls back)."""
    config = _causal_lm(model).config
    if config.model_type not in SUPPORTED:
        return f"model type {config.model_type!r} is not one of {SUPPORTED}"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"activation {config.hidden_act!r} is not silu"
    if getattr(config, "pretraining_tp", 1) != 1:
        return "pretraining_tp > 1"
    if config.model_type == "qwen2" and getattr(config, "use_sliding_window", False):
        return "sliding-window attention"
    return None


def _causal_lm(model):
    """The transformers model under a PeftModel (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class KVCache:
    """Keys and values of every row, one tensor per layer (row slots, KV heads, columns, head dim).

    Left-aligned: row r's tokens fill columns [0, lengths[r]); columns past a row's length are spare
    capacity (or a departed row's stale values), always masked out. So rows never move when another
    row joins, grows or leaves: a joining request's tokens are copied once into a free slot (``add``),
    a leaving row's slot takes the last row (``remove``), and a decode step writes each row's new
    token in place at that row's own length.
    """

    def __init__(self) -> None:
        self.keys: list = []  # per layer (slots, H_kv, capacity, D); slots >= rows
        self.values: list = []
        self.lengths: list[int] = []  # tokens of each row

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2] if self.keys else 0

    @property
    def slots(self) -> int:
        return self.keys[0].shape[0] if self.keys else 0

    @property
    def length(self) -> int:
        """Columns in use: the longest row's length."""
        return max(self.lengths, default=0)

    def allocate(self, n_layers: int, heads: int, head_dim: int, dtype, rows: int = 1, columns: int = GROW) -> None:
        import torch

        self.keys = [torch.zeros(rows, heads, columns, head_dim, dtype=dtype) for _ in range(n_layers)]
        self.values = [torch.zeros(rows, heads, columns, head_dim, dtype=dtype) for _ in range(n_layers)]
        self.lengths = [0] * rows

    def reserve(self, extra: int) -> None:
        """Make room for every row to take ``extra`` more tokens."""
        need = self.length + extra
        if need > self.capacity:
            self._grow(self.slots, need + GROW)

    def step(self, T: int) -> tuple:
        """Room for ``T`` new tokens per row; returns (columns attention reads, where the new keys go).

        One row: a slice of columns. Several rows: (row, column) index tensors, (B, 1) and (B, T):
        each row's tokens go at its own length. ``write`` puts a layer's new keys and values there."""
        import torch

        self.reserve(T)
        if self.rows == 1:
            start = self.lengths[0]
            return start + T, (slice(0, 1), slice(None), slice(start, start + T))
        columns = torch.tensor(self.lengths)[:, None] + torch.arange(T)
        return self.length + T, (torch.arange(self.rows)[:, None], slice(None), columns)

    def write(self, layer: int, where: tuple, keys, values) -> None:
        """Store one layer's new keys and values (B, H, T, D) at ``where`` (from ``step``)."""
        if self.rows > 1:  # the (B, T) index comes first in the indexed shape: (B, T, H, D)
            keys, values = keys.transpose(1, 2), values.transpose(1, 2)
        self.keys[layer][where] = keys
        self.values[layer][where] = values

    def advance(self, T: int) -> None:
        self.lengths = [n + T for n in self.lengths]

    def drop(self, row: int, n: int) -> None:
        """Forget row ``row``'s last ``n`` tokens (draft tokens that verification rejected): their
        columns become spare capacity, overwritten by the row's next tokens."""
        self.lengths[row] -= n

    def add(self, other: "KVCache") -> None:
        """Append the rows of ``other`` (a prefilled request): its tokens are copied once, nothing else moves."""
        if self.rows == 0:
            self.keys, self.values, self.lengths = other.keys, other.values, list(other.lengths)
            return
        rows, n = self.rows + other.rows, other.length
        if rows > self.slots or n > self.capacity:  # doubling the slots: a few growths while a batch fills up
            self._grow(max(rows, 2 * self.slots) if rows > self.slots else self.slots,
                       n + GROW if n > self.capacity else self.capacity)
        for mine, theirs in ((self.keys, other.keys), (self.values, other.values)):
            for a, b in zip(mine, theirs):
                a[self.rows:rows, :, :n] = b[:other.rows, :, :n]
        self.lengths += other.lengths

    def extend(self, prefix: "KVCache") -> None:
        """Start this (empty, one-row) cache with a copy of ``prefix``'s tokens: a cached prompt prefix."""
        n = prefix.length
        self.reserve(n)
        for mine, theirs in ((self.keys, prefix.keys), (self.values, prefix.values)):
            for a, b in zip(mine, theirs):
                a[:1, :, :n] = b[:1, :, :n]
        self.lengths = [n]

    def remove(self, indices: list[int]) -> list[int]:
        """Drop rows ``indices`` (finished); the last rows move into the freed slots.

        Returns the new row order: for each remaining row, the index it had before."""
        gone = set(indices)
        order = [i for i in range(self.rows) if i not in gone]
        if not order:
            self.__init__()
            return []
        n = len(order)
        new = list(range(n))
        holes = [i for i in range(n) if i in gone]
        movers = [i for i in order if i >= n]  # survivors beyond the new end: as many as there are holes
        for hole, src in zip(holes, movers):
            length = self.lengths[src]
            for store in (self.keys, self.values):
                for t in store:
                    t[hole, :, :length] = t[src, :, :length]
            new[hole] = src
        self.lengths = [self.lengths[i] for i in new]
        return new

    def _grow(self, slots: int, capacity: int) -> None:
        """Copy what is used into new tensors of ``slots`` rows and ``capacity`` columns."""
        rows, used = self.rows, self.length
        for store in (self.keys, self.values):
            for i, t in enumerate(store):
                new = t.new_zeros(slots, t.shape[1], capacity, t.shape[3])
                new[:rows, :, :used] = t[:rows, :, :used]
                store[i] = new


@dataclass
class Group:
    """Linear layers that read the same input (q/k/v; gate/up; o; down), fused into one matmul.

    ``weight`` stacks the layers' base weights and then every LoRA ``A`` of every adapter:
    (sum of outputs + sum of ranks, in). The model's own parameters are views into it, so nothing
    is stored twice. ``F.linear(x, weight)`` gives each layer's base output and each adapter's
    rank-r features at once.
    """

    weight: object
    bias: object  # or None
    sizes: list[int]  # split of the matmul's output: base outputs, then one block of ranks per LoRA layer
    lora: list  # per layer: (Bt (R, out), layout) or None; layout = ((adapter, first, last, scaling), ...)
    packed: "PackedLinear | None" = None  # the base rows of ``weight``, packed for decode steps
    views: dict = field(default_factory=dict)  # (LoRA layer, lo, hi) -> (A rows transposed, B rows): slices kept

    @cached_property
    def width(self) -> int:
        """Columns of the base outputs (the LoRA features follow them)."""
        return sum(self.sizes[:len(self.lora)])

    @cached_property
    def spans(self) -> list:
        """Per LoRA layer: (first output column, outputs, first A row in ``weight``, (Bt, layout))."""
        spans, column, row = [], 0, self.width
        for size, lora in zip(self.sizes, self.lora):
            if lora is not None:
                spans.append((column, size, row, lora))
                row += lora[0].shape[0]
            column += size
        return spans


class PackedLinear:
    """A packed copy of a linear layer's weight for decode steps: ``mm`` (N, in) -> (N, out) in x's dtype."""

    out_features: int
    prompts = False  # also used for prompts (many tokens): as fast as float matmul there, or faster

    def __call__(self, x):
        """(..., in) in any float dtype -> (..., out) in x's dtype."""
        return self.mm(x.reshape(-1, x.shape[-1])).view(*x.shape[:-1], self.out_features)

    def mm(self, x):
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        raise NotImplementedError


class HalfLinear(PackedLinear):
    """``x @ W.T`` with W rounded to float16 and prepacked for fbgemm's fp16 GEMM (float32
    activations and accumulation). ``pack`` returns None where torch lacks the kernel (non-x86
    builds) or the weight does not fit float16's range; the caller then keeps another path."""

    def __init__(self, packed, out_features: int, in_features: int) -> None:
        self.packed, self.out_features, self.in_features = packed, out_features, in_features

    @classmethod
    def pack(cls, weight) -> "HalfLinear | None":
        import torch

        ops = torch.ops.quantized
        if not (hasattr(ops, "linear_prepack_fp16") and hasattr(ops, "linear_dynamic_fp16")):
            return None
        w = weight.detach().float().contiguous()
        if not bool(w.abs().amax() <= torch.finfo(torch.float16).max):  # NaN, inf or beyond float16's range
            return None
        try:
            packed = cls(ops.linear_prepack_fp16(w, None), w.shape[0], w.shape[1])
            packed.mm(w.new_zeros(1, w.shape[1]))  # the kernel runs on this CPU
            # prompts too where the model is float32 (5-7% faster prefill on 2 AVX2 cores, measured); a
            # bf16 model's own matmuls run on bf16 hardware (AVX512-BF16, AMX), faster than this kernel
            packed.prompts = weight.dtype == torch.float32
        except (RuntimeError, NotImplementedError) as exc:
            log.info("fp16 packing unavailable (%s)", exc)
            return None
        return packed

    def mm(self, x):
        import torch

        return torch.ops.quantized.linear_dynamic_fp16(x.float(), self.packed).to(x.dtype)

    @property
    def nbytes(self) -> int:
        return self.out_features * self.in_features * 2


class QuantLinear(PackedLinear):
    """``x @ W.T`` with W packed 4-bit, one (scale, offset) per block of ``QUANT_GROUP`` inputs,
    through torch's CPU kernel (bf16 activations, float32 accumulation).

    ``pack`` only accepts a weight whose blocks are exactly 16 evenly spaced values (within
    ``tolerance`` of a step), as GGUF Q4_1 weights dequantized are; anything else returns None,
    and the caller keeps the float weight. ``lossy=True`` packs any weight (rounding to 4 bits)."""

    def __init__(self, packed, scales_zeros, out_features: int) -> None:
        self.packed, self.scales_zeros, self.out_features = packed, scales_zeros, out_features

    @classmethod
    def pack(cls, weight, tolerance: float = 1e-3, lossy: bool = False) -> "QuantLinear | None":
        import torch

        n, k = weight.shape
        if k % QUANT_GROUP or n % 16 or not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
            return None
        w = weight.detach().float().view(n, k // QUANT_GROUP, QUANT_GROUP)
        low, high = w.amin(-1, keepdim=True), w.amax(-1, keepdim=True)
        step = ((high - low) / 15).clamp(min=1e-12)
        q = torch.round((w - low) / step).clamp(0, 15)
        if not lossy and ((q * step + low - w).abs() > tolerance * step).any():
            return None  # not a 4-bit grid: packing would change the model
        # the kernel computes (q - 8) * scale + zero
        scales_zeros = torch.stack([step.squeeze(-1).t(), (low + 8 * step).squeeze(-1).t()], -1).to(torch.bfloat16).contiguous()
        try:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).view(n, k), 8)
        except RuntimeError as exc:  # a torch build without the kernel for this shape
            log.info("4-bit packing unavailable (%s): keeping float weights", exc)
            return None
        return cls(packed, scales_zeros, n)

    def mm(self, x):
        """(N, in) -> (N, out) in x's dtype."""
        import torch

        return torch.ops.aten._weight_int4pack_mm_for_cpu(x.to(torch.bfloat16), self.packed, QUANT_GROUP, self.scales_zeros).to(x.dtype)

    @property
    def nbytes(self) -> int:
        return self.packed.numel() * self.packed.element_size() + self.scales_zeros.numel() * self.scales_zeros.element_size()


class Int8Linear(PackedLinear):
    """``x @ W.T`` with W rounded to int8, one scale per output row (lossy: for the output head,
    whose logits tolerate it; torch's CPU kernel, bf16 activations)."""

    def __init__(self, weight) -> None:
        import torch

        w = weight.detach().float()
        scales = w.abs().amax(1).clamp(min=1e-12) / 127
        self.weight = torch.round(w / scales[:, None]).to(torch.int8)
        self.scales = scales.to(torch.bfloat16)
        self.out_features = w.shape[0]

    def mm(self, x):
        """(N, in) -> (N, out) in x's dtype."""
        import torch

        return torch.ops.aten._weight_int8pack_mm(x.to(torch.bfloat16), self.weight, self.scales).to(x.dtype)

    @property
    def nbytes(self) -> int:
        return self.weight.numel() + self.scales.numel() * 2


def make_decoder(model, base_name: str, weights: str = "float") -> "Decoder":
    """The fast ``BatchDecoder`` where the model allows it, else the Hugging Face forward."""
    reason = supports(model)
    if reason is None:
        return BatchDecoder(model, base_name, weights)
    log.warning("batched LoRA decoder unavailable (%s): using the slower Hugging Face forward", reason)
    return HFDecoder(model, base_name)


class Decoder:
    """``forward(ids, positions, adapters, cache)`` -> next-token logits, one adapter per row.

    ``ids`` and ``positions`` are (B, T); T > 1 is a prompt (or its rest after a cached prefix), or,
    where ``verifies`` is True, a row's next token followed by draft tokens to check (speculative
    decoding: several rows at once). ``adapters`` names each row's adapter (``base_name`` = none).
    The logits of each row's last token come back as (B, vocab) float32, or with
    ``every_position=True`` those of every token, (B, T, vocab); ``cache`` holds the new keys and values.
    """

    verifies = False  # several tokens per row in one forward (draft verification)

    def __init__(self, model, base_name: str) -> None:
        self.model = model
        self.base_name = base_name  # the adapter name meaning "no adapter"
        self.lm = _causal_lm(model)
        config = self.lm.config
        self.heads = config.num_attention_heads
        self.kv_heads = getattr(config, "num_key_value_heads", None) or self.heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.layers = config.num_hidden_layers

    def new_cache(self, rows: int = 1, columns: int = GROW) -> KVCache:
        cache = KVCache()
        dtype = self.lm.get_input_embeddings().weight.dtype
        cache.allocate(self.layers, self.kv_heads, self.head_dim, dtype, rows, columns)
        return cache

    def rebuild(self) -> None:
        """Called after adapters were loaded or removed."""


class HFDecoder(Decoder):
    """The model's own forward (peft ``adapter_names`` per row) on our cache: for other architectures."""

    def forward(self, ids, positions, adapters: list[str], cache: KVCache, every_position: bool = False):
        import torch
        from transformers import DynamicCache

        if ids.shape[1] > 1 and ids.shape[0] != 1:
            raise ValueError("a multi-token forward takes one row here (no draft verification)")
        rows, T = ids.shape
        kwargs = {"adapter_names": adapters} if hasattr(self.model, "peft_config") else {}
        end, where = cache.step(T)
        past_len = end - T  # the new tokens go after every row's past (and land at each row's own length)
        mask = torch.ones(rows, end, dtype=torch.long)
        if rows > 1:
            mask[:, :past_len] = (torch.arange(past_len) < where[2][:, :1]).long()
        past = DynamicCache(ddp_cache_data=[(k[:rows, :, :past_len], v[:rows, :, :past_len]) for k, v in zip(cache.keys, cache.values)],
                            config=self.lm.config) if past_len else DynamicCache(config=self.lm.config)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=past, use_cache=True, **kwargs)
        for i, layer in enumerate(past.layers):  # copy the new columns into our (preallocated) cache
            cache.write(i, where, layer.keys[:, :, -T:], layer.values[:, :, -T:])
        cache.advance(T)
        return out.logits.float() if every_position else out.logits[:, -1].float()


class BatchDecoder(Decoder):
    """Llama-family forward written out: fused matmuls, per-row LoRA, in-place KV cache."""

    verifies = True

    def __init__(self, model, base_name: str, weights: str = "float") -> None:
        super().__init__(model, base_name)
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        self.weights = weights
        self.groups: list[dict[str, Group]] = []  # per layer: "qkv", "o", "gate_up", "down"
        self.tables: dict[tuple, tuple] = {}  # layout -> (adapter name -> slot, (slots, R) scaling table)
        self.packed: dict[tuple, PackedLinear | None] = {}  # (layer, group) or ("head",) -> packed base weights, kept across rebuilds
        self.rebuild()

    # -- adapters -----------------------------------------------------------------------------------

    def rebuild(self) -> None:
        """Fuse every layer's weights with every loaded adapter; call after loading or deleting one."""
        self.tables = {}
        self.groups = []
        for i, layer in enumerate(self.lm.model.layers):
            attn, mlp = layer.self_attn, layer.mlp
            groups = {"qkv": self._fuse([attn.q_proj, attn.k_proj, attn.v_proj]), "o": self._fuse([attn.o_proj]),
                      "gate_up": self._fuse([mlp.gate_proj, mlp.up_proj]), "down": self._fuse([mlp.down_proj])}
            for name, group in groups.items():
                group.packed = self._pack((i, name), group)
            self.groups.append(groups)
        self.head = self._fuse([self.lm.lm_head])
        if self.head.lora == [None]:
            self.head.packed = self._pack(("head",), self.head)
        if self.weights != "float":
            packed = [g.packed for groups in self.groups for g in groups.values()]
            if not all(packed):
                log.warning("%d of %d weight groups could not be packed (%s): those decode with float weights",
                            packed.count(None), len(packed),
                            "no fp16 kernel in this torch" if self.weights == "fp16" else "not 4-bit values")

    def _pack(self, key: tuple, group: Group) -> "PackedLinear | None":
        """The group's base rows packed for decode steps (once: adapters change, base weights do not):
        float16 for fbgemm (``fp16``, and ``auto`` where the kernel exists), else 4-bit (``int4``; ``auto``
        only for weights that are exactly 4-bit values), and an int8 output head with 4-bit layers."""
        if self.weights == "float":
            return None
        if key not in self.packed:
            weight, packed = group.weight[:group.width], None
            if self.weights in ("auto", "fp16"):
                packed = HalfLinear.pack(weight)
            if packed is None and self.weights != "fp16":
                packed = Int8Linear(weight) if key == ("head",) else QuantLinear.pack(weight, lossy=self.weights == "int4")
            self.packed[key] = packed
        return self.packed[key]

    @property
    def packed_bytes(self) -> int:
        return sum(q.nbytes for q in self.packed.values() if q is not None)

    def _fuse(self, modules: list) -> Group:
        import torch

        bases = [getattr(m, "base_layer", m) for m in modules]
        dtype = bases[0].weight.dtype
        adapters = [[n for n in m.lora_A.keys() if n in m.lora_B] if hasattr(m, "lora_A") else [] for m in modules]
        blocks = [b.weight.detach() for b in bases]
        blocks += [m.lora_A[n].weight.detach().to(dtype) for m, names in zip(modules, adapters) for n in names]
        weight = torch.cat(blocks) if len(blocks) > 1 else blocks[0]  # (a lone tied lm_head stays as it is)
        biases = [b.bias for b in bases]
        bias = None
        if any(b is not None for b in biases):
            bias = torch.cat([b.detach() if b is not None else weight.new_zeros(base.out_features)
                              for b, base in zip(biases, bases)] + [weight.new_zeros(weight.shape[0] - sum(x.out_features for x in bases))])
        row = 0
        for base in bases:  # the model's weights become views of the fused matrix: stored once
            base.weight.data = weight[row:row + base.out_features]
            row += base.out_features
        sizes, lora = [b.out_features for b in bases], []
        for m, names in zip(modules, adapters):
            if not names:
                lora.append(None)
                continue
            first, layout, bts = row, [], []
            for n in names:
                r = m.lora_A[n].weight.shape[0]
                m.lora_A[n].weight.data = weight[row:row + r]
                bts.append(m.lora_B[n].weight.detach().to(dtype).t())
                layout.append((n, row - first, row - first + r, float(m.scaling[n])))
                row += r
            bt = torch.cat(bts)  # (R, out)
            column = 0
            for n, b in zip(names, bts):
                m.lora_B[n].weight.data = bt[column:column + b.shape[0]].t()
                column += b.shape[0]
            layout = tuple(layout)
            if layout not in self.tables:
                self.tables[layout] = _scaling_table(layout, dtype)
            sizes.append(row - first)
            lora.append((bt, layout))
        return Group(weight=weight, bias=bias, sizes=sizes, lora=lora)

    @property
    def adapter_names(self) -> set[str]:
        return {name for layout in self.tables for name, *_ in layout}

    def _masks(self, adapters: list[str], T: int = 1) -> dict | None:
        """Per layout: (mask, lo, hi, scaling). ``mask`` (B * T, hi - lo) selects and scales each row's
        adapter columns; columns outside [lo, hi) belong to adapters no row uses and are not computed.
        When every row uses the same adapter (one user: the common case) ``mask`` is None and
        ``scaling`` is that adapter's, applied by the B matmul itself: one operation less per LoRA layer.
        None = every row is on the base model."""
        import torch

        if all(a == self.base_name for a in adapters):
            return None
        one_adapter = all(a == adapters[0] for a in adapters)
        masks = {}
        for layout, (slots, table) in self.tables.items():
            used = [(first, last, scaling) for name, first, last, scaling in layout if name in adapters]
            if not used:
                continue
            lo, hi = min(u[0] for u in used), max(u[1] for u in used)
            if one_adapter:
                masks[layout] = (None, lo, hi, used[0][2])
                continue
            index = torch.tensor([slots.get(a, 0) for a in adapters for _ in range(T)])  # 0 = the all-zero "base" slot
            masks[layout] = (table[:, lo:hi].index_select(0, index), lo, hi, 1.0)
        return masks

    @staticmethod
    def _run(group: Group, x, masks, dense: bool = False):
        """(B, T, sum of the group's outputs) for ``x`` (B, T, in), each row through its own adapter;
        ``dense``: a prompt's weights even for a few tokens (its last layer keeps the prompt's numbers).

        Two-dimensional throughout, and per LoRA layer three kernels (A, the row mask, B added in
        place): a decode step calls this 121 times, so every dispatched operation counts."""
        import torch
        import torch.nn.functional as F

        width = group.width
        x2 = x.reshape(-1, x.shape[-1])  # (B*T, in); a prompt has one row, a decode step one token per row
        packed = group.packed is not None and (group.packed.prompts or (x2.shape[0] <= QUANT_MAX_TOKENS and not dense))
        # one adapter (a prompt, or a batch of one domain) or none: its A rows apart, so the other
        # adapters' A rows are not multiplied (~5% of a prompt's arithmetic with three resident)
        apart = packed or not masks or all(mask is None for mask, *_ in masks.values())
        if packed:  # base rows packed (fp16 or 4-bit); each used adapter's A rows apart, float
            y = group.packed.mm(x2)
            if group.bias is not None:
                y += group.bias[:width]
        elif apart:
            y = F.linear(x2, group.weight[:width], None if group.bias is None else group.bias[:width])
        else:  # base rows and every adapter's A rows in one matmul
            y = F.linear(x2, group.weight, group.bias)
        if masks:
            for i, (column, size, row, (bt, layout)) in enumerate(group.spans):
                used = masks.get(layout)
                if used is None:
                    continue
                mask, lo, hi, scaling = used
                key = (i, lo, hi)
                if key not in group.views:  # the slices of A and B for this set of adapters, made once
                    group.views[key] = (group.weight[row + lo:row + hi].t(), bt[lo:hi])
                a_t, b = group.views[key]
                f = torch.mm(x2, a_t) if apart else y[:, row + lo:row + hi]
                if mask is not None:
                    f = f.mul_(mask) if apart else f * mask
                y[:, column:column + size].addmm_(f, b, alpha=scaling)  # (B*T, r) @ (r, out), in place
        return y[:, :width].view(*x.shape[:-1], width)

    # -- the forward pass ---------------------------------------------------------------------------

    def forward(self, ids, positions, adapters: list[str], cache: KVCache, every_position: bool = False):
        import torch
        import torch.nn.functional as F

        rows, T = ids.shape
        unknown = set(adapters) - self.adapter_names - {self.base_name}
        if unknown:
            self.rebuild()  # an adapter loaded since the last rebuild
            if set(adapters) - self.adapter_names - {self.base_name}:
                raise KeyError(f"adapter(s) not loaded: {sorted(unknown)}")
        masks = self._masks(adapters, T)
        model = self.lm.model
        x = model.embed_tokens(ids)  # (B, T, d)
        cos, sin = model.rotary_emb(x, positions)  # (B, T, D)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # (B, 1, T, D): broadcast over heads
        end, where = cache.step(T)
        prompt = rows == 1 and T > QUANT_MAX_TOKENS  # compute-bound: SDPA's own GQA path
        group_size = self.heads // self.kv_heads
        if prompt:
            attn_mask = torch.ones(T, end, dtype=torch.bool).tril(diagonal=end - T) if end > T else None  # after a cached prefix
        elif rows > 1 or T > 1:
            # (B, 1, T', L): each token sees its row's columns up to its own (causal among a row's new
            # tokens). Additive, built once: a boolean mask is converted inside attention, once per layer
            columns = where[2] if rows > 1 else torch.arange(end - T, end)[None]  # (B, T): each new token's column
            attn_mask = torch.zeros(rows, 1, T, end, dtype=x.dtype).masked_fill_(
                torch.arange(end) > columns[:, None, :, None], float("-inf"))
            if T > 1:  # one row per query head of a KV head (see below)
                attn_mask = attn_mask.unsqueeze(2).expand(rows, 1, group_size, T, end).reshape(rows, 1, group_size * T, end)
        else:
            attn_mask = None  # one row, one new token: it sees everything
        scale = 1.0 / math.sqrt(self.head_dim)
        q_width, kv_width = self.heads * self.head_dim, self.kv_heads * self.head_dim
        for i, layer in enumerate(model.layers):
            group = self.groups[i]
            qkv = self._run(group["qkv"], _rms_norm(x, layer.input_layernorm), masks)
            # RoPE on the queries and keys at once: they are adjacent columns of the fused output
            qk = qkv[..., :q_width + kv_width].view(rows, T, self.heads + self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = (qk * cos + _rotate_half(qk) * sin).split([self.heads, self.kv_heads], dim=1)  # (B, H, T, D)
            v = qkv[..., q_width + kv_width:].view(rows, T, self.kv_heads, self.head_dim).transpose(1, 2)
            cache.write(i, where, k, v)
            keys, values = cache.keys[i][:rows, :, :end], cache.values[i][:rows, :, :end]
            if prompt and i == self.layers - 1 and not every_position:
                # the last layer's keys and values are all kept (later tokens attend to them), but its
                # output only matters at the last token, whose logits are asked for: attention, o and
                # the MLP run for that token alone (~3% of a prompt's arithmetic, same result)
                q, x = q[:, :, -1:], x[:, -1:]
                a = F.scaled_dot_product_attention(q, keys, values, scale=scale, enable_gqa=self.kv_heads != self.heads)
            elif prompt:
                a = F.scaled_dot_product_attention(q, keys, values, attn_mask=attn_mask, is_causal=attn_mask is None,
                                                   scale=scale, enable_gqa=self.kv_heads != self.heads)  # (B, H, T, D)
            else:
                # the query heads sharing a KV head stand in for query positions, (B, H_kv, G * T, D):
                # attention needs no GQA expansion (6x faster on CPU than enable_gqa with a mask)
                a = F.scaled_dot_product_attention(q.reshape(rows, self.kv_heads, group_size * T, self.head_dim), keys, values,
                                                   attn_mask=attn_mask, scale=scale).reshape(rows, self.heads, T, self.head_dim)
            x = x + self._run(group["o"], a.transpose(1, 2).reshape(rows, x.shape[1], -1), masks, dense=prompt)
            gate, up = self._run(group["gate_up"], _rms_norm(x, layer.post_attention_layernorm), masks,
                                 dense=prompt).split(group["gate_up"].sizes[:2], dim=-1)
            x = x + self._run(group["down"], F.silu(gate) * up, masks, dense=prompt)
        cache.advance(T)
        if not every_position:  # the next token's logits only
            x = x[:, -1:]
            if T > 1:
                masks = self._masks(adapters)  # one token per row now
        logits = self._run(self.head, _rms_norm(x, model.norm), masks).float()
        return logits if every_position else logits[:, 0]


def _scaling_table(layout: tuple, dtype):
    """(adapter name -> slot, (slots, R) table): slot 0 is all zeros (no adapter)."""
    import torch

    slots = {name: s + 1 for s, (name, *_) in enumerate(layout)}
    table = torch.zeros(len(layout) + 1, layout[-1][2], dtype=dtype)
    for s, (_, first, last, scaling) in enumerate(layout):
        table[s + 1, first:last] = scaling
    return slots, table


def _rms_norm(x, norm):
    """RMSNorm as the Hugging Face Llama computes it (statistics in float32). A handful of small
    operations here cost less than ``F.rms_norm``'s bf16 path on CPU."""
    import torch

    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps", 1e-6)
    if x.dtype == torch.float32:  # one fused kernel, same result
        return torch.rms_norm(x, norm.weight.shape, norm.weight, eps)
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return norm.weight * h.to(x.dtype)


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

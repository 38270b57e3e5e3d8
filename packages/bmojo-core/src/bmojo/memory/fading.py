"""Mamba-2 style fading memory (spec §1). Parameter names follow Mamba-2 (``in_proj``,
``conv1d``, ``dt_bias``, ``A_log``, ``D``, ``norm``, ``out_proj``) so its weights map one to one."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bmojo.backends.dispatch import causal_conv1d, causal_conv1d_step, gated_rmsnorm, ssm_scan, ssm_step
from bmojo.config import LayerConfig
from bmojo.memory.base import FadingMemory, State


class Mamba2Fading(FadingMemory):
    def __init__(self, cfg: LayerConfig):
        super().__init__()
        self.cfg = cfg
        D, d_in, H = cfg.d_model, cfg.d_inner, cfg.ssm_heads
        G, N = cfg.ssm_groups, cfg.ssm_state_size
        self.conv_dim = d_in + 2 * G * N
        self.in_proj = nn.Linear(D, d_in + self.conv_dim + H, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, cfg.d_conv, groups=self.conv_dim, bias=True)
        # dt log-uniform in [dt_min, dt_max]; the bias is its inverse softplus (as in Mamba-2).
        dt = torch.exp(torch.rand(H) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        dt = dt.clamp(min=1e-4)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))
        self.A_log = nn.Parameter(torch.log(torch.empty(H).uniform_(cfg.A_init_min, cfg.A_init_max)))
        self.D = nn.Parameter(torch.ones(H))
        self.norm_weight = nn.Parameter(torch.ones(d_in))
        self.out_proj = nn.Linear(d_in, D, bias=False)

    def init_state(self, batch, *, device=None, dtype=None) -> State:
        c = self.cfg
        return {
            "conv": torch.zeros(batch, c.d_conv - 1, self.conv_dim, device=device, dtype=dtype),
            "ssm": torch.zeros(batch, c.ssm_heads, c.ssm_head_dim, c.ssm_state_size, device=device, dtype=dtype),
        }

    def _split(self, zxbcdt):
        c = self.cfg
        return torch.split(zxbcdt, [c.d_inner, self.conv_dim, c.ssm_heads], dim=-1)

    def _finish(self, y, z):
        c = self.cfg
        y = gated_rmsnorm(y, z, self.norm_weight, c.norm_eps, group_size=c.d_inner // c.ssm_groups)
        return self.out_proj(y)

    def forward(self, x, state=None, mask=None):
        """``mask`` (batch, T), 1 for a real token, 0 for a leading pad of a row that has not
        started: a pad enters the conv as a zero input and the scan with dt = 0, so a row's state
        after its pads is the zero state it started from (its outputs there are meaningless)."""
        c = self.cfg
        b, T, _ = x.shape
        z, xBC, dt = self._split(self.in_proj(x))
        dt = F.softplus(dt + self.dt_bias)
        if mask is not None:
            m = mask.to(xBC.dtype)[..., None]
            xBC, dt = xBC * m, dt * m
        xBC, conv_state = causal_conv1d(
            xBC, self.conv1d.weight[:, 0], self.conv1d.bias, None if state is None else state["conv"]
        )
        gn = c.ssm_groups * c.ssm_state_size
        xs, B, C = torch.split(xBC, [c.d_inner, gn, gn], dim=-1)
        y, ssm_state = ssm_scan(
            xs.reshape(b, T, c.ssm_heads, c.ssm_head_dim),
            dt,
            -torch.exp(self.A_log),
            B.reshape(b, T, c.ssm_groups, c.ssm_state_size),
            C.reshape(b, T, c.ssm_groups, c.ssm_state_size),
            self.D,
            None if state is None else state["ssm"],
            chunk_size=c.ssm_chunk_size,
        )
        return self._finish(y.reshape(b, T, c.d_inner), z), {"conv": conv_state, "ssm": ssm_state}

    def step(self, x, state):
        c = self.cfg
        b = x.shape[0]
        z, xBC, dt = self._split(self.in_proj(x))
        xBC, conv_state = causal_conv1d_step(xBC, state["conv"], self.conv1d.weight[:, 0], self.conv1d.bias)
        gn = c.ssm_groups * c.ssm_state_size
        xs, B, C = torch.split(xBC, [c.d_inner, gn, gn], dim=-1)
        y, ssm_state = ssm_step(
            state["ssm"],
            xs.reshape(b, c.ssm_heads, c.ssm_head_dim),
            F.softplus(dt + self.dt_bias),
            -torch.exp(self.A_log),
            B.reshape(b, c.ssm_groups, c.ssm_state_size),
            C.reshape(b, c.ssm_groups, c.ssm_state_size),
            self.D,
        )
        return self._finish(y.reshape(b, c.d_inner), z), {"conv": conv_state, "ssm": ssm_state}

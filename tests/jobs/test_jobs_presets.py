"""bmojo.jobs.presets: every architecture of a size is parameter-matched to B'MOJO as closely as a
SwiGLU width in multiples of 8 allows (docs/training.md states the resulting spread)."""

from __future__ import annotations

import dataclasses

import pytest
from bmojo.jobs.presets import ARCHS, SIZES, parameter_count, preset_config

#: the largest relative distance from B'MOJO's count that docs/training.md states, per size
STATED = {"tiny": 0.006, "small": 0.0035}


def _with_ffn(cfg, d_ff):
    return dataclasses.replace(cfg, layers=tuple(dataclasses.replace(layer, d_ff=d_ff) for layer in cfg.layers))


@pytest.mark.parametrize("size", sorted(SIZES))
@pytest.mark.parametrize("arch", [a for a in ARCHS if a != "bmojo"])
def test_each_arch_takes_the_closest_ffn_width(size, arch):
    target = parameter_count(preset_config(size, "bmojo"))
    cfg = preset_config(size, arch)
    got = parameter_count(cfg)
    assert abs(got / target - 1) <= STATED[size], (size, arch, got, target)
    d_ff = cfg.layers[0].ffn_dim
    assert d_ff % 8 == 0 and all(layer.ffn_dim == d_ff for layer in cfg.layers)
    for other in (d_ff - 8, d_ff + 8):  # no neighbouring width is closer
        if other >= 8:
            assert abs(got - target) <= abs(parameter_count(_with_ffn(cfg, other)) - target), (size, arch, other)

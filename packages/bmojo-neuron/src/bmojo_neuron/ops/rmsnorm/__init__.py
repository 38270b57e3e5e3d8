"""rmsnorm / gated_rmsnorm on the NKI kernel: same contracts as ``bmojo.ops.rmsnorm.reference``.

Host side: flatten to (rows, D), pad rows to a multiple of 128 with zeros, widen half precision
to float32 (the reference normalises half precision in float32 too), launch, drop the padding.
"""

from __future__ import annotations

from bmojo.argcheck import TORCH, check_gated_rmsnorm_args, check_rmsnorm_args, fail

from bmojo_neuron.ops._tiles import kernel_dtype, launch, pad_axis, round_up


def _run(x, z, weight, eps, group, gated):
    from bmojo_neuron.ops.rmsnorm.kernel import max_width, rmsnorm_kernel

    Dm = x.shape[-1]
    cd = kernel_dtype("x", x)
    limit = max_width(cd.itemsize, gated)
    if Dm > limit:
        op, dt = "gated_rmsnorm" if gated else "rmsnorm", str(cd).removeprefix("torch.")
        fail("x", f"a last axis of at most {limit} for {op} in {dt} on Neuron (one row tile in SBUF)", Dm)
    if Dm == 0:  # an empty last axis (rmsnorm allows it): nothing to normalise, no launch
        return x.new_zeros(x.shape)
    R = x.numel() // Dm
    Rp = round_up(max(R, 1))
    X = pad_axis(x.to(cd).reshape(R, Dm), 0, 0, Rp - R)
    Z = pad_axis(z.to(cd).reshape(R, Dm), 0, 0, Rp - R) if gated else X[:1]
    (out,) = launch(rmsnorm_kernel, X, weight.to(cd).reshape(1, Dm), Z, float(eps), int(group), bool(gated))
    return out[:R].reshape(x.shape).to(x.dtype)


def rmsnorm(x, weight, eps: float = 1e-6):
    """Same contract as ``bmojo.ops.rmsnorm.reference.rmsnorm``."""
    check_rmsnorm_args(TORCH, x, weight, eps)
    return _run(x, None, weight, eps, x.shape[-1], False)


def gated_rmsnorm(x, z, weight, eps: float = 1e-6, group_size: int | None = None):
    """Same contract as ``bmojo.ops.rmsnorm.reference.gated_rmsnorm``."""
    group = check_gated_rmsnorm_args(TORCH, x, z, weight, group_size, eps=eps)
    return _run(x, z, weight, eps, group, True)


__all__ = ["gated_rmsnorm", "rmsnorm"]

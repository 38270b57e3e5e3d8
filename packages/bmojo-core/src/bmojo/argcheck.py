"""Argument checks for every op and every backend, for any array framework, importable without torch.

Each op's arguments are checked once, here, and the reference ops and every backend call the same
function: ``check_<op>_args(arrays, ...)`` validates and returns the sizes the op needs. Checkers
read only ``.shape``, ``.ndim`` and ``.dtype`` (torch tensors, ``mx.array``, numpy arrays), and
what differs between frameworks (the array type, its dtypes, whether it has a device) comes from
a small :class:`ArrayKind`: :data:`TORCH` for torch tensors (built on first use, so this module
never imports torch), a backend's own for its framework (bmojo-mlx's ``MLX``).

Every failure raises ``ValueError("name: expected …, got …")``: the argument, what was expected,
what was given. Nothing here reshapes or casts.
"""

from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from bmojo.arith import eidetic_snapshot_count
from bmojo.config import EVICTIONS

#: Activations of ``causal_conv1d`` (None = identity).
ACTIVATIONS = (None, "silu")


def fail(name: str, expected: str, actual: object) -> None:
    raise ValueError(f"{name}: expected {expected}, got {actual}")


def check_temperature(name: str, value: object) -> float:
    """A sampling temperature: a finite real number >= 0 (0: greedy), not a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or not value >= 0:
        fail(name, "a finite number >= 0 (0: greedy)", repr(value))
    return float(value)


def check_int(name: str, value: object, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        fail(name, "an int", f"{value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        fail(name, f"an int >= {minimum}", value)
    return value


def check_device_type(flag: str, name: object, others: Sequence[str] = ()) -> str:
    """The device *type* that ``name`` names, as dispatch sees a tensor's (``tensor.device.type``):
    ``"cuda:1"`` is ``"cuda"``. A name torch cannot parse is refused, naming ``flag``, unless it is
    one of ``others`` (device types of other array frameworks, MLX's ``"gpu"``). Whether such a
    device exists here is not checked (``bmojo._checks.check_device`` does that)."""
    if isinstance(name, str) and name in others:
        return name
    try:
        import torch

        return torch.device(name).type
    except (ImportError, RuntimeError, TypeError, ValueError):
        own = sorted({o for o in others if o not in ("cpu", "cuda", "mps")})
        extra = f", or a device type of another array framework ({', '.join(own)})" if own else ""
        raise ValueError(
            f"{flag}: expected a torch device type (cpu, cuda, mps, ...; cuda:1 means cuda){extra}, got {name!r}"
        ) from None


def check_out_dir(folder, flag: str = "--out"):
    """Create ``folder`` (and its parents) and check that a file can be written in it, naming
    ``flag``: a path that is or lies under a file, or one that cannot be created or written, is an
    error. Returns it as a ``Path``. (For commands' output folders; checked before any work.)"""
    import tempfile
    from pathlib import Path

    folder = Path(folder)
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(f"{flag}: expected a path inside a folder, got '{folder}' ('{existing}' is a file)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ValueError(f"{flag}: expected a folder that can be created and written, got '{folder}' ({err})") from None
    return folder


@dataclass(frozen=True)
class ArrayKind:
    """What the checkers need to know about one array framework.

    ``type_name``/``noun`` word the messages ("a torch.Tensor", "a 4-d tensor"); ``half`` are the
    dtypes computed in ``float32``; ``is_integer`` says which dtypes count as integer (positions);
    ``device`` gives an array's device, or is None for a framework without one (MLX).
    """

    array_type: type
    type_name: str
    noun: str
    half: tuple
    float32: Any
    float64: Any
    is_integer: Callable[[Any], bool]
    device: Callable[[Any], Any] | None = None

    @property
    def floating(self) -> tuple:
        return (*self.half, self.float32, self.float64)

    def compute_dtype(self, dtype):
        """Half precision accumulates in float32; float32/64 stay as they are."""
        return self.float32 if dtype in self.half else dtype

    def score_dtype(self, dtype):
        """Ranked scores: float64 for float64 inputs, float32 otherwise (never half precision)."""
        return self.float64 if dtype == self.float64 else self.float32


@functools.cache
def _torch_kind() -> ArrayKind:
    import torch

    return ArrayKind(
        array_type=torch.Tensor,
        type_name="a torch.Tensor",
        noun="tensor",
        half=(torch.float16, torch.bfloat16),
        float32=torch.float32,
        float64=torch.float64,
        is_integer=lambda d: not (d.is_floating_point or d.is_complex or d == torch.bool),
        device=lambda t: t.device,
    )


def __getattr__(name: str) -> Any:
    # ``TORCH`` imports torch when first asked for, never at ``import bmojo.argcheck`` (PEP 562).
    if name == "TORCH":
        return _torch_kind()
    raise AttributeError(f"module 'bmojo.argcheck' has no attribute {name!r}")


def check_layer_states(kind: ArrayKind, what: str, layers, expected, *, error: type[Exception] = ValueError) -> None:
    """Raise ``error`` unless a decode state's ``layers`` (one dict of ``kind``'s arrays per layer)
    have exactly ``expected``'s layers, keys, shapes and dtypes — ``expected`` as the model's
    ``init_state`` makes them. Core's ``DecodeState.check_like`` (torch) and bmojo-mlx's model
    (MLX) both check states with it."""
    if len(layers) != len(expected):
        raise error(f"{what}: expected {len(expected)} layer states, got {len(layers)}")
    for i, (got, want) in enumerate(zip(layers, expected)):
        if not isinstance(got, dict) or set(got) != set(want):
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            raise error(f"{what}.layers[{i}]: expected {kind.noun}s {sorted(want)}, got {keys}")
        for key, t in want.items():
            g = got[key]
            if not isinstance(g, kind.array_type) or tuple(g.shape) != tuple(t.shape) or g.dtype != t.dtype:
                actual = f"{tuple(g.shape)} {g.dtype}" if isinstance(g, kind.array_type) else type(g).__name__
                if isinstance(g, kind.array_type) and tuple(g.shape) == tuple(t.shape):
                    hint = "a state of another dtype than the model's?"
                else:
                    hint = "the state of another model config or batch size?"
                raise error(f"{what}.layers[{i}].{key}: expected {tuple(t.shape)} {t.dtype} ({hint}), got {actual}")


def check_array(
    kind: ArrayKind,
    name: str,
    x: object,
    *,
    ndim: int | None = None,
    shape: Sequence[int | None] | None = None,
    floating: bool | None = True,
    dtype: Any = None,
):
    """Validate an array argument of framework ``kind``; ``None`` entries in ``shape`` are free.
    ``floating``: True (default) a floating dtype, False an integer dtype, None any."""
    if not isinstance(x, kind.array_type):
        fail(name, kind.type_name, type(x).__name__)
    if ndim is None and shape is not None:
        ndim = len(shape)
    if ndim is not None and x.ndim != ndim:
        fail(name, f"a {ndim}-d {kind.noun}", f"shape {tuple(x.shape)} ({x.ndim}-d)")
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, x.shape)):
            if want is not None and want != got:
                want_s = tuple("*" if s is None else s for s in shape)
                fail(name, f"shape {want_s} (axis {axis} = {want})", f"shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        fail(name, f"dtype {dtype}", x.dtype)
    if floating is True and x.dtype not in kind.floating:
        fail(name, f"a floating-point {kind.noun}", x.dtype)
    if floating is False and not kind.is_integer(x.dtype):
        fail(name, f"an integer {kind.noun}", x.dtype)
    return x


def check_same(kind: ArrayKind, name: str, x, ref_name: str, ref) -> None:
    """Arrays that are combined must agree in dtype (and device, where the framework has one);
    we never cast silently."""
    if x.dtype != ref.dtype:
        fail(name, f"dtype {ref.dtype} (same as {ref_name})", x.dtype)
    if kind.device is not None and kind.device(x) != kind.device(ref):
        fail(name, f"device {kind.device(ref)} (same as {ref_name})", kind.device(x))


# ---------------------------------------------------------------------------------------------
# Per-op checks: the arguments of ``bmojo.ops.<op>``, in its names and order.


class AttentionSizes(NamedTuple):
    b: int
    T: int
    H: int
    Dh: int
    Hkv: int


def check_bmojo_attention_args(
    kind: ArrayKind, q, k, v, kf, vf, ek, ev, epos, q_start, window, fading_window, eidetic_chunk
) -> AttentionSizes:
    """Arguments of ``bmojo_attention`` (shapes in ``bmojo.ops.bmojo_attention.reference``)."""
    check_array(kind, "q", q, ndim=4)
    b, T, H, Dh = q.shape
    if T == 0:
        fail("q", "at least one query (T >= 1)", f"shape {tuple(q.shape)}")
    if Dh == 0:  # the default scale is 1/sqrt(Dh)
        fail("q", "a head size >= 1", f"shape {tuple(q.shape)}")
    check_array(kind, "k", k, ndim=4)
    Tk, Hkv = k.shape[1], k.shape[2]
    check_array(kind, "k", k, shape=(b, None, None, Dh))
    check_array(kind, "v", v, shape=tuple(k.shape))
    if Tk < T:
        fail("k", f"at least as many keys as queries ({T}); keys end at the last query", Tk)
    if Hkv == 0 or H % Hkv:
        fail("k", f"a kv-head count dividing the query heads {H}", Hkv)
    for name, t in (("k", k), ("v", v)):
        check_same(kind, name, t, "q", q)
    check_int("q_start", q_start, minimum=0)
    check_int("window", window, minimum=1)
    check_int("fading_window", fading_window, minimum=0)
    if (kf is None) != (vf is None):
        fail("vf", "given exactly when kf is given", "one of kf/vf missing")
    if fading_window > 0 and kf is None:
        fail("kf", "fading keys when fading_window > 0", None)
    if kf is not None:
        check_array(kind, "kf", kf, shape=(b, None, Hkv, Dh))
        check_array(kind, "vf", vf, shape=tuple(kf.shape))
        check_same(kind, "kf", kf, "q", q)
        check_same(kind, "vf", vf, "q", q)
    given = [t is not None for t in (ek, ev, epos)]
    if any(given) and not all(given):
        fail("ek/ev/epos", "all three or none", f"given: {given}")
    if ek is not None:
        if eidetic_chunk is None:
            fail("eidetic_chunk", "the chunk size when eidetic memory is given", None)
        check_int("eidetic_chunk", eidetic_chunk, minimum=1)
        S = eidetic_snapshot_count(q_start, T, eidetic_chunk)
        check_array(kind, "ek", ek, shape=(b, S, None, Hkv, Dh))
        check_array(kind, "ev", ev, shape=tuple(ek.shape))
        check_array(kind, "epos", epos, shape=tuple(ek.shape[:3]), floating=False)
        check_same(kind, "ek", ek, "q", q)
        check_same(kind, "ev", ev, "q", q)
        if kind.device is not None and kind.device(epos) != kind.device(q):  # integer: dtype is its own
            fail("epos", f"device {kind.device(q)} (same as q)", kind.device(epos))
    return AttentionSizes(b, T, H, Dh, Hkv)


def check_causal_conv1d_args(kind: ArrayKind, x, weight, bias, state, activation, *, step: bool) -> int:
    """Arguments of ``causal_conv1d`` (``step=False``, ``state`` = initial_state) or
    ``causal_conv1d_step`` (``step=True``); returns the kernel width K."""
    check_array(kind, "x", x, ndim=2 if step else 3)
    if not step and x.shape[1] == 0:  # as bmojo_attention: an empty sequence is refused, by name
        fail("x", "at least one token (T >= 1)", f"shape {tuple(x.shape)}")
    channels = x.shape[-1]
    check_array(kind, "weight", weight, shape=(channels, None))
    K = weight.shape[1]
    if K < 1:
        fail("weight", "a kernel width >= 1", K)
    check_same(kind, "weight", weight, "x", x)
    if bias is not None:
        check_array(kind, "bias", bias, shape=(channels,))
        check_same(kind, "bias", bias, "x", x)
    if state is not None:
        check_array(kind, "state", state, shape=(x.shape[0], K - 1, channels))
        check_same(kind, "state", state, "x", x)
    if activation not in ACTIVATIONS:
        fail("activation", f"one of {ACTIVATIONS}", repr(activation))
    return K


class ScanSizes(NamedTuple):
    b: int
    H: int
    P: int
    G: int
    N: int


def check_ssm_scan_args(kind: ArrayKind, x, dt, A, B, C, D, state, *, step: bool) -> ScanSizes:
    """Arguments of ``ssm_scan`` (``step=False``, ``state`` = initial_state) or ``ssm_step``
    (``step=True``)."""
    lead = 1 if step else 2  # (b,) for a step, (b, T) for a scan
    check_array(kind, "x", x, ndim=lead + 2)
    if not step and x.shape[1] == 0:  # as bmojo_attention: an empty sequence is refused, by name
        fail("x", "at least one token (T >= 1)", f"shape {tuple(x.shape)}")
    b = x.shape[0]
    H, P = x.shape[-2:]
    seq = tuple(x.shape[1:2]) if not step else ()
    check_array(kind, "dt", dt, shape=(b, *seq, H))
    check_array(kind, "A", A, shape=(H,))
    check_array(kind, "B", B, ndim=lead + 2)
    G, N = B.shape[-2:]
    check_array(kind, "B", B, shape=(b, *seq, G, N))
    check_array(kind, "C", C, shape=(b, *seq, G, N))
    if G == 0 or H % G:
        fail("B", f"a group count dividing the head count {H}", G)
    for name, t in (("dt", dt), ("A", A), ("B", B), ("C", C)):
        check_same(kind, name, t, "x", x)
    if D is not None:
        check_array(kind, "D", D, shape=(H,))
        check_same(kind, "D", D, "x", x)
    if state is not None:
        name = "state" if step else "initial_state"
        check_array(kind, name, state, shape=(b, H, P, N))
        check_same(kind, name, state, "x", x)
    return ScanSizes(b, H, P, G, N)


def check_eps(eps) -> None:
    if not eps > 0:
        fail("eps", "a positive float", eps)


def check_rmsnorm_args(kind: ArrayKind, x, weight, eps) -> None:
    """Arguments of ``rmsnorm``."""
    check_array(kind, "x", x)
    check_array(kind, "weight", weight, shape=(x.shape[-1],))
    check_same(kind, "weight", weight, "x", x)
    check_eps(eps)


def check_gated_rmsnorm_args(kind: ArrayKind, x, z, weight, group_size, *, eps) -> int:
    """Arguments of ``gated_rmsnorm``; returns the group width (the last axis when ``group_size``
    is None). ``eps`` must be positive, as ``rmsnorm``'s (keyword-only: it was added after the
    others, and a positional call written for the old signature must fail, not shift)."""
    check_array(kind, "x", x)
    check_array(kind, "z", z, shape=tuple(x.shape))
    check_same(kind, "z", z, "x", x)
    width = x.shape[-1]
    check_array(kind, "weight", weight, shape=(width,))
    if width == 0:  # groups of zero width do not exist (rmsnorm takes an empty last axis)
        fail("x", "a last axis >= 1 (gated_rmsnorm normalises groups of it)", f"shape {tuple(x.shape)}")
    group = width if group_size is None else group_size
    if isinstance(group, bool) or not isinstance(group, int) or group < 1 or width % group:
        fail("group_size", f"a divisor of the last axis ({width})", group_size)
    check_eps(eps)
    return group


def check_innovation_scores_args(kind: ArrayKind, k, k_pred) -> None:
    """Arguments of ``innovation_scores``."""
    check_array(kind, "k", k, ndim=4)
    check_array(kind, "k_pred", k_pred, shape=tuple(k.shape))
    check_same(kind, "k_pred", k_pred, "k", k)


class SelectSizes(NamedTuple):
    b: int
    T: int
    M: int
    r: int  # start % chunk: scores pending from the incomplete chunk before ``start``


def check_eidetic_select_args(
    kind: ArrayKind, scores, mem_pos, mem_score, pending, *, start, chunk, per_chunk, eviction
) -> SelectSizes:
    """Arguments of ``eidetic_select``."""
    check_array(kind, "scores", scores, ndim=2)
    b, T = scores.shape
    check_int("start", start, minimum=0)
    check_int("chunk", chunk, minimum=1)
    check_int("per_chunk", per_chunk, minimum=1)
    if eviction not in EVICTIONS:
        fail("eviction", f"one of {EVICTIONS}", repr(eviction))
    check_array(kind, "mem_pos", mem_pos, ndim=2, floating=False)
    M = mem_pos.shape[1]
    if mem_pos.shape[0] != b:
        fail("mem_pos", f"batch {b} (same as scores)", mem_pos.shape[0])
    check_array(kind, "mem_score", mem_score, shape=(b, M))
    r = start % chunk
    check_array(kind, "pending", pending, shape=(b, r))
    if per_chunk > min(chunk, M):
        fail("per_chunk", f"at most min(chunk={chunk}, capacity={M})", per_chunk)
    return SelectSizes(b, T, M, r)

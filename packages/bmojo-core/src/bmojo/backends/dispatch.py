"""The ops as ``torch.library`` custom ops that dispatch through the backend registry.

Every op of ``bmojo.backends.OPS`` is ``bmojo::<op>``: one opaque node to ``torch.compile`` (no
graph break at an op boundary), with a fake (meta) implementation for tracing and, for
differentiable ops, an autograd formula — all registered here, in core, once. Its kernel asks the registry which backend
runs the op for the input's device *at call time* (``use_backend``/``BMOJO_BACKEND`` or implicit
priority), so a compiled model follows the selection too.

Backward: ``bmojo::<op>_backward`` (itself a custom op, so compiled training traces it as one
node) recomputes the forward of the selected implementation under autograd and differentiates it
(``OpImpl.differentiable``; otherwise the reference is recomputed), unless the backend supplies an
explicit ``OpImpl.backward``. The recompute costs one extra forward per op in the backward pass and
keeps only the op's inputs alive between forward and backward; an explicit backward pays no
recompute, and with ``OpImpl.backward_outputs`` autograd keeps the forward's outputs for it too.

The functions exported here take the same arguments as the reference ops (``bmojo.ops``); the layer and
memories call these. ``bmojo.ops`` itself keeps exporting the plain reference functions. Plain
eager calls skip the custom-op dispatcher when they need no autograd, or when the selected kernel
is differentiable by torch itself (then eager training pays no forward recompute); same selection,
same kernel (see ``_call`` and docs/backends.md for the measured overhead).
"""

import contextlib
import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from bmojo.backends.registry import REFERENCE, BackendOpError, get_registry, pinned_backend
from bmojo.backends.spec import OPS, _resolve

Tensor = torch.Tensor
OptTensor = torch.Tensor | None


# ----- signatures (the custom-op schemas are inferred from these) -----
def _sig_ssm_scan(
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: OptTensor = None,
    initial_state: OptTensor = None,
    *,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor]: ...


def _sig_ssm_step(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: OptTensor = None
) -> tuple[Tensor, Tensor]: ...


def _sig_causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: OptTensor = None,
    initial_state: OptTensor = None,
    activation: str | None = "silu",
) -> tuple[Tensor, Tensor]: ...


def _sig_causal_conv1d_step(
    x: Tensor, state: Tensor, weight: Tensor, bias: OptTensor = None, activation: str | None = "silu"
) -> tuple[Tensor, Tensor]: ...


def _sig_bmojo_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    kf: OptTensor = None,
    vf: OptTensor = None,
    ek: OptTensor = None,
    ev: OptTensor = None,
    epos: OptTensor = None,
    *,
    q_start: int = 0,
    window: int,
    fading_window: int = 0,
    eidetic_chunk: int | None = None,
    scale: float | None = None,
    block_size: int = 64,
    fading_offset: int | None = None,
) -> tuple[Tensor, Tensor]: ...


def _sig_innovation_scores(k: Tensor, k_pred: Tensor) -> Tensor: ...


def _sig_eidetic_select(
    scores: Tensor,
    mem_pos: Tensor,
    mem_score: Tensor,
    pending: Tensor,
    *,
    start: int,
    chunk: int,
    per_chunk: int,
    eviction: str = "lowest",
) -> tuple[Tensor, Tensor, Tensor, Tensor]: ...


def _sig_rmsnorm(x: Tensor, weight: Tensor, eps: float = 1e-6) -> Tensor: ...


def _sig_gated_rmsnorm(
    x: Tensor, z: Tensor, weight: Tensor, eps: float = 1e-6, group_size: int | None = None
) -> Tensor: ...


# ----- fake (meta) implementations: shapes and dtypes only -----
def _score_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fake_ssm_scan(x, dt, A, B, C, D=None, initial_state=None, *, chunk_size=64):
    b, _, H, P = x.shape
    return x.new_empty(x.shape), x.new_empty(b, H, P, B.shape[-1])


def _fake_ssm_step(state, x, dt, A, B, C, D=None):
    return x.new_empty(x.shape), state.new_empty(state.shape, dtype=x.dtype)


def _fake_causal_conv1d(x, weight, bias=None, initial_state=None, activation="silu"):
    b, _, ch = x.shape
    return x.new_empty(x.shape), x.new_empty(b, weight.shape[1] - 1, ch)


def _fake_causal_conv1d_step(x, state, weight, bias=None, activation="silu"):
    return x.new_empty(x.shape), x.new_empty(state.shape)


def _fake_bmojo_attention(q, k, v, kf=None, vf=None, ek=None, ev=None, epos=None, **_):
    b, T, H, _ = q.shape
    cd = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    return q.new_empty(q.shape), q.new_empty(b, H, T, dtype=cd)


def _fake_innovation_scores(k, k_pred):
    return k.new_empty(k.shape[:2], dtype=_score_dtype(k.dtype))


def _fake_eidetic_select(scores, mem_pos, mem_score, pending, *, start, chunk, per_chunk, eviction="lowest"):
    b, T = scores.shape
    M = mem_pos.shape[1]
    completed = (start + T) // chunk - start // chunk
    crossed = (start + T - 1) // chunk - start // chunk
    S = 1 + max(0, min(completed, crossed))
    return (
        mem_pos.new_empty(b, S, M),
        mem_pos.new_empty(b, M),
        scores.new_empty(b, M),
        scores.new_empty(b, (start + T) % chunk),
    )


def _fake_norm(x, *args, **kwargs):
    return x.new_empty(x.shape)


# ----- op table -----
@dataclass
class OpDef:
    name: str
    sig: Callable
    fake: Callable
    differentiable: bool
    signature: inspect.Signature = None  # type: ignore[assignment]
    tensor_params: tuple[int, ...] = ()  # indices of Tensor / Tensor? parameters
    n_positional: int = 0
    op: object = None
    backward_op: object = None

    def split(self, bound: inspect.BoundArguments) -> tuple[list, dict]:
        names = list(self.signature.parameters)
        values = [bound.arguments[n] for n in names]
        return values[: self.n_positional], dict(zip(names[self.n_positional :], values[self.n_positional :]))


_DEFS: dict[str, OpDef] = {}
_REFERENCE_FNS: dict[str, Callable] = {}


@functools.cache
def _load(target):
    return _resolve(target)


def _device_type(values) -> str:
    for v in values:
        if isinstance(v, torch.Tensor):
            return v.device.type
    return "cpu"


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _finish(out, inputs):
    """Outputs of a custom op may not alias its inputs or each other, and must be contiguous like
    the fake's; a backend returning a view or an input gets a copy (cheap, and only then)."""
    single = isinstance(out, torch.Tensor)
    outs = (out,) if single else tuple(out)
    seen = {_storage(t) for t in inputs if isinstance(t, torch.Tensor)}
    fixed = []
    for o in outs:
        if _storage(o) in seen or o.storage_offset() != 0:
            o = o.clone(memory_format=torch.contiguous_format)
        o = o.contiguous()
        seen.add(_storage(o))
        fixed.append(o)
    return fixed[0] if single else (fixed if isinstance(out, list) else tuple(fixed))


def _reference(name: str) -> Callable:
    fn = _REFERENCE_FNS.get(name)
    if fn is None:
        from bmojo.backends.reference import REFERENCE_TARGETS

        fn = _REFERENCE_FNS[name] = _load(REFERENCE_TARGETS[name])
    return fn


# ----- running a backend: failures and outputs are attributed to it -----
def _meta(v):
    return v.detach().to("meta") if isinstance(v, torch.Tensor) else v


def _describe(t) -> str:
    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    return f"shape {tuple(t.shape)} {t.dtype} on {t.device}"


#: Input signatures whose outputs were already checked, per (op, backend): output shapes and
#: dtypes are functions of the input shapes, so each signature is checked once.
_CHECKED: set[tuple] = set()


def _signature(d: "OpDef", backend: str, pos, kw) -> tuple:
    return (
        d.name,
        backend,
        tuple((tuple(v.shape), v.dtype, v.device) if isinstance(v, torch.Tensor) else v for v in pos),
        tuple(kw.items()),
    )


def _check_outputs(d: "OpDef", backend: str, out, pos, kw) -> None:
    """Compare a backend's outputs with the op's declared outputs (its fake implementation run on
    meta tensors): count, type, shape, dtype and device. Errors name the backend and the op."""
    key = _signature(d, backend, pos, kw)
    if key in _CHECKED:
        return
    with torch.no_grad():
        want = d.fake(*[_meta(v) for v in pos], **kw)
    want = (want,) if isinstance(want, torch.Tensor) else tuple(want)
    got = (out,) if isinstance(out, torch.Tensor) else (tuple(out) if isinstance(out, (tuple, list)) else (out,))
    where = f"bmojo backend {backend!r} returned a bad output from {d.name}"
    if len(got) != len(want):
        raise BackendOpError(f"{where}: expected {len(want)} output tensor(s), got {len(got)}")
    device = next((v.device for v in pos if isinstance(v, torch.Tensor)), None)
    for i, (g, w) in enumerate(zip(got, want)):
        if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(w.shape) or g.dtype != w.dtype:
            raise BackendOpError(f"{where}: output {i}: expected shape {tuple(w.shape)} {w.dtype}, got {_describe(g)}")
        if device is not None and g.device != device:
            raise BackendOpError(f"{where}: output {i}: expected device {device}, got {g.device}")
    if len(_CHECKED) > 4096:
        _CHECKED.clear()
    _CHECKED.add(key)


def _run(d: "OpDef", backend: str, fn: Callable, pos, kw):
    """Call a backend's implementation. The reference is trusted; any other backend's exception
    becomes a :class:`BackendOpError` naming the backend and the op, and its outputs are checked."""
    if backend == REFERENCE:
        return fn(*pos, **kw)
    try:
        out = fn(*pos, **kw)
    except KeyboardInterrupt:
        raise
    except BaseException as err:  # a kernel's sys.exit() is the backend's failure, not the process's end
        raise BackendOpError(f"bmojo backend {backend!r} failed in {d.name}: {type(err).__name__}: {err}") from err
    _check_outputs(d, backend, out, pos, kw)
    return out


def resolve(name: str, device_type: str) -> tuple[str, Callable]:
    """(backend name, implementation) that ``name`` runs on ``device_type`` now (importing it: a
    target that fails to import is handled by :meth:`~bmojo.backends.registry.Registry.implementation`)."""
    backend, _, fn = get_registry().implementation(name, device_type)
    return backend, fn


def _make_kernel(d: OpDef):
    def kernel(*args, **kwargs):
        bound = d.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        pos, kw = d.split(bound)
        backend, _, fn = get_registry().implementation(d.name, _device_type(pos))
        return _finish(_run(d, backend, fn, pos, kw), pos)

    return kernel


def _autograd_on():
    """Grad mode plus the autograd dispatch key, which the dispatcher excludes inside a custom op's
    kernel (the backward op is one; its recompute needs a graph)."""
    stack = contextlib.ExitStack()
    guard = getattr(torch._C, "_SetExcludeDispatchKeyGuard", None)
    if guard is not None:
        stack.enter_context(guard(torch._C.DispatchKey.AutogradFunctionality, False))
    stack.enter_context(torch.enable_grad())
    return stack


def _recompute_grads(fn, d: OpDef, grads, needs, pos, kw):
    pos = list(pos)
    wrt = []
    for j, i in enumerate(d.tensor_params):
        t = pos[i]
        if t is not None:
            t = t.detach()
            if needs[j]:
                t.requires_grad_(True)
                wrt.append(t)
            pos[i] = t
    with _autograd_on():
        outs = fn(*pos, **kw)
    outs = (outs,) if isinstance(outs, torch.Tensor) else tuple(outs)
    pairs = [(o, g) for o, g in zip(outs, grads) if isinstance(o, torch.Tensor) and o.requires_grad]
    if pairs and wrt:
        got = torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
    else:
        got = [None] * len(wrt)
    it = iter(got)
    return [next(it) if (needs[j] and pos[i] is not None) else None for j, i in enumerate(d.tensor_params)]


def _forward_outputs(d: OpDef, backend: str, fn, outs, pos, kw) -> list:
    """The forward's outputs for a backward that takes them: those autograd kept, or, where none
    were kept (a compiled graph traced with a backend that did not ask for them), ``fn`` again."""
    if len(outs):
        return list(outs)
    with torch.no_grad():
        out = _run(d, backend, fn, pos, kw)
    return [out] if isinstance(out, torch.Tensor) else list(out)


def _make_backward_kernel(d: OpDef):
    def kernel(grads, needs, outs, *args, **kwargs):
        bound = d.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        pos, kw = d.split(bound)
        # implementation() imports the explicit backward with fn: a failure is attributed there.
        backend, impl, fn = get_registry().implementation(d.name, _device_type(pos))
        explicit = impl.backward
        if explicit is not None:
            extra = [_forward_outputs(d, backend, fn, outs, pos, kw)] if impl.backward_outputs else []
            try:
                res = list(get_registry().loaded(explicit)(list(grads), list(needs), *extra, *pos, **kw))
            except Exception as err:
                raise BackendOpError(
                    f"bmojo backend {backend!r} failed in the backward of {d.name}: {type(err).__name__}: {err}"
                ) from err
            if len(res) != len(d.tensor_params):
                raise BackendOpError(
                    f"bmojo backend {backend!r}: the backward of {d.name} returned {len(res)} gradients, "
                    f"expected {len(d.tensor_params)} (one per tensor argument)"
                )
            for j, i in enumerate(d.tensor_params):
                g, t = res[j], pos[i]
                if needs[j] and t is not None and g is not None:
                    if not isinstance(g, torch.Tensor) or tuple(g.shape) != tuple(t.shape):
                        raise BackendOpError(
                            f"bmojo backend {backend!r}: the backward of {d.name} returned gradient {j} with "
                            f"{_describe(g)}, expected shape {tuple(t.shape)}"
                        )
        else:
            fn = fn if impl.differentiable else _reference(d.name)
            res = _recompute_grads(fn, d, grads, needs, pos, kw)
        out = []
        for j, i in enumerate(d.tensor_params):
            t = pos[i]
            if needs[j] and t is not None:
                g = res[j]
                out.append(torch.zeros_like(t) if g is None else g.to(t.dtype).contiguous())
            else:
                out.append(pos[0].new_empty(0))
        return _finish(out, [*grads, *outs, *pos])

    return kernel


def _make_backward_fake(d: OpDef):
    def fake(grads, needs, outs, *args, **kwargs):
        bound = d.signature.bind(*args, **kwargs)
        pos = [bound.arguments.get(n) for n in list(d.signature.parameters)[: d.n_positional]]
        ref = pos[0]
        return [
            pos[i].new_empty(pos[i].shape) if (needs[j] and pos[i] is not None) else ref.new_empty(0)
            for j, i in enumerate(d.tensor_params)
        ]

    return fake


def _register_autograd(d: OpDef):
    names = list(d.signature.parameters)
    tensor_set = set(d.tensor_params)

    # The dispatcher passes keyword-only arguments separately and wants gradients for the
    # positional ones only (all our tensors are positional).
    def setup_context(ctx, inputs, output, keyword_only_inputs=None):
        ctx.others = {i: inputs[i] for i in range(len(inputs)) if i not in tensor_set}
        ctx.kwonly = dict(keyword_only_inputs or {})
        outs = (output,) if isinstance(output, torch.Tensor) else tuple(output)
        ctx.out_meta = [(o.shape, o.dtype, o.device) for o in outs]
        # The backward runs on the backend that ran this forward, not on whatever is selected
        # when backward() is called (the selection may have changed in between).
        try:
            ctx.backend, impl = get_registry().resolve(d.name, _device_type(inputs))
        except Exception:  # tracing with an unavailable selection: the forward raises at run time
            ctx.backend, impl = None, None
        # An explicit backward that takes the outputs gets them kept; no one else pays for that.
        kept = outs if impl is not None and impl.backward is not None and impl.backward_outputs else ()
        ctx.save_for_backward(*[inputs[i] for i in d.tensor_params], *kept)

    def backward(ctx, *grads):
        n = d.n_positional
        # Trailing arguments equal to their defaults are dropped by the dispatcher before autograd
        # sees them, so needs_input_grad may be shorter than the signature (those are None).
        given = len(ctx.needs_input_grad)
        needs = [i < given and bool(ctx.needs_input_grad[i]) for i in d.tensor_params]
        if not any(needs):
            return (None,) * n
        values = [None] * n
        saved = ctx.saved_tensors
        for i, t in zip(d.tensor_params, saved):
            values[i] = t
        kept = list(saved[len(d.tensor_params) :])
        for i, v in ctx.others.items():
            values[i] = v
        grads = [
            torch.zeros(shape, dtype=dtype, device=dev) if g is None else g
            for g, (shape, dtype, dev) in zip(grads, ctx.out_meta)
        ]
        kw = {name: ctx.kwonly[name] for name in names[n:] if name in ctx.kwonly}
        with pinned_backend(ctx.backend):
            res = d.backward_op(grads, needs, kept, *values, **kw)
        out = [None] * n
        for j, i in enumerate(d.tensor_params):
            if needs[j] and values[i] is not None:
                out[i] = res[j]
        return tuple(out)

    torch.library.register_autograd(f"bmojo::{d.name}", backward, setup_context=setup_context)


def _define(name: str, fake: Callable, differentiable: bool) -> OpDef:
    sig = globals()[f"_sig_{name}"]
    d = OpDef(name, sig, fake, differentiable)
    d.signature = inspect.signature(sig)
    params = list(d.signature.parameters.values())
    d.n_positional = sum(p.kind is not inspect.Parameter.KEYWORD_ONLY for p in params)
    d.tensor_params = tuple(i for i, p in enumerate(params) if p.annotation in (Tensor, OptTensor))
    schema = torch.library.infer_schema(sig, mutates_args=())
    d.op = torch.library.custom_op(f"bmojo::{name}", _make_kernel(d), mutates_args=(), schema=schema)
    torch.library.register_fake(f"bmojo::{name}", fake)
    if differentiable:
        # outs: the forward's outputs where the backend's explicit backward takes them, else []
        bschema = "(Tensor[] grads, bool[] needs, Tensor[] outs, " + schema[1:].split(") ->")[0] + ") -> Tensor[]"
        d.backward_op = torch.library.custom_op(
            f"bmojo::{name}_backward", _make_backward_kernel(d), mutates_args=(), schema=bschema
        )
        torch.library.register_fake(f"bmojo::{name}_backward", _make_backward_fake(d))
        _register_autograd(d)
    _DEFS[name] = d
    return d


_define("ssm_scan", _fake_ssm_scan, True)
_define("ssm_step", _fake_ssm_step, True)
_define("causal_conv1d", _fake_causal_conv1d, True)
_define("causal_conv1d_step", _fake_causal_conv1d_step, True)
_define("bmojo_attention", _fake_bmojo_attention, True)
_define("innovation_scores", _fake_innovation_scores, False)
_define("eidetic_select", _fake_eidetic_select, False)
_define("rmsnorm", _fake_norm, True)
_define("gated_rmsnorm", _fake_norm, True)
assert tuple(_DEFS) == OPS


def custom_op(name: str):
    """The ``torch.ops.bmojo.<name>`` overload packet (for ``opcheck`` and tests)."""
    return getattr(torch.ops.bmojo, name)


# ----- the eager fast path -----
#: "auto" (default): plain eager calls that need no autograd skip the custom-op dispatcher and
#: run the selected implementation directly (same kernel, same selection); "always": every call
#: goes through ``torch.ops.bmojo.*``. Read once at import from ``BMOJO_CUSTOM_OPS``.
CUSTOM_OPS_MODE = os.environ.get("BMOJO_CUSTOM_OPS", "auto")
if CUSTOM_OPS_MODE not in ("auto", "always"):
    raise ValueError(f"BMOJO_CUSTOM_OPS: expected 'auto' or 'always', got {CUSTOM_OPS_MODE!r}")
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_registry = get_registry


@contextlib.contextmanager
def custom_ops_always():
    """Route every call through the ``torch.ops.bmojo`` custom ops inside the block (tests)."""
    global CUSTOM_OPS_MODE
    saved, CUSTOM_OPS_MODE = CUSTOM_OPS_MODE, "always"
    try:
        yield
    finally:
        CUSTOM_OPS_MODE = saved


# ----- autocast -----
#: What each op computes in inside a ``torch.autocast`` region, following torch's own policy
#: (matmul-like ops in the autocast dtype, normalisations and recurrences in float32):
#: "lower" = the region's dtype (``torch.get_autocast_dtype``), "float32" = float32. Every
#: floating input of the op (parameters included) is cast to that one dtype, since every op's
#: contract wants its inputs in one dtype; outside autocast nothing is ever cast.
AUTOCAST_POLICY = {
    "ssm_scan": "float32",  # a recurrence over the whole sequence: decays stay exact (Mamba does the same)
    "ssm_step": "float32",  # the decode state is a float32 buffer under autocast
    "causal_conv1d": "lower",
    "causal_conv1d_step": "lower",
    "bmojo_attention": "lower",  # like scaled_dot_product_attention; kernels accumulate in float32
    "innovation_scores": "float32",  # scores are compared to select tokens
    "eidetic_select": "float32",
    "rmsnorm": "float32",  # like layer_norm
    "gated_rmsnorm": "float32",
}
assert tuple(AUTOCAST_POLICY) == OPS


def _autocast_args(name: str, args: tuple) -> tuple:
    """``args`` cast by :data:`AUTOCAST_POLICY` when autocast is on for their device, else as given."""
    device = next((t.device.type for t in args if isinstance(t, torch.Tensor)), None)
    if device is None or not torch.amp.is_autocast_available(device) or not torch.is_autocast_enabled(device):
        return args
    dtype = torch.float32 if AUTOCAST_POLICY[name] == "float32" else torch.get_autocast_dtype(device)
    return tuple(
        t.to(dtype) if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dtype else t for t in args
    )


def _call(name: str, args: tuple, kwargs: dict):
    """Run op ``name``: directly when nothing needs the custom op, else through
    ``torch.ops.bmojo.<name>``, which is what torch.compile, FakeTensor and opcheck see.

    "Directly" means eager mode, plain tensors, no torch function/dispatch mode active, and either
    no input needing a gradient or an implementation torch can differentiate itself with no
    explicit backward (or with ``OpImpl.eager_autograd``). In that last case eager autograd records
    the kernel's own graph, which gives the same gradients as the custom op's backward without
    recomputing the forward.
    Inside ``torch.autocast`` the inputs are first cast by :data:`AUTOCAST_POLICY`.
    """
    args = _autocast_args(name, args)
    if CUSTOM_OPS_MODE == "auto" and not torch.compiler.is_compiling():
        grad = torch.is_grad_enabled()
        device = None
        needs_grad = False
        for t in args:
            if t is None or not isinstance(t, torch.Tensor):
                continue
            if type(t) not in _PLAIN:
                break
            needs_grad = needs_grad or (grad and t.requires_grad)
            if device is None:
                device = t.device.type
        else:
            if not torch._C._len_torch_function_stack() and not torch._C._len_torch_dispatch_stack():
                backend, impl, fn = _registry().implementation(name, device or "cpu")
                if not needs_grad or (impl.differentiable and (impl.backward is None or impl.eager_autograd)):
                    return _run(_DEFS[name], backend, fn, args, kwargs)
    return getattr(torch.ops.bmojo, name)(*args, **kwargs)


# ----- public entry points (same signatures as the reference ops) -----
def ssm_scan(x, dt, A, B, C, D=None, initial_state=None, *, chunk_size=64):
    return _call("ssm_scan", (x, dt, A, B, C, D, initial_state), {"chunk_size": chunk_size})


def ssm_step(state, x, dt, A, B, C, D=None):
    return _call("ssm_step", (state, x, dt, A, B, C, D), {})


def causal_conv1d(x, weight, bias=None, initial_state=None, activation="silu"):
    return _call("causal_conv1d", (x, weight, bias, initial_state, activation), {})


def causal_conv1d_step(x, state, weight, bias=None, activation="silu"):
    return _call("causal_conv1d_step", (x, state, weight, bias, activation), {})


def bmojo_attention(
    q,
    k,
    v,
    kf=None,
    vf=None,
    ek=None,
    ev=None,
    epos=None,
    *,
    q_start=0,
    window,
    fading_window=0,
    eidetic_chunk=None,
    scale=None,
    block_size=64,
    fading_offset=None,
):
    kw = {
        "q_start": q_start,
        "window": window,
        "fading_window": fading_window,
        "eidetic_chunk": eidetic_chunk,
        "scale": None if scale is None else float(scale),
        "block_size": block_size,
        "fading_offset": fading_offset,
    }
    return _call("bmojo_attention", (q, k, v, kf, vf, ek, ev, epos), kw)


def innovation_scores(k, k_pred):
    """No gradient by definition (selection is discrete): inputs are detached."""
    return _call("innovation_scores", (k.detach(), k_pred.detach()), {})


def eidetic_select(scores, mem_pos, mem_score, pending, *, start, chunk, per_chunk, eviction="lowest"):
    kw = {"start": start, "chunk": chunk, "per_chunk": per_chunk, "eviction": eviction}
    return _call("eidetic_select", (scores.detach(), mem_pos, mem_score.detach(), pending.detach()), kw)


def rmsnorm(x, weight, eps=1e-6):
    return _call("rmsnorm", (x, weight, float(eps)), {})


def gated_rmsnorm(x, z, weight, eps=1e-6, group_size=None):
    return _call("gated_rmsnorm", (x, z, weight, float(eps), group_size), {})


__all__ = [*OPS, "REFERENCE", "custom_op", "custom_ops_always", "resolve"]

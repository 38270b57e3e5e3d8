"""The standard conformance tests, as a base class.

``test_conformance.py`` in this package subclasses it as-is; a backend may also subclass it in its
own test tree. A subclass that overrides or removes a standard test must list it in
``deviations = {"test_name": "reason"}`` — otherwise defining the class raises ``TypeError`` and
the suite fails to collect. Those declared changes are listed in the summary.

Every test calls the op through the public dispatch (the ``torch.ops.bmojo`` custom op) with the
backend selected explicitly, and asserts the backend really served it; the reference is called
directly. A backend on another array framework (``Backend.framework``, e.g. MLX) gets the same
inputs through its declared converters and is called through ``bmojo.backends.arrays`` (see
:mod:`.arrays`); the torch-only tests (opcheck, the torch layer) skip for it with that reason.
"""

from __future__ import annotations

import contextlib
import math
import re
from typing import ClassVar

import pytest
import torch

from bmojo.backends import BackendOpError, dispatch
from bmojo.testing.conformance.cases import (
    BAD_CASES,
    CASES,
    DIFFERENTIABLE,
    GRAD_CASES,
    LAYER_PRESETS,
    LAYER_SMALL,
    LAYER_SSM,
    OPCHECK_CASES,
    BadCase,
    Case,
    same_layout_copy,
)
from bmojo.testing.conformance.plugin import most_precise_dtype
from bmojo.testing.conformance.tolerances import TOLERANCES

#: Ops each layer preset runs (a block: RMSNorm, mixer, MLP); the test needs one of them provided.
_SSM_OPS = ("ssm_scan", "ssm_step", "causal_conv1d", "causal_conv1d_step", "gated_rmsnorm")
LAYER_OPS = {
    "bmojo": tuple(dispatch.OPS),
    "bmojo_f": (*_SSM_OPS, "bmojo_attention", "rmsnorm"),
    "mamba2": (*_SSM_OPS, "rmsnorm"),
    "swa": ("bmojo_attention", "rmsnorm"),
}


def _ids(cases):
    return [c.id for c in cases]


def _params(cases):
    """One pytest param per case; large cases carry the ``bmojo_large`` marker."""
    return [pytest.param(c, id=c.id, marks=[pytest.mark.bmojo_large] if c.large else []) for c in cases]


# ----- helpers -----
@contextlib.contextmanager
def nan_poisoned_allocations():
    """Fill every floating tensor that torch.empty* allocates with NaN while the op runs, so an
    output element the kernel never writes shows up as NaN instead of stale memory."""
    saved = (torch.empty, torch.empty_like, torch.empty_strided, torch.Tensor.new_empty)

    def poison(t):
        if isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex()) and t.numel():
            with torch.no_grad():
                t.fill_(float("nan"))
        return t

    def wrap(fn):
        def inner(*args, **kwargs):
            return poison(fn(*args, **kwargs))

        return inner

    torch.empty, torch.empty_like, torch.empty_strided = (wrap(f) for f in saved[:3])
    torch.Tensor.new_empty = wrap(saved[3])
    try:
        yield
    finally:
        torch.empty, torch.empty_like, torch.empty_strided, torch.Tensor.new_empty = saved


def _tuple(out):
    return (out,) if isinstance(out, torch.Tensor) else tuple(out)


def assert_matches(actual, expected, tol_atol, tol_rtol, what):
    actual, expected = _tuple(actual), _tuple(expected)
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, reference has {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        name = f"{what}[{i}]"
        if e is None:
            assert a is None, f"{name}: a {type(a).__name__}, reference gives None"
            continue
        assert a is not None, f"{name}: missing (reference gives a tensor)"
        assert tuple(a.shape) == tuple(e.shape), f"{name}: shape {tuple(a.shape)}, reference {tuple(e.shape)}"
        assert a.dtype == e.dtype, f"{name}: dtype {a.dtype}, reference {e.dtype}"
        assert a.device == e.device, f"{name}: device {a.device}, reference {e.device}"
        if not e.is_floating_point():
            assert torch.equal(a, e), f"{name}: integer output differs from the reference"
            continue
        a64, e64 = a.detach().double().cpu(), e.detach().double().cpu()
        if e.numel() == 0:
            continue
        finite = torch.isfinite(e64)
        assert torch.equal(torch.isfinite(a64), finite), f"{name}: non-finite values (NaN: unwritten output?)"
        # where the reference is not finite, the same non-finite value: NaN for NaN, inf of its sign
        assert torch.equal(torch.isnan(a64), torch.isnan(e64)), f"{name}: NaN where the reference has ±inf, or back"
        inf = torch.isinf(e64)
        assert torch.equal(a64[inf], e64[inf]), f"{name}: an infinity of the other sign than the reference's"
        if not finite.any():
            continue
        a64, e64 = a64[finite], e64[finite]
        err = (a64 - e64).abs().max().item()
        bound = tol_atol + tol_rtol * e64.abs().max().item()
        assert err <= bound, f"{name}: max abs error {err:.3e} > {bound:.3e} (atol {tol_atol}, rtol {tol_rtol})"


def _reference(op):
    return dispatch._reference(op)


def _dispatched(op):
    return getattr(dispatch, op)


@contextlib.contextmanager
def _custom_op(backend):
    """The backend selected and every call through ``torch.ops.bmojo.<op>``."""
    with backend.use(), dispatch.custom_ops_always():
        yield


def _clone(args):
    """Copies with the same values and layout (a non-contiguous input stays non-contiguous)."""
    return tuple(same_layout_copy(a) if isinstance(a, torch.Tensor) else a for a in args)


def assert_inputs_unchanged(before, after, op):
    """The op left its inputs as they were (custom ops may not mutate their inputs; an in-place
    state update belongs in a backend's own ``op_`` function, not the registered op)."""
    for i, (b, a) in enumerate(zip(before, after)):
        if isinstance(b, torch.Tensor):
            assert torch.equal(b.cpu(), a.detach().cpu()), f"{op}: argument {i} was modified by the call"


def _assert_served_by(backend, op, device):
    served = dispatch.resolve(op, device)[0]
    assert served == backend.name, f"{op} on {device} was served by {served!r}, not {backend.name!r}"


def _bridge(backend):
    """Converters of a non-torch backend, after checking its framework computes on the device
    under test (the suite never moves a framework's arrays between devices itself)."""
    from bmojo.backends import arrays as array_dispatch
    from bmojo.testing.conformance.arrays import Bridge

    now = array_dispatch.device_type(backend.framework)
    assert now == backend.device, (
        f"--bmojo-device={backend.device}, but {backend.framework} computes on {now!r}; "
        f"pass --bmojo-device={now} or change {backend.framework}'s default device"
    )
    return Bridge(backend.framework)


def _array_call(backend, op, *args, **kwargs):
    """``op`` on the backend's framework arrays, asserting the backend served it."""
    from bmojo.testing.conformance import arrays

    served = arrays.served_by(op, backend.framework, backend.device)
    assert served == backend.name, f"{op} on {backend.framework} arrays was served by {served!r}, not {backend.name!r}"
    return arrays.call(op, backend.framework, *args, **kwargs)


def _custom_op_call(op, args, kwargs):
    with dispatch.custom_ops_always():
        return _dispatched(op)(*args, **kwargs)


def _snapshot(bridge, x):
    """A copy of a tensor (or framework array, as torch) argument; anything else as it is."""
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if bridge is not None and x is not None and not isinstance(x, (str, int, float)):
        return bridge.to_torch(x)
    return x


def _refusal(err: BaseException) -> BaseException | None:
    """The ValueError/TypeError behind ``err``: itself, or the backend's own exception that
    dispatch re-raised as a BackendOpError naming the backend and the op."""
    if isinstance(err, (ValueError, TypeError)):
        return err
    if isinstance(err, BackendOpError) and isinstance(err.__cause__, (ValueError, TypeError)):
        return err.__cause__
    return None


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def _torch_specific(test):
    """Mark a standard test that skips for a backend on another array framework (the plugin does
    not count it among the tests that can run for one)."""
    test._bmojo_torch_only = True
    return test


def _torch_only(backend, what):
    if backend.framework != "torch":
        pytest.skip(f"{what} is torch-specific; backend {backend.name!r} serves {backend.framework} arrays")


class _Guard:
    """Fail the definition of a subclass that overrides or removes a standard test silently.

    What counts is what each standard test name resolves to through the MRO, so a mixin placed
    before :class:`ConformanceSuite`, or any class between it and the subclass, cannot replace a
    test unseen. Declared reasons (``deviations``) are inherited: a subclass of a subclass lists
    its parents' declared overrides too."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        standard = getattr(cls, "_bmojo_standard", None)
        if standard is None:  # the base suite itself
            cls._bmojo_standard = frozenset(n for n in vars(cls) if n.startswith("test_"))
            return
        declared: dict[str, str] = {}
        for klass in reversed(cls.__mro__):  # the nearest class's reason wins
            declared.update(vars(klass).get("deviations", None) or {})
        changed = {n for n in standard if getattr(cls, n, None) is not vars(ConformanceSuite)[n]}
        undeclared = sorted(n for n in changed if n not in declared)
        if undeclared:
            raise TypeError(
                f"{cls.__qualname__} overrides or removes standard conformance tests {undeclared} without a "
                "reason; list each in `deviations = {'test_name': 'why'}` (shown in the summary) or keep it"
            )
        cls._bmojo_overrides = {n: declared[n] for n in sorted(changed)}


class ConformanceSuite(_Guard):
    """Standard tests. Fixtures: ``backend`` (from the plugin), ``bmojo_dtype``, ``bmojo_seed``."""

    deviations: ClassVar[dict[str, str]] = {}

    @pytest.mark.bmojo_conformance
    @pytest.mark.parametrize("case", _params(CASES))
    def test_forward(self, backend, case: Case, bmojo_dtype, bmojo_seed):
        """Forward on fresh random inputs equals the reference; outputs NaN-poisoned before the call."""
        backend.require(case.op)
        dtype = getattr(torch, bmojo_dtype)
        tol = TOLERANCES[bmojo_dtype]
        args, kwargs = case.build(dtype, backend.tensor_device, bmojo_seed)
        expected = _reference(case.op)(*_clone(args), **kwargs)
        if backend.framework != "torch":
            bridge = _bridge(backend)
            arrays = bridge.args(args)
            before = [_snapshot(bridge, x) for x in arrays]
            with backend.use():
                actual = bridge.to_torch(_array_call(backend, case.op, *arrays, **kwargs))
            assert_matches(actual, expected, tol.atol, tol.rtol, case.op)
            assert_inputs_unchanged(before, [_snapshot(bridge, x) for x in arrays], case.op)
            return
        before = _clone(args)
        with backend.use():
            _assert_served_by(backend, case.op, backend.device)
            # Through torch.ops.bmojo.<op> (what compiled and autograd code runs), not the eager fast path.
            with nan_poisoned_allocations(), torch.no_grad(), dispatch.custom_ops_always():
                actual = _dispatched(case.op)(*args, **kwargs)
        assert_matches(actual, expected, tol.atol, tol.rtol, case.op)
        assert_inputs_unchanged(before, args, case.op)

    @pytest.mark.bmojo_conformance
    @pytest.mark.parametrize("case", _params(GRAD_CASES))
    def test_backward(self, backend, case: Case, bmojo_dtype, bmojo_seed, pytestconfig):
        """Gradients of every floating input, for random upstream gradients on every output (for an
        op with an explicit backward and ``eager_autograd``, through both doors)."""
        backend.require(case.op)
        dtype = getattr(torch, bmojo_dtype)
        tol = TOLERANCES[bmojo_dtype]
        args, kwargs = case.build(dtype, backend.tensor_device, bmojo_seed)
        leaves = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor) and a.is_floating_point()]
        gen = torch.Generator().manual_seed(bmojo_seed + 1)
        if backend.framework != "torch":
            self._array_backward(backend, case, args, kwargs, leaves, gen, bmojo_seed, tol)
            return

        def run(fn, ctx):
            xs = list(_clone(args))
            for i in leaves:
                xs[i].requires_grad_(True)
            with ctx:
                outs = _tuple(fn(*xs, **kwargs))
                outs = [o for o in outs if o.is_floating_point() and o.requires_grad]
                ups = [torch.randn(o.shape, generator=gen, dtype=torch.float64).to(o) for o in outs]
                grads = torch.autograd.grad(outs, [xs[i] for i in leaves], ups, allow_unused=True)
            return tuple(g if g is not None else torch.zeros_like(xs[i]) for g, i in zip(grads, leaves))

        gen.manual_seed(bmojo_seed + 1)
        expected = run(_reference(case.op), contextlib.nullcontext())
        gen.manual_seed(bmojo_seed + 1)
        actual = run(_dispatched(case.op), backend.use())
        assert_matches(actual, expected, tol.grad_atol, tol.grad_rtol, f"grad {case.op}")
        impl = backend.status.backend.ops[case.op]
        if impl.backward is not None and impl.eager_autograd and bmojo_dtype == most_precise_dtype(pytestconfig):
            # Two doors to this backend's gradients: eager autograd records fn's own graph (above);
            # the custom op (torch.compile) calls the explicit backward instead — checked too, in
            # the run's most precise dtype only (tightest tolerance): what differs between the
            # doors is argument and output wiring, not arithmetic (every dtype's arithmetic is
            # checked through the first door).
            gen.manual_seed(bmojo_seed + 1)
            actual = run(_dispatched(case.op), _custom_op(backend))
            assert_matches(actual, expected, tol.grad_atol, tol.grad_rtol, f"grad {case.op} (explicit backward)")

    @staticmethod
    def _array_backward(backend, case, args, kwargs, leaves, gen, seed, tol):
        """test_backward for a non-torch framework: the reference's gradients in torch autograd,
        the backend's through its converters' ``vjp``, for the same upstream gradients."""
        bridge = _bridge(backend)
        if bridge.vjp is None:
            pytest.skip(f"backend {backend.name!r} declares no vjp converter for {backend.framework} arrays")
        xs = list(_clone(args))
        for i in leaves:
            xs[i].requires_grad_(True)
        outs = _tuple(_reference(case.op)(*xs, **kwargs))
        picked = [j for j, o in enumerate(outs) if o.is_floating_point() and o.requires_grad]
        gen.manual_seed(seed + 1)
        ups = [torch.randn(outs[j].shape, generator=gen, dtype=torch.float64).to(outs[j]) for j in picked]
        grads = torch.autograd.grad([outs[j] for j in picked], [xs[i] for i in leaves], ups, allow_unused=True)
        expected = tuple(g if g is not None else torch.zeros_like(xs[i]) for g, i in zip(grads, leaves))

        arr = list(bridge.args(args))

        def fn(*leaf_values):
            full = list(arr)
            for i, value in zip(leaves, leaf_values):
                full[i] = value
            result = _array_call(backend, case.op, *full, **kwargs)
            result = tuple(result) if isinstance(result, (tuple, list)) else (result,)
            return [result[j] for j in picked]

        with backend.use():
            _, got = bridge.vjp(fn, [arr[i] for i in leaves], [bridge.to_array(u) for u in ups])
        actual = bridge.to_torch(got)
        assert_matches(actual, expected, tol.grad_atol, tol.grad_rtol, f"grad {case.op}")

    @pytest.mark.bmojo_conformance
    @pytest.mark.parametrize("kind", ["ssm", "conv"])
    def test_step_chain(self, backend, kind, bmojo_dtype, bmojo_seed):
        """Prefill with the sequence op then decode with the step op (both through the backend)
        equals the reference sequence op over all tokens."""
        seq_op, step_op = ("ssm_scan", "ssm_step") if kind == "ssm" else ("causal_conv1d", "causal_conv1d_step")
        backend.require(seq_op, step_op)
        dtype = getattr(torch, bmojo_dtype)
        tol = TOLERANCES[bmojo_dtype]
        T, prefill = 11, 4
        case = next(c for c in CASES if c.op == seq_op and c.name == "base")
        params = dict(case.params, T=T)
        from bmojo.testing.conformance.cases import R

        args, kwargs = case.make(R(torch.Generator().manual_seed(bmojo_seed), dtype, backend.tensor_device), **params)
        y_ref, s_ref = _reference(seq_op)(*args, **kwargs)
        ys = []
        if backend.framework != "torch":
            bridge = _bridge(backend)
            xs = bridge.args(args)
            with backend.use():
                if kind == "ssm":
                    x, dt, A, B, C, D, h0 = xs
                    y, h = _array_call(
                        backend,
                        "ssm_scan",
                        x[:, :prefill],
                        dt[:, :prefill],
                        A,
                        B[:, :prefill],
                        C[:, :prefill],
                        D,
                        h0,
                        **kwargs,
                    )
                    ys.append(bridge.to_torch(y))
                    for t in range(prefill, T):
                        y, h = _array_call(backend, "ssm_step", h, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
                        ys.append(bridge.to_torch(y)[:, None])
                else:
                    x, w, bias, s0, act = xs
                    y, h = _array_call(backend, "causal_conv1d", x[:, :prefill], w, bias, s0, act)
                    ys.append(bridge.to_torch(y))
                    for t in range(prefill, T):
                        y, h = _array_call(backend, "causal_conv1d_step", x[:, t], h, w, bias, act)
                        ys.append(bridge.to_torch(y)[:, None])
                cat = (torch.cat(ys, 1), bridge.to_torch(h))
            assert_matches(cat, (y_ref, s_ref), tol.atol * 10, tol.rtol * 10, f"{kind} prefill+steps")
            return
        with backend.use(), torch.no_grad():
            if kind == "ssm":
                x, dt, A, B, C, D, h0 = args
                y, h = dispatch.ssm_scan(
                    x[:, :prefill], dt[:, :prefill], A, B[:, :prefill], C[:, :prefill], D, h0, **kwargs
                )
                ys.append(y)
                for t in range(prefill, T):
                    y, h = dispatch.ssm_step(h, x[:, t], dt[:, t], A, B[:, t], C[:, t], D)
                    ys.append(y[:, None])
            else:
                x, w, bias, s0, act = args
                y, h = dispatch.causal_conv1d(x[:, :prefill], w, bias, s0, act)
                ys.append(y)
                for t in range(prefill, T):
                    y, h = dispatch.causal_conv1d_step(x[:, t], h, w, bias, act)
                    ys.append(y[:, None])
        assert_matches((torch.cat(ys, 1), h), (y_ref, s_ref), tol.atol * 10, tol.rtol * 10, f"{kind} prefill+steps")

    @_torch_specific
    @pytest.mark.bmojo_conformance
    @pytest.mark.parametrize("case", OPCHECK_CASES, ids=_ids(OPCHECK_CASES))
    def test_opcheck(self, backend, case: Case, bmojo_seed):
        """torch.library.opcheck: schema, autograd registration, fake tensor and AOT dispatch."""
        backend.require(case.op)
        _torch_only(backend, "torch.library.opcheck")
        args, kwargs = case.build(torch.float64, backend.device, bmojo_seed)
        if case.op in DIFFERENTIABLE:
            args = tuple(
                a.requires_grad_(True) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args
            )
        op = dispatch.custom_op(case.op)
        # Same argument normalisation as the public wrappers (the schema wants floats as floats).
        if case.op in ("rmsnorm", "gated_rmsnorm"):
            args = (*args[:3], float(args[3]), *args[4:]) if case.op == "gated_rmsnorm" else (*args[:2], float(args[2]))
        with backend.use():
            _assert_served_by(backend, case.op, backend.device)
            result = torch.library.opcheck(op, args, kwargs)
        failed = {k: v for k, v in result.items() if v != "SUCCESS"}
        assert not failed, f"opcheck: {failed}"

    @pytest.mark.bmojo_conformance
    @pytest.mark.parametrize("bad", BAD_CASES, ids=_ids(BAD_CASES))
    def test_rejects_bad_input(self, backend, bad: BadCase, bmojo_seed, pytestconfig):
        """Inputs the contract refuses (a valid case with one thing spoiled: a shape, a dtype, an
        integer out of range, a missing partner argument) raise ``ValueError`` or ``TypeError``
        naming the argument, as the reference does — for a torch backend, wrapped by dispatch in a
        ``BackendOpError`` naming the backend — and leave every input unchanged. Once, in the run's
        most precise dtype: the checks do not depend on it."""
        backend.require(bad.op)
        dtype = getattr(torch, most_precise_dtype(pytestconfig))
        args, kwargs = bad.build(dtype, backend.tensor_device, bmojo_seed)
        named = re.compile(rf"(?<![\w/]){re.escape(bad.arg)}(?![\w/])")
        with pytest.raises((ValueError, TypeError)) as ref:
            _reference(bad.op)(*_clone(args), **kwargs)
        assert named.search(str(ref.value)), f"case {bad.id}: the reference's error does not name {bad.arg!r}"
        bridge = None
        if backend.framework != "torch":
            bridge = _bridge(backend)
            xs = bridge.args(args)
            doors = {"arrays": lambda: _array_call(backend, bad.op, *xs, **kwargs)}
        else:
            xs = args
            doors = {"eager": lambda: _dispatched(bad.op)(*xs, **kwargs)}
            doors["torch.ops.bmojo"] = lambda: _custom_op_call(bad.op, xs, kwargs)
        before = [_snapshot(bridge, x) for x in xs]
        for door, call in doors.items():
            with backend.use(), torch.no_grad():
                if backend.framework == "torch":
                    _assert_served_by(backend, bad.op, backend.device)
                try:
                    call()
                except Exception as err:  # classified: the refusal behind it, or a failure
                    refused = _refusal(err)
                    if refused is None:
                        pytest.fail(
                            f"{bad.id} ({door}): expected ValueError or TypeError naming {bad.arg!r} (directly "
                            f"or as the cause of dispatch's BackendOpError), got {type(err).__name__}: {err}"
                        )
                    assert named.search(str(refused)), (
                        f"{bad.id} ({door}): the error does not name the argument {bad.arg!r}: "
                        f"{type(refused).__name__}: {refused}"
                    )
                else:
                    pytest.fail(f"{bad.id} ({door}): accepted bad input ({bad.arg}); the reference refuses it")
            after = [_snapshot(bridge, x) for x in xs]
            for i, (a, b) in enumerate(zip(before, after)):
                assert _same(a, b), f"{bad.id} ({door}): argument {i} was modified by a call that failed"

    @_torch_specific
    @pytest.mark.bmojo_conformance
    @pytest.mark.parametrize("preset", LAYER_PRESETS)
    def test_layer_parallel_equals_recurrent(self, backend, preset, bmojo_dtype, bmojo_seed):
        """A full block (norm, B'MOJO mixer, MLP) through this backend: forward over T tokens ==
        prefill + one-token steps (spec §5), and == the same block on the reference alone."""
        from bmojo.config import LayerConfig
        from bmojo.model import Block

        backend.require(*LAYER_OPS[preset])
        _torch_only(backend, "the layer test (it runs core's torch Block)")
        dtype = getattr(torch, bmojo_dtype)
        bound = TOLERANCES[bmojo_dtype].layer
        torch.manual_seed(bmojo_seed)
        sizes = dict(LAYER_SMALL, **(LAYER_SSM if preset != "swa" else {}))
        if preset == "mamba2":
            sizes = {k: v for k, v in sizes.items() if k not in ("window", "attn_block_size")}
        cfg = LayerConfig.preset(preset, **sizes)
        block = Block(cfg).to(device=backend.device, dtype=dtype)
        T, prefill = 19, 6
        x = torch.randn(2, T, cfg.d_model, dtype=dtype, device=backend.device)
        with torch.no_grad():
            with dispatch_reference():
                ref, _ = block(x)
            with backend.use():
                par, _ = block(x)
                state = block.mixer.init_state(2)
                y, state = block(x[:, :prefill], state, 0)
                outs = [y]
                for t in range(prefill, T):
                    y, state = block.step(x[:, t], state, t)
                    outs.append(y[:, None])
                rec = torch.cat(outs, 1)
        scale = par.abs().max().item()
        err = (rec - par).abs().max().item()
        assert err <= bound * scale, f"{preset}: recurrent vs parallel relative error {err / scale:.3e} > {bound}"
        err_ref = (par - ref).abs().max().item()
        tol = TOLERANCES[bmojo_dtype]
        assert err_ref <= math.sqrt(cfg.d_model) * (tol.atol + tol.rtol * ref.abs().max().item()), (
            f"{preset}: block output differs from the reference-only block by {err_ref:.3e}"
        )


test_layer_dtypes = ConformanceSuite.test_layer_parallel_equals_recurrent
test_layer_dtypes._bmojo_layer_dtypes = True  # plugin: only dtypes with a layer tolerance
del test_layer_dtypes


def dispatch_reference():
    from bmojo.backends import use_backend

    return use_backend("reference")

"""Triton-only helpers shared by this package's kernels (launch grids, dtype constants, the
launch-config tables' mechanism; each op's table itself lives in its ``__init__.py``).

Argument checks and the compute-dtype rule come from core (``bmojo.argcheck``), never from here.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import itertools

import torch
import triton
import triton.language as tl
from bmojo.argcheck import fail
from triton.runtime.errors import OutOfResources

#: The largest element offset a kernel forms in 32-bit integers: program ids, ``tl.arange`` and
#: Triton's integer arguments below 2³¹ are int32, and their products wrap past this silently (a
#: wrong address, not an error). See ``needs_idx64``.
INT32_MAX = 2**31 - 1


@contextlib.contextmanager
def updated_in_place(state: torch.Tensor, **inputs: torch.Tensor | None):
    """Around a kernel that writes ``state`` through its pointer (the in-place decode steps).

    Refuses what torch's own in-place ops refuse, since the kernel bypasses autograd and the
    version counter: a ``state`` (or, under grad mode, any of ``inputs``) that requires grad — the
    result would silently carry no gradient — and an inference tensor outside inference mode.
    Afterwards bumps ``state``'s version counter, so a graph that saved ``state`` for its backward
    fails loudly instead of reading the overwritten values."""
    if state.requires_grad:
        fail("state", "a tensor that does not require grad (updated in place)", "requires_grad=True")
    if torch.is_grad_enabled():
        for name, t in inputs.items():
            if t is not None and t.requires_grad:
                fail(
                    name,
                    "no gradient (the in-place step records no autograd: use the op, or torch.no_grad())",
                    "requires_grad=True",
                )
    if state.is_inference() and not torch.is_inference_mode_enabled():
        fail("state", "a tensor made outside torch.inference_mode(), or this call inside it", "an inference tensor")
    try:
        yield
    finally:  # also when a launch fails part-way: the state may have been written
        if not state.is_inference():  # inference tensors have no version counter
            torch.autograd.graph.increment_version(state)


def needs_idx64(*tensors: torch.Tensor | None) -> bool:
    """Whether a launch over these tensors (every tensor it indexes: inputs, outputs, buffers)
    must form its offsets in int64: True when an element of one lies more than ``INT32_MAX``
    elements past its start (``sum((size - 1) · stride)``). The kernels take it as the
    ``IDX64`` constexpr and widen their indices with ``index`` — PyTorch Inductor's choice
    between 32- and 64-bit indexing, made per launch: the 32-bit kernel stays the common one."""
    for t in tensors:
        if t is None or (t.numel() <= INT32_MAX + 1 and t.is_contiguous()):  # the common case, fast
            continue
        if t.numel() > 0 and sum((n - 1) * abs(s) for n, s in zip(t.shape, t.stride())) > INT32_MAX:
            return True
    return False


def like(t: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """An uninitialised tensor with ``t``'s size *and strides* (``dtype``: default t's): for an
    output a kernel indexes with its input's strides (a gradient, y of the scan). ``torch.empty_like``
    keeps the strides of dense tensors only; a view with gaps would get a compact tensor the kernel
    writes past. ``t`` must not overlap itself (no stride-0 dimension of size > 1): the ops pass
    contiguous tensors."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype if dtype is None else dtype, device=t.device)


def in_layout(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``t`` with ``ref``'s strides, for a kernel that reads it with them (an upstream gradient
    read with x's strides): ``t`` itself where they already match, else a copy."""
    return t if t.stride() == ref.stride() else like(ref).copy_(t)


@triton.jit
def index(x, IDX64: tl.constexpr):
    """``x`` (a program id, a tile's first row, a loop's position) as int64 where ``IDX64``, so
    every offset formed from it is; unchanged otherwise. ``tl.cast`` also takes the interpreter's
    loop variables (Python ints)."""
    if IDX64:
        return tl.cast(x, tl.int64)
    else:
        return x


#: Smallest block edge ``tl.dot`` accepts; smaller dimensions are padded (masked loads).
MIN_DOT = 16

#: Set by ``bmojo_triton.aot`` only: launch with the GPU's tiles and math on CPU tensors, so the
#: ahead-of-time compile check sees exactly the kernels a GPU would run.
AS_GPU = False


def gpu_path(device: torch.device) -> bool:
    """Whether launches use the GPU's tiles and math (True on CUDA), or the interpreter's small
    tiles and bf16 upcast (CPU tensors, which only run under TRITON_INTERPRET=1)."""
    return device.type == "cuda" or AS_GPU


@functools.lru_cache(maxsize=1024)
def pow2(n: int, minimum: int = MIN_DOT) -> int:
    """Smallest power of two >= max(n, minimum): a block edge covering n."""
    return max(minimum, triton.next_power_of_2(max(int(n), 1)))


#: CUDA's limit on a launch grid's second and third axes (the first allows 2³¹ − 1 programs).
GRID_YZ_MAX = 65535


def check_grid_axis(arg: str, what: str, n: int) -> None:
    """Refuse, naming the argument, an extent that a kernel puts on a grid's second or third axis
    beyond CUDA's limit (the launch would fail with a driver error that names nothing). Checked on
    every device, so the interpreter refuses what a GPU would."""
    if n > GRID_YZ_MAX:
        fail(arg, f"{what} <= {GRID_YZ_MAX} (a CUDA grid axis of this kernel)", n)


def acc_dtype(dtype: torch.dtype):
    """Accumulator type: float64 for float64 inputs, else float32 (half inputs accumulate in float32)."""
    return tl.float64 if dtype == torch.float64 else tl.float32


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: full IEEE float32 for float32 (the default would be TF32, whose
    10-bit mantissa misses the float32 tolerance), the hardware default otherwise."""
    return "ieee" if dtype in (torch.float32, torch.float64) else "tf32"


def on_device(t: torch.Tensor):
    """Launch on the tensor's own GPU (Triton launches on the current CUDA device)."""
    if t.device.type == "cuda":
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()


def upcast(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether the kernels must run their matmuls in float32: Triton's interpreter (the only way
    they run on a CPU) stores bfloat16 as raw uint16 and multiplies those bits. Upcasting the
    bfloat16 operands gives the GPU's own math (exact bf16 products, float32 sums)."""
    return not gpu_path(device) and dtype == torch.bfloat16


@triton.jit
def mm(a, b, PREC: tl.constexpr, UPCAST: tl.constexpr):
    """``tl.dot(a, b)`` with the input precision PREC; UPCAST: operands to float32 first."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, input_precision=PREC)


# ----- launch configurations as data -----
#: Widths Triton accepts for ``num_warps``.
WARPS = (1, 2, 4, 8, 16)


def check_launch(owner: str, blocks: dict[str, int | None], num_warps: int, num_stages: int) -> None:
    """Validate one launch config: block edges powers of two >= 16 (None = chosen by the
    launcher), num_warps in WARPS, num_stages >= 1. ``owner`` names the config in the error."""
    for name, v in blocks.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < MIN_DOT or v & (v - 1):
            fail(f"{owner}.{name}", f"a power of two >= {MIN_DOT}", v)
    if num_warps not in WARPS:
        fail(f"{owner}.num_warps", f"one of {WARPS}", num_warps)
    if isinstance(num_stages, bool) or not isinstance(num_stages, int) or num_stages < 1:
        fail(f"{owner}.num_stages", "an int >= 1", num_stages)


def smaller_config(cfg, blocks: tuple[str, ...]):
    """The fit ladder's next rung below the launch config ``cfg`` (a frozen dataclass with
    ``num_stages`` and the block fields ``blocks``, resolved: None is left alone): ``num_stages``
    down to 2, then each block in ``blocks`` order halved down to 16, then ``num_stages`` 1; None
    at the bottom. Every rung is strictly smaller, so a walk ends."""
    if cfg.num_stages > 2:
        return dataclasses.replace(cfg, num_stages=cfg.num_stages - 1)
    for name in blocks:
        v = getattr(cfg, name)
        if v is not None and v > MIN_DOT:
            return dataclasses.replace(cfg, **{name: v // 2})
    if cfg.num_stages > 1:
        return dataclasses.replace(cfg, num_stages=1)
    return None


class LaunchRefused(Exception):
    """The GPU refused to launch one of a table's kernels: its compiled variant needs more shared
    memory (or threads) than the GPU has — Triton's ``OutOfResources``, raised when the compiled
    kernel is loaded, before it runs. Carries the table, its kernel name and the config (blocks
    resolved) it launched with; that table's :meth:`TileTable.fitting` catches it."""

    def __init__(self, table: TileTable, kernel: str, config, err: OutOfResources):
        super().__init__(f"{table.op} {kernel} at {config}: {err}")
        self.table, self.kernel, self.config, self.err = table, kernel, config, err


@contextlib.contextmanager
def refused_as(table: TileTable, kernel: str, config):
    """Around one launch of ``table``'s ``kernel`` at ``config``: Triton's ``OutOfResources``
    becomes :class:`LaunchRefused` naming them."""
    try:
        yield
    except OutOfResources as err:
        raise LaunchRefused(table, kernel, config, err) from err


def _amount(n: int, resource: str) -> str:
    """A resource amount from Triton's ``OutOfResources`` in readable units."""
    return f"{n} bytes ({n / 1024:.1f} KiB)" if resource == "shared memory" else f"{n} {resource}"


class TilesDoNotFit(ValueError):
    """No launch config of a table's kernel fits this GPU (:meth:`TileTable.fitting`):
    ``overridden`` — the config came from an active override, which is never changed; otherwise
    the ladder's last rung was refused too."""

    def __init__(self, name: str, expected: str, got: str, *, overridden: bool):
        super().__init__(f"{name}: expected {expected}, got {got}")
        self.overridden = overridden


class TileTable:
    """An op's launch configs per kernel: one table for GPUs, one config per kernel for the
    interpreter, an override for tuning and tests, and the smaller configs :meth:`fitting` chose
    where the GPU refused the table's.

    ``gpu[kernel]`` maps a key tuple (named by ``key_names``, e.g. head-dim block and dtype
    itemsize) to a config; 0 in a key position matches anything, and the most specific entry wins
    (exact key first, then keys with more wildcards, the rightmost position relaxed first; every
    kernel needs the all-zero entry). The configs are chosen here, by hand, from
    ``python -m benchmarks.triton --sections tune`` runs — never autotuned at launch time.
    """

    def __init__(self, op: str, key_names: tuple[str, ...], gpu: dict, interpreter: dict, config_type: type):
        self.op, self.key_names, self.config_type = op, key_names, config_type
        self.gpu, self.interpreter = gpu, interpreter
        for kernel, table in gpu.items():
            if (0,) * len(key_names) not in table:
                raise ValueError(f"{op} tiles: kernel {kernel!r} has no default entry {(0,) * len(key_names)}")
        if set(interpreter) != set(gpu):
            raise ValueError(f"{op} tiles: interpreter kernels {sorted(interpreter)} != gpu kernels {sorted(gpu)}")
        self._override: contextvars.ContextVar[dict] = contextvars.ContextVar(f"{op}_tiles", default=None)
        self._fitted: contextvars.ContextVar[dict] = contextvars.ContextVar(f"{op}_fitted", default=None)
        #: lookup results: the tables are data fixed in the source (a launch pays for the search
        #: once per key, not per call — a decode step launches several kernels per layer)
        self._cache: dict = {}

    @property
    def kernels(self) -> tuple[str, ...]:
        return tuple(self.gpu)

    def get(self, kernel: str, key: tuple, device: torch.device):
        """The config for ``kernel``: the override if one is active, else the interpreter's (CPU
        tensors), else the smaller config :meth:`fitting` is trying, else the GPU table's most
        specific entry for ``key``."""
        over = self._override.get() or {}
        if kernel in over:
            return over[kernel]
        if not gpu_path(device):
            return self.interpreter[kernel]
        fitted = self._fitted.get() or {}
        if kernel in fitted:
            return fitted[kernel]
        return self.lookup(kernel, key)

    def fitting(self, device: torch.device, run):
        """``run()``, where each launch of this table's kernels sits in :func:`refused_as`; if the
        GPU refuses one (:class:`LaunchRefused`: its variant needs more shared memory or threads
        than this GPU has — the tables are chosen on an H100/H200, an RTX/L4-class GPU has 99 KiB
        of shared memory per block, an A100 163 KiB, and what a kernel needs grows with the head
        or state size and the dtype), ``run()`` runs again from the start with that kernel's
        config one rung smaller (the config's ``smaller()``), until every launch fits. Launchers
        must only write tensors they allocate, so a run cut short leaves nothing behind.

        ``run`` should be one launcher (one kernel, or kernels sharing one config), so a refusal
        re-runs nothing that already ran. Each call walks from the table's entries again: which
        config a call gets depends on the call and the GPU only, never on earlier calls. A refused
        rung costs one launch attempt (the compiled variant is cached; no kernel runs). A kernel
        named in an active :meth:`override` is never changed: its refusal is an error
        (:class:`TilesDoNotFit`) naming the config, as is a refusal at the last rung, or one for a
        resource other than shared memory (threads), which the ladder does not lower."""
        if not gpu_path(device):
            return run()
        refusals: set = set()
        token = None  # the context variable is set only once a launch has been refused
        try:
            while True:
                try:
                    return run()
                except LaunchRefused as refused:
                    if refused.table is not self:
                        raise  # another table's kernel: that table's fitting decides
                    kernel, smaller = refused.kernel, self._step_down(refused, refusals)
                fitted = {**(self._fitted.get() or {}), kernel: smaller}
                if token is not None:
                    self._fitted.reset(token)
                token = self._fitted.set(fitted)
        finally:
            if token is not None:
                self._fitted.reset(token)

    def _step_down(self, refused: LaunchRefused, refusals: set):
        """The next rung below the refused config, or the error :meth:`fitting` documents;
        ``refusals`` (this walk's refused kernels and configs) catches a launcher that did not
        take the smaller config."""
        err, cfg = refused.err, refused.config
        if (refused.kernel, cfg) in refusals:
            raise RuntimeError(f"{self.op} {refused.kernel}: refused at {cfg} twice") from refused
        refusals.add((refused.kernel, cfg))
        what = f"a launch config that fits this GPU ({err.name}: {_amount(err.limit, err.name)} available)"
        needs = f"needs {_amount(err.required, err.name)}"
        if refused.kernel in (self._override.get() or {}):
            name = f"{self.op} tile override {refused.kernel}"
            raise TilesDoNotFit(name, what, f"{cfg}, which {needs}", overridden=True) from refused
        smaller = cfg.smaller() if err.name == "shared memory" else None
        if smaller is None:
            got = (
                f"none: the smallest, {cfg}, {needs} at these sizes and dtype"
                if err.name == "shared memory"
                else f"{cfg}, which {needs} (the ladder only lowers shared memory)"
            )
            raise TilesDoNotFit(f"{self.op} tiles {refused.kernel}", what, got, overridden=False) from refused
        return smaller

    def lookup(self, kernel: str, key: tuple):
        """The GPU table's most specific entry for ``key`` (see the class docstring)."""
        hit = self._cache.get((kernel, key))
        if hit is not None:
            return hit
        table = self.gpu[kernel]
        n = len(self.key_names)
        # candidates: every subset of positions set to 0, fewest zeros first; among equals the
        # rightmost position is relaxed first
        for zeros in range(n + 1):
            for pos in itertools.combinations(reversed(range(n)), zeros):
                cand = tuple(0 if i in pos else k for i, k in enumerate(key))
                if cand in table:
                    self._cache[(kernel, key)] = table[cand]
                    return table[cand]
        raise AssertionError("unreachable: the all-zero entry exists")

    @contextlib.contextmanager
    def override(self, **configs):
        """Inside the block, the named kernels launch with these configs on any device (the tune
        benchmark and the tests use this; the library never does)."""
        for kernel, cfg in configs.items():
            if kernel not in self.gpu:
                fail(f"{self.op} tile override", f"a kernel name from {self.kernels}", repr(kernel))
            if not isinstance(cfg, self.config_type):
                fail(f"{self.op} tile override {kernel}", f"a {self.config_type.__name__}", type(cfg).__name__)
        with self.applied({**(self._override.get() or {}), **configs}):
            yield

    def active(self) -> dict | None:
        """The override in force in this context (None: none). An autograd Function saves it in
        its forward and reapplies it around its backward (``applied``): on CUDA, autograd runs
        backward functions on its own device thread, which does not inherit the caller's context
        variables — without this, a backward would launch with the table's configs, not the
        override in force when its forward ran."""
        return self._override.get()

    @contextlib.contextmanager
    def applied(self, over: dict | None):
        """Inside the block, exactly the override ``over`` (an ``active()`` result) is in force."""
        token = self._override.set(over)
        try:
            yield
        finally:
            self._override.reset(token)

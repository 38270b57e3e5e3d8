"""Static GPU resources of compiled Triton kernels: registers, spills, shared memory, MMA
instructions, and the occupancy they allow — read from the cubin, no GPU needed.

Used by ``python -m bmojo_triton.aot --report`` (which compiles every kernel variant for a target
without a GPU, see ``aot.py``) and by the ``tune`` benchmark section's static pre-check. Every
figure is a compile-time property of one kernel variant (one specialization, one launch config),
never a timing.

Where each figure comes from (``cuobjdump`` ships with Triton's wheels, beside ``ptxas``):

* ``regs``, ``stack``, ``local``, static shared memory: ``cuobjdump -res-usage`` (``REG``,
  ``STACK``, ``LOCAL``, ``SHARED``). ``stack`` is the per-thread stack frame in bytes; in these
  kernels (no recursion, no indirect calls) it is register spill space.
* dynamic shared memory: ``compiled.metadata.shared`` (what Triton requests at launch).
* spill instructions: ``LDL``/``STL`` opcodes in ``cuobjdump -sass`` (local-memory loads/stores);
  MMA instructions: ``HGMMA`` (warpgroup MMA, sm_90), ``HMMA`` (warp MMA, sm_80 and sm_90 for
  shapes wgmma does not take), ``DMMA`` (float64).

Occupancy (:func:`occupancy`) follows NVIDIA's occupancy calculator rules, as implemented by the
CUDA toolkit's ``cuda_occupancy.h`` (``cudaOccMaxBlocksPerSMRegsLimit``,
``cudaOccMaxBlocksPerSMSmemLimit``, ``cudaOccMaxBlocksPerSMWarpsLimit``) with the per-SM limits of
the CUDA C++ Programming Guide's "Technical Specifications per Compute Capability" table
(:data:`SM_LIMITS`). It is an upper bound: the driver may pick a smaller shared-memory carveout,
and it says nothing about how many CTAs the grid provides.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass

from bmojo.argcheck import check_int, fail


@dataclass(frozen=True)
class SmLimits:
    """Per-SM resource limits of one compute capability (the Programming Guide's table)."""

    arch: int
    #: shared memory per SM at the largest carveout, and the most one CTA may opt in to (bytes)
    smem_per_sm: int
    smem_per_block: int
    #: 32-bit registers per SM and per CTA, allocated per warp in units of ``reg_unit`` registers
    #: (= per thread rounded up to a multiple of 8) from ``sub_partitions`` equal register files
    regs_per_sm: int = 65536
    regs_per_block: int = 65536
    reg_unit: int = 256
    sub_partitions: int = 4
    max_regs_per_thread: int = 255
    max_warps_per_sm: int = 64  # 2048 threads
    max_ctas_per_sm: int = 32
    #: shared memory the system reserves per CTA (sm_80+), and the allocation granularity
    smem_reserved_per_block: int = 1024
    smem_unit: int = 128


KIB = 1024
#: The targets the report supports: A100-class sm_80 (164 KiB shared memory per SM, 163 KiB per
#: block; 64 warps, 32 CTAs per SM), the GA10x (A10, A40, RTX 30) sm_86 and Ada (L4, L40S,
#: RTX 40) sm_89 parts (100 KiB per SM, 99 KiB per block; 48 warps; 16 and 24 CTAs per SM), and
#: H100/H200 sm_90 (228 KiB, 227 KiB; 64 warps, 32 CTAs); all 64K registers per SM and per CTA.
SM_LIMITS = {
    80: SmLimits(80, smem_per_sm=164 * KIB, smem_per_block=163 * KIB),
    86: SmLimits(86, smem_per_sm=100 * KIB, smem_per_block=99 * KIB, max_warps_per_sm=48, max_ctas_per_sm=16),
    89: SmLimits(89, smem_per_sm=100 * KIB, smem_per_block=99 * KIB, max_warps_per_sm=48, max_ctas_per_sm=24),
    90: SmLimits(90, smem_per_sm=228 * KIB, smem_per_block=227 * KIB),
}


def sm_limits(arch: int) -> SmLimits:
    check_int("arch", arch)
    if arch not in SM_LIMITS:
        fail("arch", f"one of {sorted(SM_LIMITS)} (compute capability x10 with known SM limits)", arch)
    return SM_LIMITS[arch]


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


@dataclass(frozen=True)
class Occupancy:
    """CTAs (and warps) per SM one kernel variant allows, and which resource binds first."""

    ctas_per_sm: int
    warps_per_sm: int
    limiter: str  # "regs", "smem", "warps" or "ctas" (ties: that order); "launch fails" at 0
    by_regs: int
    by_smem: int
    by_warps: int


def occupancy(limits: SmLimits, *, regs: int, num_warps: int, smem: int) -> Occupancy:
    """CTAs per SM for ``num_warps`` warps of ``regs`` registers per thread and ``smem`` bytes of
    shared memory per CTA (static + dynamic), by the occupancy calculator's rules:

    * registers: a warp holds ``round_up(32·regs, 256)`` registers (``regs`` rounded up to a
      multiple of 8); each of the 4 sub-partitions (16K registers) holds
      ``floor(16384 / that)`` warps; CTAs = ``floor(4 · that / num_warps)``. A CTA whose warps,
      rounded up to a multiple of 4, need more than 64K registers does not launch (0).
    * shared memory: a CTA takes ``round_up(smem + 1 KiB reserved, 128)``; CTAs =
      ``floor(smem_per_sm / that)``; 0 if ``smem`` exceeds the per-block maximum.
    * warps: ``floor(64 / num_warps)``; CTAs: at most 32.
    """
    check_int("regs", regs, minimum=0)
    check_int("num_warps", num_warps, minimum=1)
    check_int("smem", smem, minimum=0)
    if regs > limits.max_regs_per_thread:
        fail("regs", f"an int <= {limits.max_regs_per_thread} (sm_{limits.arch} registers per thread)", regs)
    per_warp = _round_up(32 * regs, limits.reg_unit)
    if per_warp == 0:
        by_regs = limits.max_ctas_per_sm
    elif per_warp * _round_up(num_warps, limits.sub_partitions) > limits.regs_per_block:
        by_regs = 0
    else:
        warps = (limits.regs_per_sm // limits.sub_partitions // per_warp) * limits.sub_partitions
        by_regs = warps // num_warps
    if smem > limits.smem_per_block:
        by_smem = 0
    else:
        by_smem = limits.smem_per_sm // _round_up(smem + limits.smem_reserved_per_block, limits.smem_unit)
    by_warps = limits.max_warps_per_sm // num_warps
    bounds = dict(regs=by_regs, smem=by_smem, warps=by_warps, ctas=limits.max_ctas_per_sm)
    ctas = min(bounds.values())
    limiter = "launch fails" if ctas == 0 else next(k for k, v in bounds.items() if v == ctas)
    return Occupancy(ctas, ctas * num_warps, limiter, by_regs, by_smem, by_warps)


# ----- reading a cubin -----
def cuobjdump() -> str | None:
    """Path of Triton's ``cuobjdump`` (``TRITON_CUOBJDUMP_PATH`` or the one in its wheel), or None."""
    try:
        from triton import knobs

        return knobs.nvidia.cuobjdump.path
    except (ImportError, AttributeError, RuntimeError):
        return None


_RES_LINE = re.compile(r"^\s*Function\s+(\S+):\s*$")
_RES_FIELD = re.compile(r"([A-Z]+(?:\[\d+\])?):(\d+)")
#: one SASS instruction: ``/*0a10*/  [@!P0 ]OPCODE[.MOD...] operands ;``
_SASS_OP = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*)")
MMA_OPS = ("HGMMA", "HMMA", "DMMA", "IMMA")
SPILL_OPS = ("LDL", "STL")


def parse_res_usage(text: str, function: str) -> dict[str, int]:
    """``REG``, ``STACK``, ``SHARED``, ``LOCAL``… of ``function`` from ``cuobjdump -res-usage``."""
    current = None
    for line in text.splitlines():
        m = _RES_LINE.match(line)
        if m:
            current = m.group(1)
            continue
        if current == function and ":" in line:
            fields = {k: int(v) for k, v in _RES_FIELD.findall(line)}
            if "REG" in fields:
                return fields
    raise ValueError(f"cuobjdump -res-usage: expected a resource line for function {function!r}, got:\n{text}")


def count_opcodes(sass: str, names) -> dict[str, int]:
    """How many SASS instructions have each opcode in ``names`` (modifiers ignored: ``LDL.LU``
    counts as ``LDL``)."""
    counts = dict.fromkeys(names, 0)
    for line in sass.splitlines():
        m = _SASS_OP.match(line)
        if m and m.group(1) in counts:
            counts[m.group(1)] += 1
    return counts


@dataclass(frozen=True)
class KernelResources:
    """One compiled variant's static resources (bytes unless named otherwise)."""

    regs: int
    stack: int  # per-thread stack frame (register spills)
    local: int  # per-thread local memory besides the stack
    smem_static: int
    smem_dynamic: int
    spill_loads: int  # LDL instructions
    spill_stores: int  # STL instructions
    mma: dict  # opcode -> instruction count (HGMMA, HMMA, DMMA, IMMA)

    @property
    def smem(self) -> int:
        return self.smem_static + self.smem_dynamic

    @property
    def spills(self) -> bool:
        return bool(self.stack or self.local or self.spill_loads or self.spill_stores)

    def mma_text(self) -> str:
        used = [f"{k}x{v}" for k, v in self.mma.items() if v]
        return " ".join(used) or "-"

    def as_dict(self) -> dict:
        return dict(asdict(self), smem=self.smem, spills=self.spills)


def inspect_cubin(cubin: bytes, function: str, smem_dynamic: int, tool: str | None = None) -> KernelResources:
    """Resources of ``function`` in ``cubin`` (``smem_dynamic``: Triton's ``metadata.shared``)."""
    tool = tool or cuobjdump()
    if tool is None:
        raise RuntimeError("cuobjdump not found: set TRITON_CUOBJDUMP_PATH or install a triton wheel that ships it")
    fd, path = tempfile.mkstemp(suffix=".cubin")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cubin)
        res = subprocess.run([tool, "-res-usage", path], capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([tool, "-sass", path], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(path)
    fields = parse_res_usage(res, function)
    ops = count_opcodes(sass, SPILL_OPS + MMA_OPS)
    return KernelResources(
        regs=fields["REG"],
        stack=fields.get("STACK", 0),
        local=fields.get("LOCAL", 0),
        smem_static=fields.get("SHARED", 0),
        smem_dynamic=int(smem_dynamic),
        spill_loads=ops["LDL"],
        spill_stores=ops["STL"],
        mma={k: ops[k] for k in MMA_OPS},
    )


def inspect_compiled(compiled) -> KernelResources:
    """Resources of a ``triton.compile`` result for an NVIDIA target."""
    return inspect_cubin(compiled.asm["cubin"], compiled.metadata.name, compiled.metadata.shared)

"""``bmojo backends`` (alias ``bmojo doctor``): every backend with its version, state, reason and
ops, then which backend each op would use. Imports no torch itself (only ``--device`` is parsed
by torch, as dispatch reads a tensor's device type); a broken plugin shows as ``import failed``
with its error instead of breaking the command. ``-v`` also imports every op of the available
backends (their ``"module:attr"`` targets, as a first call would): an op that fails to import is
shown in its backend's reason, left out of the selection, and its traceback printed."""

from __future__ import annotations

import json

from bmojo.argcheck import check_device_type
from bmojo.backends.registry import ENV_BACKEND, ENV_DISABLE, BackendError, State, get_registry, requested
from bmojo.backends.spec import ANY_DEVICE, OPS, TORCH


def register(sub) -> None:
    p = sub.add_parser(
        "backends",
        aliases=["doctor"],
        help="list op backends with their state, reason and ops",
        description=f"List bmojo op backends. Select one with {ENV_BACKEND}=NAME, rule some out with "
        f"{ENV_DISABLE}=a,b.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--device",
        default="cpu",
        help="device type for the selection summary (default cpu; cuda:1 means cuda, as dispatch sees it)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also import every op of the available backends; show full tracebacks of failed plugins and ops",
    )
    p.set_defaults(func=run)


def _ops_text(ops: dict[str, tuple[str, ...]], frameworks: dict[str, str] | None = None) -> str:
    """Ops grouped by (framework, devices); non-torch frameworks are named: ``all ops [mlx: cpu,gpu]``."""
    if not ops:
        return "-"
    frameworks = frameworks or {}
    groups: dict[tuple, list[str]] = {}
    for op, devices in ops.items():
        groups.setdefault((frameworks.get(op, TORCH), tuple(devices)), []).append(op)
    parts = []
    for (framework, devices), names in groups.items():
        where = "any device" if ANY_DEVICE in devices else ",".join(devices)
        if framework != TORCH:
            where = f"{framework}: {where}"
        listed = "all ops" if len(names) == len(OPS) else ", ".join(names)
        parts.append(f"{listed} [{where}]")
    return "; ".join(parts)


def _selection(device: str) -> tuple[dict[str, str], str]:
    try:
        return get_registry().selection(device), ""
    except BackendError as err:
        return {}, str(err)


def _array_selections(device: str) -> dict[str, dict[str, str] | str]:
    """framework → {op: backend} for every non-torch framework an available backend serves (an
    error message instead when an explicit request cannot be met)."""
    out: dict[str, dict[str, str] | str] = {}
    for framework in get_registry().array_frameworks():
        try:
            out[framework] = get_registry().array_selection(framework, device)
        except BackendError as err:
            out[framework] = str(err)
    return out


def _print_selection(selection: dict[str, str]) -> None:
    by_backend: dict[str, list[str]] = {}
    for op, name in selection.items():
        by_backend.setdefault(name, []).append(op)
    for name, ops in by_backend.items():
        print(f"  {name}: {', '.join(ops) if len(ops) < len(OPS) else 'all ops'}")


def _other_devices(statuses) -> list[str]:
    """Device types that backends declare for non-torch array frameworks (MLX's ``gpu``)."""
    return sorted(
        {
            device
            for s in statuses
            for op, framework in s.frameworks.items()
            if framework != TORCH
            for device in s.ops.get(op, ())
            if device != ANY_DEVICE
        }
    )


def run(args) -> int:
    registry = get_registry()
    if args.verbose:
        registry.check_targets()
    statuses = registry.statuses()
    unknown_disabled = registry.unknown_disabled()
    explicit, source = requested()
    # The device *type*, as dispatch reads it from a tensor (cpu:0 is cpu); unknown types are refused.
    args.device = check_device_type("--device", args.device, _other_devices(statuses))
    selection, error = _selection(args.device)
    arrays = _array_selections(args.device)
    array_errors = {fw: sel for fw, sel in arrays.items() if isinstance(sel, str)}
    if args.json:
        print(
            json.dumps(
                {
                    "backends": [s.as_dict() for s in statuses],
                    "requested": explicit,
                    "requested_by": source,
                    "device": args.device,
                    "selection": selection,
                    "selection_error": error,
                    "unknown_disabled": unknown_disabled,
                    "array_selection": {fw: sel for fw, sel in arrays.items() if isinstance(sel, dict)},
                    "array_selection_error": array_errors,
                },
                indent=2,
            )
        )
        return 1 if error or array_errors else 0
    rows = []
    for s in statuses:
        prio = "-" if s.priority is None else str(s.priority)
        rows.append((s.name, s.version or "-", str(s.state), prio, s.reason or "-", _ops_text(s.ops, s.frameworks)))
    header = ("BACKEND", "VERSION", "STATE", "PRIORITY", "REASON", "OPS")
    rows.insert(0, header)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r[:5], widths)) + "  " + r[5])
    if args.verbose:
        for s in statuses:
            if s.error:
                print(f"\n--- {s.name}: {s.state} ---\n{s.error.rstrip()}")
    print()
    if unknown_disabled:
        print(f"warning: {ENV_DISABLE} names no installed backend: {', '.join(unknown_disabled)}")
    who = f"explicit: {explicit!r} ({source})" if explicit else "implicit (highest priority available per op)"
    print(f"selection on {args.device}: {who}")
    if error:
        print(f"  error: {error}")
    _print_selection(selection)
    for framework, sel in arrays.items():
        print(f"selection for {framework} arrays on {args.device}: {who}")
        if isinstance(sel, str):
            print(f"  error: {sel}")
        else:
            _print_selection(sel)
    if error or array_errors:
        return 1
    failed = [s for s in statuses if s.state in (State.IMPORT_FAILED, State.INVALID)]
    broken_ops = sum(len(s.op_errors) for s in statuses)
    if failed or broken_ops:
        found = [f"{len(failed)} plugin(s) failed to load"] if failed else []
        found += [f"{broken_ops} op(s) failed to import"] if broken_ops else []
        print("; ".join(found) + ("" if args.verbose else "; run with -v for tracebacks"))
    return 0

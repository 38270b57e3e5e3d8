"""Selective state-space scan (spec §1): ``h_t = exp(dt_t·A)·h_{t-1} + dt_t·(x_t ⊗ B_t)``, ``y_t = C_t·h_t + D·x_t``.

``reference.py`` holds the chunked (SSD) algorithm and the one-token step that every backend must
match; ``naive.py`` is the per-token recurrence used only as a test oracle.
"""

from bmojo.ops.ssm_scan.reference import ssm_scan, ssm_step

__all__ = ["ssm_scan", "ssm_step"]

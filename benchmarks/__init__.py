"""CPU benchmarks of the reference path, every figure a ratio against a named peer measured in the same run.

Run ``python -m benchmarks`` from the repository root (``--help`` for the flags). Sections:

* ``ssm``: ``ssm_scan`` vs the transformers Mamba-2 torch path and the naive recurrence;
* ``attention``: ``bmojo_attention`` vs SDPA with a dense window mask and FlexAttention;
* ``layer``: a B'MOJO mixer fwd+bwd vs MistralAttention (sliding window), a Mamba-2 mixer, and their sum;
* ``decode``: per-token latency and peak RSS of B'MOJO vs a Llama with a full KV cache (DynamicCache).

See docs/benchmarks.md for the figures and how to read them.
"""

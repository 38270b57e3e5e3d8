"""Runnable jobs behind the ``bmojo`` command, and the pieces they share.

Jobs (each a module with ``register(subparsers)`` and ``run(args)``):

* ``train``: train a causal LM (single process, or DDP / FSDP2 under ``torchrun``);
* ``generate``: stream a continuation from a checkpoint with the bounded decode state;
* ``eval_length``: validation perplexity at 1×…16× the training context;
* ``mqar`` (with ``mqar_full`` for ``--full`` / ``--scale zoology``): the multi-query
  associative-recall comparison, the README's main job;
* ``demo``: a one-minute look at the eidetic memory at work.

Shared pieces, written once:

* ``data``: the embedded default corpus, ``--data`` loading, stateless per-step batches;
* ``optim``: AdamW parameter groups and the warm-up + cosine schedule;
* ``checkpoint``: atomic safetensors/JSON checkpoints, validated before anything is allocated;
* ``distributed``: process-group set-up and DDP / FSDP2 wrapping;
* ``progress``: the tqdm bar (loss, tokens/s) and the JSONL log;
* ``plotting``: line plots (one line per model);
* ``presets``: the ``tiny``/``small`` model sizes with matched parameter counts.

``mqar`` keeps its own checkpoint (safetensors + JSON, with its generator state and curves) and
its one-cycle schedule: moving it onto ``checkpoint``/``optim`` changes its results, so it waits
for a protocol bump and a rerun (docs/training.md).
"""

"""``bmojo-mlx generate --model DIR --prompt TEXT``: stream a continuation from a
``BMojoLM.save_pretrained`` directory with the native MLX model (no torch import)."""

from __future__ import annotations

import argparse
import os
import sys

from bmojo.cli import run_command


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bmojo-mlx", description="B'MOJO on MLX")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="stream a continuation of a prompt")
    g.add_argument("--model", required=True, help="directory written by BMojoLM.save_pretrained")
    g.add_argument("--prompt", required=True, help="prompt text (UTF-8 bytes are the tokens)")
    g.add_argument("--max-tokens", type=int, default=64, help="new tokens to generate (default 64)")
    g.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    g.add_argument("--seed", type=int, default=None, help="sampling seed")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    # core's handling: errors that name their argument one line and exit 2, Ctrl-C 130, a closed
    # pipe (``| head``) 141 without a traceback
    return run_command(f"bmojo-mlx {args.command}", lambda: _generate(args), (ValueError, FileNotFoundError))


def _generate(args) -> int:
    from bmojo_mlx.generation import stream_generate
    from bmojo_mlx.loading import load

    if not os.path.isdir(args.model):
        raise FileNotFoundError(f"--model: expected a directory written by BMojoLM.save_pretrained, got {args.model!r}")
    model = load(args.model)
    last = None
    for last in stream_generate(
        model, args.prompt, max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed
    ):
        sys.stdout.write(last.text)
        sys.stdout.flush()
    sys.stdout.write("\n")
    if last is not None:
        print(
            f"prompt: {last.prompt_tokens} tokens, {last.prompt_tps:.1f} tokens/s; generation: "
            f"{last.generation_tokens} tokens, {last.generation_tps:.1f} tokens/s; "
            f"decode state {last.state_bytes} bytes",
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

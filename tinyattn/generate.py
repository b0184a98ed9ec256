"""``python -m tinyattn.generate``: stream text from a trained character GPT to the terminal.

    python -m tinyattn.generate --prompt "ROMEO:"                      # the committed Shakespeare run
    python -m tinyattn.generate --checkpoint run.npz --prompt "Ham." --temperature 0.8 --top-k 20

The checkpoint is one written by ``python -m tinyattn.train --task shakespeare --save run.npz``;
it carries its character vocabulary, so no corpus is needed. Characters are printed as they are
sampled; the text may grow past the model's block_size (it then reads the last block_size).
"""

from __future__ import annotations

import argparse
import sys

from .train import load_shakespeare_run

__all__ = ["main"]


def main(argv=None, out=None) -> int:
    out = sys.stdout if out is None else out
    parser = argparse.ArgumentParser(prog="python -m tinyattn.generate", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=None,
                        help="a .npz from train --task shakespeare (default: the committed run)")
    parser.add_argument("--prompt", default="\n")
    parser.add_argument("--max-new-tokens", type=int, default=500)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--top-p", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.max_new_tokens < 0:
        parser.error(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    try:
        model, config, _ = load_shakespeare_run(args.checkpoint)
    except (OSError, KeyError, ValueError) as err:
        parser.error(f"--checkpoint {args.checkpoint}: {err}")
    index = {c: i for i, c in enumerate(config.chars)}
    unknown = sorted(set(args.prompt) - set(index))
    if not args.prompt or unknown:
        parser.error(f"--prompt {args.prompt!r}: expected a non-empty text of the model's "
                     f"{len(config.chars)} characters; not among them: {unknown!r}")
    idx = [[index[c] for c in args.prompt]]
    out.write(args.prompt)

    def stream(tokens):
        out.write(config.chars[int(tokens[0])])
        out.flush()

    try:
        model.generate(idx, args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                       top_p=args.top_p, seed=args.seed, crop=True, on_token=stream)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

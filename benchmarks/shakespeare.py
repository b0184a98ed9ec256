"""One training step of the Shakespeare character GPT: tinyattn vs the same model in PyTorch CPU.

    python benchmarks/shakespeare.py                 # measures, writes the README section
    python benchmarks/shakespeare.py --no-write --repeat 5
    python benchmarks/shakespeare.py --profile       # cProfile of 20 tinyattn steps, top 25 by tottime

The model and batch of ``python -m tinyattn.train --task shakespeare``: GPT with 4 layers, 4
heads, d_model 128, block_size 64, vocabulary 73, batch 12 (768 tokens), float32. One step =
a random batch, forward, cross-entropy, backward, gradient clipping to norm 1, an AdamW step
(weight decay on the Linear matrices only). The PyTorch model has the same modules under the
same names and starts from the tinyattn weights; the script checks the two losses agree before
timing. Steps are timed alternately, one of each per round, and the medians reported. BLAS and
PyTorch both run on one thread unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS is set.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("OMP_NUM_THREADS", "1"))  # before NumPy loads BLAS

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import pstats  # noqa: E402

import numpy as np  # noqa: E402

import tinyattn as ta  # noqa: E402
from _common import interleaved_medians, machine_line, progress, try_torch, write_section  # noqa: E402
from tinyattn import data, optim  # noqa: E402
from tinyattn.serialization import atomic_write  # noqa: E402
from tinyattn.train import ShakespeareConfig, build_shakespeare_gpt, decay_groups, lm_loss  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "shakespeare.json")
VOCAB = 73  # the corpus's characters; speed does not depend on which they are


def tinyattn_step(config):
    """A closure running one training step of the tinyattn GPT on fresh random windows."""
    model = build_shakespeare_gpt(config).train()
    opt = optim.AdamW(decay_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, config.beta2))
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB, 100_000)

    def step():
        loss = lm_loss(model, data.sample_blocks(ids, config.batch_size, config.block_size, rng))
        opt.zero_grad()
        loss.backward()
        ta.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        return loss.item()

    return model, step


def torch_gpt(torch, config, state: dict):
    """The same GPT in PyTorch (same module names, tied head), loaded with ``state``."""
    nn, F = torch.nn, torch.nn.functional
    E, H = config.n_embd, config.n_head

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(E, E) for _ in range(4))

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = (p(x).view(B, T, H, E // H).transpose(1, 2)  # (B, H, T, D) each
                       for p in (self.q_proj, self.k_proj, self.v_proj))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D)
            return self.out_proj(y.transpose(1, 2).reshape(B, T, E))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(E), Attention(), nn.LayerNorm(E)
            self.mlp = nn.Sequential(nn.Linear(E, 4 * E), nn.GELU(), nn.Linear(4 * E, E), nn.Dropout(0.0))

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(VOCAB, E), nn.Embedding(config.block_size, E)
            self.blocks = nn.ModuleList(Block() for _ in range(config.n_layer))
            self.ln_f = nn.LayerNorm(E)

        def forward(self, idx):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for block in self.blocks:
                x = block(x)
            return self.ln_f(x) @ self.wte.weight.T

    model = GPT()
    model.load_state_dict({k: torch.tensor(np.array(v)) for k, v in state.items()})  # copies, not shared
    return model


def torch_step(torch, config, state: dict):
    """A closure running one training step of the PyTorch GPT on fresh random windows."""
    model = torch_gpt(torch, config, state).train()
    decay = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, config.beta2))
    rng = np.random.default_rng(1)
    ids_ = rng.integers(0, VOCAB, 100_000)

    def loss_of(windows):
        w = torch.from_numpy(windows)
        logits = model(w[:, :-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), w[:, 1:].reshape(-1))

    def step():
        loss = loss_of(data.sample_blocks(ids_, config.batch_size, config.block_size, rng))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        return loss.item()

    return model, step, loss_of


def measure(repeat: int) -> dict:
    torch = try_torch()
    if torch is None:
        raise SystemExit("PyTorch is not installed; this benchmark compares against it")
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    config = ShakespeareConfig(chars="".join(chr(32 + i) for i in range(VOCAB)))
    model, ta_step = tinyattn_step(config)
    t_model, t_step, t_loss = torch_step(torch, config, model.state_dict())
    check = data.sample_blocks(np.arange(1000) % VOCAB, config.batch_size, config.block_size,
                               np.random.default_rng(2))
    with ta.no_grad():
        a = lm_loss(model, check).item()
    with torch.no_grad():
        b = t_loss(check).item()
    assert abs(a - b) < 1e-4, f"the two models disagree before timing: loss {a} vs {b}"
    times = interleaved_medians({"tinyattn": ta_step, "PyTorch CPU": t_step}, repeat=repeat, warmup=3)
    return {"tinyattn_s": times["tinyattn"], "torch_s": times["PyTorch CPU"],
            "ratio": times["tinyattn"] / times["PyTorch CPU"], "initial_loss_diff": abs(a - b),
            "tokens": config.batch_size * config.block_size}


def markdown(r: dict, repeat: int, machine: str) -> str:
    tokens = r["tokens"]
    return "\n".join([
        "One training step (forward, loss, backward, clipping, AdamW) of the `train --task shakespeare` "
        f"GPT: 4 layers, 4 heads, d_model 128, block_size 64, batch 12 ({tokens} tokens), float32; the "
        f"PyTorch model has the same modules and starts from a copy of the same weights (initial losses "
        f"differ by {r['initial_loss_diff']:.1e}). Medians of {repeat} interleaved steps each.", "",
        f"Machine: {machine}.", "",
        "| implementation | median ms / step | tokens/s | vs PyTorch |", "|---|---:|---:|---:|",
        f"| tinyattn | {1e3 * r['tinyattn_s']:.1f} | {tokens / r['tinyattn_s']:,.0f} | {r['ratio']:.2f}× |",
        f"| PyTorch CPU | {1e3 * r['torch_s']:.1f} | {tokens / r['torch_s']:,.0f} | 1.00× |", "",
        "Command: `python benchmarks/shakespeare.py` (`--from-results` re-renders this section from "
        "`benchmarks/results/shakespeare.json`; `--profile` prints where tinyattn's step spends its time)"])


def profile(steps: int = 20) -> None:
    config = ShakespeareConfig(chars="".join(chr(32 + i) for i in range(VOCAB)))
    _, step = tinyattn_step(config)
    step()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=21)
    parser.add_argument("--no-write", action="store_true", help="print only; leave the README alone")
    parser.add_argument("--from-results", action="store_true",
                        help="re-render the README section from the saved results; measure nothing")
    parser.add_argument("--profile", action="store_true",
                        help="cProfile tinyattn's step; measure nothing else")
    args = parser.parse_args(argv)
    if args.profile:
        profile()
        return 0
    if args.from_results:
        with open(RESULTS, encoding="utf-8") as f:
            saved = json.load(f)
        text = markdown(saved["result"], saved["repeat"], saved["machine"])
    else:
        progress("timing one training step, tinyattn and PyTorch alternately")
        result = measure(args.repeat)
        text = markdown(result, args.repeat, machine_line())
        if not args.no_write:
            saved = {"machine": machine_line(), "repeat": args.repeat, "result": result}
            atomic_write(RESULTS, lambda f: f.write(json.dumps(saved, indent=1).encode() + b"\n"))
    print(text)
    if not args.no_write:
        write_section("shakespeare", text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

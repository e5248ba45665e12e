#!/usr/bin/env python3
"""The training example's GPT (examples/gpt/model.h) written in PyTorch, to compare
training throughput with tilegrad-train on the same GPU in the same command.

Same architecture and step: token + position embeddings, pre-LayerNorm blocks (fused QKV
projection, attention, output projection, GELU-tanh MLP of 4x width, dropout), final
LayerNorm, linear head without bias; cross-entropy, AdamW (betas 0.9/0.95, weight decay
0.1), global-norm clipping at 1.0, and a host sync on the loss every step (as the C++ loop
prints it). Attention variants:
  sdpa-causal  dense causal SDPA (flash kernel): more work than the block pattern, fastest
               dense kernel;
  sdpa-mask    SDPA with the example's block pattern as a boolean mask (same result as ours);
  flex         FlexAttention with the same block pattern as a BlockMask (when available);
  blksprs      blksprs' block-sparse flash attention over the same pattern (causal inside
               it), q/k/v converted to its compressed form and back each call; needs the
               blksprs package importable (BLKSPRS_PATH: the folder holding `blksprs/`).

Usage: gpt_torch.py [--steps N] [--batch B] [--ctx T] [--layers L] [--d-model D]
                    [--heads H] [--block BS] [--window-blocks W] [--dtype f32|bf16]
                    [--attn sdpa-causal|sdpa-mask|flex|blksprs|all]
Prints one line per variant: tokens/s (median of per-step times after warm-up).
"""
import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def block_pattern(T, bs, window_blocks, global_blocks):
    """[T/bs, T/bs] bool: causal local window of window_blocks + the diagonal, plus the
    leading global_blocks key blocks (as attention_pattern in examples/gpt/model.h)."""
    nb = T // bs
    r = torch.arange(nb)[:, None]
    c = torch.arange(nb)[None, :]
    local = (c <= r) & (c >= r - window_blocks)
    glob = (c < global_blocks) & (c <= r)
    return local | glob


class Block(nn.Module):
    def __init__(self, d, heads, dropout):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)
        self.drop = nn.Dropout(dropout)

    def attention(self, x, attn):
        B, T, d = x.shape
        H = self.heads
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (t.view(B, T, H, d // H).transpose(1, 2) for t in (q, k, v))
        o = attn(q, k, v)
        return o.transpose(1, 2).reshape(B, T, d)

    def forward(self, x, attn):
        x = x + self.drop(self.proj(self.attention(self.ln1(x), attn)))
        return x + self.drop(self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh")))


class GPT(nn.Module):
    def __init__(self, vocab, ctx, d, heads, layers, dropout):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx, attn):
        T = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for b in self.blocks:
            h = b(h, attn)
        return self.head(self.ln_f(h))


def make_attn(kind, T, bs, window_blocks, device):
    pat = block_pattern(T, bs, window_blocks, 1)
    if kind == "sdpa-causal":
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if kind == "sdpa-mask":
        el = pat.repeat_interleave(bs, 0).repeat_interleave(bs, 1)
        el &= torch.ones(T, T, dtype=torch.bool).tril()
        el = el.to(device)
        return lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=el)
    if kind == "flex":
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        pat_d = pat.to(device)

        def mask_mod(b, h, q_idx, kv_idx):
            return pat_d[q_idx // bs, kv_idx // bs] & (kv_idx <= q_idx)

        bm = create_block_mask(mask_mod, None, None, T, T, device=device)
        fa = torch.compile(flex_attention)
        return lambda q, k, v: fa(q, k, v, block_mask=bm)
    if kind == "blksprs":
        return make_blksprs_attn(pat, T, bs, device)
    raise ValueError(kind)


def make_blksprs_attn(pat, T, bs, device):
    """blksprs.ops.flash_attention on the example's pattern, causal inside it by element masks on
    the diagonal blocks (bench/blksprs_peer.py), built once per (batch x heads, head dim)."""
    import blksprs_peer

    bsp = blksprs_peer.import_blksprs()
    if bsp is None:
        raise RuntimeError("blksprs is not importable (BLKSPRS_PATH)")
    el = pat.repeat_interleave(bs, 0).repeat_interleave(bs, 1) & torch.ones(T, T, dtype=torch.bool).tril()
    el = el.to(device)
    fns = {}

    def attn(q, k, v):
        B, H, _, D = q.shape
        if (B * H, D) not in fns:
            fns[(B * H, D)] = blksprs_peer.attention(bsp, el, B * H, D, bs)
        return fns[(B * H, D)](q, k, v)

    return attn


def train_step(model, opt, attn, batch, B, T):
    """One optimisation step on batch [B, T + 1] of token ids; returns the loss tensor."""
    x, y = batch[:, :-1], batch[:, 1:]
    loss = F.cross_entropy(model(x, attn).reshape(B * T, -1).float(), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


def run(args, kind):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = GPT(args.vocab, args.ctx, args.d_model, args.heads, args.layers, args.dropout).to(dev, dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
    attn = make_attn(kind, args.ctx, args.block, args.window_blocks, dev)
    B, T = args.batch, args.ctx
    data = torch.randint(0, args.vocab, (args.steps + 1, B, T + 1), device=dev)
    times = []
    for step in range(args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        train_step(model, opt, attn, data[step], B, T).item()
        times.append(time.perf_counter() - t0)
    warm = min(10, args.steps // 2)
    med = statistics.median(times[warm:])
    print(f"pytorch {kind:<12} {args.dtype:<5} {args.layers} layers d {args.d_model} ctx {T} batch {B}: "
          f"{B * T / med:10.0f} tokens/s  (median step {med * 1e3:.2f} ms over {len(times) - warm} steps)",
          flush=True)
    if args.profile > 0 and kind == args.profile_attn:
        # The same steps again under the PyTorch profiler: device time per kernel, to set
        # beside tilegrad-train --profile.
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for step in range(args.profile):
                train_step(model, opt, attn, data[step], B, T)
            torch.cuda.synchronize()
        print(f"pytorch {kind} profile of {args.profile} steps (kernels by self device time):")
        print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=25), flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--ctx", type=int, default=1024)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--d-model", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--block", type=int, default=64)
    p.add_argument("--window-blocks", type=int, default=4)
    p.add_argument("--vocab", type=int, default=100)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls (match tilegrad's setting)")
    p.add_argument("--attn", default="all")
    p.add_argument("--profile", type=int, default=0, help="profile this many extra steps of --profile-attn")
    p.add_argument("--profile-attn", default="sdpa-causal")
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = args.tf32
    torch.backends.cudnn.allow_tf32 = args.tf32
    kinds = ["sdpa-causal", "sdpa-mask", "flex", "blksprs"] if args.attn == "all" else [args.attn]
    for kind in kinds:
        try:
            run(args, kind)
        except Exception as e:  # a missing backend must not hide the other lines
            print(f"pytorch {kind}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")


if __name__ == "__main__":
    main()

"""Peers of bench_attention: PyTorch SDPA (flash backend: dense, causal), FlexAttention
and blksprs (every pattern) on the shapes and patterns of bench/bench_attention.cu, printed
in the same table (useful TFLOP/s of attended pairs: 4·D per pair forward, 3.5 times that
forward + backward). The random and variable-block patterns are rebuilt with the same
generator (std::mt19937_64) and seeds as the C++ bench, so both sides time identical work.

blksprs (bench/blksprs_peer.py: its flash attention on 64-blocks, element masks on the
blocks a pattern covers in part) runs where it imports; otherwise its rows are skipped.

Run on the GPU machine next to bench_attention:  python3 bench/attention_peers.py
"""
import torch
import torch.nn.functional as F

import blksprs_peer
from peer_timing import time_ms

B, H, S = 4, 16, 4096
MASK64 = (1 << 64) - 1


class MT19937_64:
    """std::mt19937_64, so that the patterns match the C++ bench bit for bit."""

    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & MASK64
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & MASK64
        self.idx = 312

    def _twist(self):
        upper, lower = 0xFFFFFFFF80000000, 0x7FFFFFFF
        for i in range(312):
            x = (self.mt[i] & upper) | (self.mt[(i + 1) % 312] & lower)
            xa = x >> 1
            if x & 1:
                xa ^= 0xB5026F5AA96619E9
            self.mt[i] = self.mt[(i + 156) % 312] ^ xa
        self.idx = 0

    def __call__(self):
        if self.idx >= 312:
            self._twist()
        y = self.mt[self.idx]
        self.idx += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & MASK64


def random_blocks():
    nb = S // 64
    rng = MT19937_64(42)
    return torch.tensor([rng() % 10 == 0 for _ in range(nb * nb)], dtype=torch.bool).reshape(nb, nb)


def variable_sizes():
    rng = MT19937_64(7)
    sizes, left = [], S
    while left > 0:
        s = min(left, 64 * (1 + rng() % 8))
        sizes.append(s)
        left -= s
    return sizes


def time_peer(peer, fwd, q, k, v, g, case, flops):
    """One table row: fwd's forward and forward + backward times and TFLOP/s."""
    with torch.no_grad():
        f_ms = time_ms(lambda: fwd(q, k, v), 3, 30)
    qg, kg, vg = (t.detach().requires_grad_() for t in (q, k, v))

    def both():
        fwd(qg, kg, vg).backward(g)
        qg.grad = kg.grad = vg.grad = None

    b_ms = time_ms(both, 2, 20)
    return f"{peer:<14} {case} {f_ms:>9.3f} {flops / f_ms / 1e9:>9.1f} {b_ms:>11.3f} {3.5 * flops / b_ms / 1e9:>12.1f}"


def main():
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    # Each (D, pattern, grad mode) is a new specialisation; past torch.compile's default
    # recompile limit (8) FlexAttention silently falls back to an unfused path.
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 256)
    flex = torch.compile(flex_attention)
    bsp = blksprs_peer.import_blksprs()
    dev = "cuda"
    pos = torch.arange(S, device=dev)
    blk64 = random_blocks().to(dev)
    sizes = variable_sizes()
    vblk = torch.repeat_interleave(torch.arange(len(sizes), device=dev), torch.tensor(sizes, device=dev))

    # name -> (mask_mod or None for dense, visible(i, j) as a [S, S] bool tensor for counting)
    patterns = {
        "dense": (None, lambda i, j: (i >= 0) & (j >= 0)),
        "causal": (lambda b, h, q, k: q >= k, lambda i, j: i >= j),
        "causal window 1024": (lambda b, h, q, k: (q >= k) & (q - k <= 1024), lambda i, j: (i >= j) & (i - j <= 1024)),
        "random 10% of 64-blocks": (lambda b, h, q, k: blk64[q // 64, k // 64], lambda i, j: blk64[i // 64, j // 64]),
        "variable blocks, block-causal": (lambda b, h, q, k: vblk[q] >= vblk[k], lambda i, j: vblk[i] >= vblk[j]),
    }
    print(f"peers: flash attention bf16, B {B} x H {H}, S {S}; TFLOP/s of attended pairs only")
    print(f"{'peer':<14} {'pattern':<30} {'D':>4} {'density':>8} {'fwd ms':>9} {'fwd TF/s':>9} {'fwd+bwd ms':>11} "
          f"{'fwd+bwd TF/s':>12}")
    for d in (64, 128):
        q, k, v, g = (torch.empty(B, H, S, d, device=dev, dtype=torch.bfloat16).uniform_(-1, 1) for _ in range(4))
        for name, (mod, vis) in patterns.items():
            rows = []
            pairs = 0
            for i0 in range(0, S, 512):  # count in slabs to bound memory
                i = pos[i0:i0 + 512, None]
                pairs += int(vis(i, pos[None, :]).sum())
            pairs *= B * H
            flops = 4.0 * d * pairs
            runs = []
            if name in ("dense", "causal"):
                def sdpa(q, k, v, causal=name == "causal"):
                    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                def sdpa_default(q, k, v, causal=name == "causal"):
                    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)

                runs.append(("SDPA flash", sdpa))
                runs.append(("SDPA default", sdpa_default))  # cuDNN where PyTorch picks it
            block_mask = None if mod is None else create_block_mask(mod, None, None, S, S, device=dev)
            runs.append(("FlexAttention", lambda q, k, v, bm=block_mask: flex(q, k, v, block_mask=bm)))
            if bsp is not None:
                try:
                    runs.append(("blksprs", blksprs_peer.attention(bsp, vis(pos[:, None], pos[None, :]), B * H, d)))
                except Exception as e:  # noqa: BLE001
                    print(f"peers: blksprs on {name} D {d} not timed ({e!r})", flush=True)
            for peer, fwd in runs:
                try:
                    rows.append(time_peer(peer, fwd, q, k, v, g, f"{name:<30} {d:>4} {pairs / (B * H * S * S):>8.3f}",
                                          flops))
                except Exception as e:  # noqa: BLE001 (a peer without this case: the others still print)
                    rows.append(f"{peer:<14} {name:<30} {d:>4} failed: {e!r}"[:300])
            for r in rows:
                print(r, flush=True)


if __name__ == "__main__":
    main()

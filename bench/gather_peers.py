"""Peer of bench_block_sparse's gather lines: torch.gather on the dense 16 x 2048 x 2048
tensor (a block-sparse tensor at density 1 holds the same elements) with the same index
patterns, as % of a same-size device copy timed the same way (CUDA events, median of 50).

Patterns (as make_idx in bench/bench_block_sparse.cu, block 64):
  dim 2 in-block:   idx[b, i, j] = (j // 64) * 64 + (17 j + i) % 64
  dim 2 random row: idx uniform over the row's 2048 columns
  dim 1 in-block:   idx[b, i, j] = (i // 64) * 64 + (17 i + j) % 64
  dim 1 random row: idx uniform over the column's 2048 rows, per element (each element
                    from another source row: one 32-byte sector a 2- or 4-byte element)
Bytes counted as ours: the indices read, the source elements read once, the output written.

Run on the GPU machine:  python3 bench/gather_peers.py
"""
import torch

from peer_timing import time_ms

B, S, BS = 16, 2048, 64


def copy_gbps(nbytes):
    half = nbytes // 2
    src = torch.ones(half, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    return 2 * half / time_ms(lambda: dst.copy_(src)) / 1e6


def make_idx(dim, local, gen):
    i = torch.arange(S, device="cuda").view(S, 1)
    j = torch.arange(S, device="cuda").view(1, S)
    if local and dim == 2:
        v = (j // BS) * BS + (17 * j + i) % BS
    elif local:
        v = (i // BS) * BS + (17 * i + j) % BS
    else:
        return torch.randint(0, S, (B, S, S), device="cuda", generator=gen)
    return v.expand(B, S, S).contiguous()


def main():
    gen = torch.Generator(device="cuda")
    gen.manual_seed(3)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    print(f"{'op':32s} {'dtype':5s} {'ms':>8s} {'GB/s':>8s} {'%size-copy':>10s}")
    for dt in (torch.float32, torch.bfloat16):
        x = torch.rand(B, S, S, device="cuda").to(dt)
        for dim in (2, 1):
            for local in (True, False):
                idx = make_idx(dim, local, gen)
                for it, name in ((torch.int64, "i64"),):
                    ix = idx.to(it)
                    ms = time_ms(lambda: torch.gather(x, dim, ix))
                    # ours reads i32 indices; count the peer's index bytes as it reads them
                    nbytes = ix.numel() * ix.element_size() + 2 * x.numel() * x.element_size()
                    gbs = nbytes / ms / 1e6
                    label = f"torch.gather dim {dim} ({'in-block' if local else 'random row'}, {name})"
                    print(f"{label:32s} {str(dt)[6:]:5s} {ms:8.3f} {gbs:8.0f} {100 * gbs / copy_gbps(nbytes):9.1f}%")


if __name__ == "__main__":
    main()

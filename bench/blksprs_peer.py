"""blksprs' block-sparse flash attention as a peer of ours (bench/attention_peers.py,
bench/gpt_torch.py). blksprs 2.5 takes an attention layout of blocks and, for the blocks a
pattern covers only in part, an element mask in its compressed form (True = hidden); it has
no causal flag of its own, so causal patterns come as masked diagonal blocks.

The package is imported from BLKSPRS_PATH (the folder holding `blksprs/`), else from
peers/blksprs-src/ of this repository.
"""
import os
import sys

import torch


def import_blksprs():
    """The blksprs package, or None (with the reason printed) where it does not import."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.environ.get("BLKSPRS_PATH", os.path.join(here, "..", "peers", "blksprs-src")))
    os.environ.setdefault("BLKSPRS_AUTOTUNE", "DEFAULT")  # no autotuning sweep inside the timings
    try:
        import blksprs
        return blksprs
    except Exception as e:  # noqa: BLE001
        print(f"peers: blksprs not available ({e!r})", flush=True)
        return None


def attention(bsp, visible, bh, d, bs=64):
    """f(q, k, v) -> o for tensors of bh · S rows of d (any leading shape of bh elements, then
    [S, d]) by blksprs.ops.flash_attention with the same pattern for every (batch, head).
    `visible` is the [S, S] bool pattern (query, key); S and d multiples of bs."""
    S = visible.shape[0]
    nb = S // bs
    blocks = visible.view(nb, bs, nb, bs).permute(0, 2, 1, 3)  # [row block, column block, bs, bs]
    any_, all_ = blocks.any(-1).any(-1), blocks.all(-1).all(-1)
    lay = any_.expand(bh, nb, nb).contiguous()
    part = any_ & ~all_
    has_mask = bool(part.any())
    mask_lay = part.expand(bh, nb, nb).contiguous()
    mask = (~blocks[part]).to(torch.bfloat16).repeat(bh, 1, 1).contiguous()  # non-zero: hidden
    lay_qkv = torch.ones(bh, nb, d // bs, device=visible.device, dtype=torch.bool)
    lay_o = bsp.layouting.build_sparsity_layout_matmul(lay, lay_qkv)
    cache = bsp.ops.flash_attention_build_layout_cache(
        lay, sparsity_layout_q=lay_qkv, sparsity_layout_k=lay_qkv, sparsity_layout_v=lay_qkv, sparsity_layout_o=lay_o)

    def f(q, k, v):
        shape = q.shape
        qs, ks, vs = (bsp.ops.to_sparse(t.reshape(bh, S, d), lay_qkv, bs) for t in (q, k, v))
        o = bsp.ops.flash_attention(qs, lay_qkv, ks, lay_qkv, vs, lay_qkv, lay, bs,
                                    attention_mask=mask if has_mask else None,
                                    sparsity_layout_mask=mask_lay if has_mask else None,
                                    layout_cache=cache, sparsity_layout_o=lay_o)
        return bsp.ops.to_dense(o, lay_o, bs).reshape(shape)

    return f

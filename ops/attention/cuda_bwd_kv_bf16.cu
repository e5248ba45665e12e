// Instantiations of the tensor-core attention bwd kv pass for bf16.
#include "ops/attention/cuda/tc_launch.cuh"

TG_ATTN_INSTANTIATE_ALL(launch_bwd_kv, BwdArgs, ::tg::bfloat16)
TG_ATTN_INSTANTIATE_NARROW_KV(::tg::bfloat16)

// Instantiations of the tensor-core attention bwd kv pass for f16.
#include "ops/attention/cuda/tc_launch.cuh"

TG_ATTN_INSTANTIATE_ALL(launch_bwd_kv, BwdArgs, ::tg::half)
TG_ATTN_INSTANTIATE_NARROW_KV(::tg::half)

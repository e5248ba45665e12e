// Instantiations of the tensor-core attention bwd q pass for bf16.
#include "ops/attention/cuda/tc_launch.cuh"

TG_ATTN_INSTANTIATE_ALL(launch_bwd_q, BwdArgs, ::tg::bfloat16)

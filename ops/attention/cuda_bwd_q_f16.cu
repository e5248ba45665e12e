// Instantiations of the tensor-core attention bwd q pass for f16.
#include "ops/attention/cuda/tc_launch.cuh"

TG_ATTN_INSTANTIATE_ALL(launch_bwd_q, BwdArgs, ::tg::half)

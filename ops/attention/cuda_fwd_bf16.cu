// Instantiations of the tensor-core attention fwd pass for bf16.
#include "ops/attention/cuda/tc_launch.cuh"

TG_ATTN_INSTANTIATE_ALL(launch_fwd, FwdArgs, ::tg::bfloat16)

"""Timing shared by the Python peer scripts of bench/ (attention_peers.py, gather_peers.py):
CUDA events around each call after a warm-up, the median of the repetitions, as the C++
benches time ours (bench_util.h)."""
import statistics

import torch


def time_ms(fn, warmup=10, reps=50):
    """Median milliseconds of fn() over `reps` calls after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)

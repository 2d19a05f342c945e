#pragma once
/// Process-wide runtime settings: LibTorch's intra-op threads and the memory allocator policy.

#include <cstdint>

namespace bayesagg {

/// The most intra-op threads accepted: 4 x the hardware threads (at least 4), at most 1024. More
/// threads than cores only add contention; a typo such as 1000 would start over a thousand.
int64_t max_threads();

/// The thread count for a requested one: 0 = this process's share of the hardware threads when
/// `processes_on_machine` processes share the machine (all of them for one; at least 1); throws
/// (naming the limit) below 0 or above `max_threads()`. Takes int64 so that 4294967297 is
/// refused, not truncated.
int resolve_threads(int64_t requested, int64_t processes_on_machine = 1);

/// Sets LibTorch's intra-op threads (`resolve_threads`; LibTorch uses one thread by default on
/// Debian's build) and returns the number used. Throws as `resolve_threads`.
int set_threads(int64_t threads, int64_t processes_on_machine = 1);

/// Keeps freed memory in the process instead of returning it to the kernel (glibc `mallopt`:
/// large mmap threshold, no heap trimming). LibTorch's CPU allocator frees every temporary; with
/// glibc's defaults each large temporary is then a fresh mmap whose first touch page-faults. On
/// this project's reference VM that dominated element-wise work (a 117 MB broadcast product: 600 ms
/// per call with the defaults, 21 ms with this setting). Call once at start-up; the cost is a
/// process that keeps its high-water mark of memory. Returns false if the C library refused.
bool retain_freed_memory();

}  // namespace bayesagg

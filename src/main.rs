#![forbid(unsafe_code)]

use std::process::ExitCode;

// The release binary is static (musl), whose allocator serialises threads and is slow
// with many small allocations: admission answered 2.5x fewer reviews with it (see
// docs/benchmarks.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    namespace_offloading::commands::main()
}

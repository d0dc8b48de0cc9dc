//! `agent-relay`: see `agent-relay --help`.

// Calls allocate on one thread and free on another (the HTTP workers and the write lane):
// mimalloc handles that without glibc's arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    huge_pages_for_the_server_only();
    agent_relay::cli::main()
}

/// A client verb (`inbox`, the hooks) lives a few milliseconds and allocates a few hundred
/// kilobytes: the kernel zeroing 2 MiB transparent huge pages for mimalloc's first touches was
/// a sixth of its time (docs/benchmarks.md, "The agent CLI's start-up"). mimalloc is built
/// without asking for huge pages (`no_thp`: its arena is reserved before `main`); where the
/// system gives them unasked (THP `always`), they are off from here on, and back on for
/// `serve`, whose heap lives long.
fn huge_pages_for_the_server_only() {
    #[cfg(target_os = "linux")]
    {
        use rustix::thread::disable_transparent_huge_pages;
        // Failing leaves the kernel's default: slower, not wrong.
        let _ = disable_transparent_huge_pages(true);
        if std::env::args_os()
            .nth(1)
            .is_some_and(|verb| verb == "serve")
        {
            let _ = disable_transparent_huge_pages(false);
        }
    }
}

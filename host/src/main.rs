//! `agent-relay`: see `agent-relay --help`.

// Calls allocate on one thread and free on another (the HTTP workers and the write lane):
// mimalloc handles that without glibc's arena locks.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    agent_relay::cli::main()
}

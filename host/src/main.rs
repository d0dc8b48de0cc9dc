//! `agent-relay`: see `agent-relay --help`.

fn main() -> std::process::ExitCode {
    agent_relay::cli::main()
}

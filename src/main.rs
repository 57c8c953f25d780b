fn main() -> std::process::ExitCode {
    lorch::main()
}

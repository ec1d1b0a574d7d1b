//! What the binaries share: argument errors as one line.

use clap::error::ErrorKind;
use clap::Parser;

/// Parses the command line. `--help` and `--version` print and exit 0; any other problem
/// prints one line, `error: <clap's message> (see <bin> --help)`, and exits 1, instead of
/// clap's several lines of usage and tips.
pub fn parse_args<A: Parser>(bin: &str) -> A {
    match A::try_parse() {
        Ok(args) => args,
        Err(e) => {
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                std::process::exit(0);
            }
            // clap's message up to its first blank line (usage and tips follow it).
            let msg = e.to_string();
            let line: Vec<&str> = msg
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            let line = line.join(" ");
            let line = line.strip_prefix("error: ").unwrap_or(&line);
            eprintln!("error: {line} (see {bin} --help)");
            std::process::exit(1);
        }
    }
}

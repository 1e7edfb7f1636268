//! `armor-psk`: an Armor API test double that speaks both sign-in schemes, and the tools to
//! sign requests, make keys and hash passwords.

mod keys_file;
mod serve;
mod tools;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "armor-psk", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Armor API test double (ARMOR-PSK and FH-AUTH, the route policy, /auth).
    Serve(serve::ServeArgs),
    /// Print the Authorization header (or a whole curl command) for one request.
    Sign(tools::SignArgs),
    /// Make a new API key (UUID v4 id, 32 random bytes of secret).
    Keygen(tools::KeygenArgs),
    /// Read one line from stdin and print its argon2 PHC hash.
    HashPassword,
}

/// Where a secret comes from: never the command line itself, where `ps` and shell history
/// would show it.
#[derive(Args, Clone)]
#[group(required = true, multiple = false)]
struct SecretSource {
    /// Read the secret from this environment variable.
    #[arg(long, value_name = "VAR")]
    secret_env: Option<String>,
    /// Read the secret from this file (one trailing newline is dropped).
    #[arg(long, value_name = "PATH")]
    secret_file: Option<PathBuf>,
}

/// A failure the user can act on: one line, then exit status 2.
#[derive(Debug)]
struct Fatal(String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(error: E) -> Self {
        Fatal(error.to_string())
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Sign(args) => tools::sign(args),
        Command::Keygen(args) => tools::keygen(args),
        Command::HashPassword => tools::hash_password(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fatal(message)) => {
            eprintln!("armor-psk: error: {message}");
            ExitCode::from(2)
        }
    }
}

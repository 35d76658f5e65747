//! `party-node`: the daemon each organisation runs, and its CLI.
//!
//! Today it offers `party-node demo`, an in-process three-party run of the MPC core; the QUIC
//! mesh, the job scheduler, the store and the control API are the next milestones.
#![deny(unsafe_code)]

mod demo;

use clap::{Parser, Subcommand};

/// Membrane party node.
#[derive(Parser)]
#[command(version, about = "Membrane: private inference and training across organisations")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the three parties (Alice, Bob, dealer) in this process on a built-in example: Bob's
    /// private batch scored by Alice's private linear model, revealed to Bob only.
    Demo {
        /// Batch size (Bob's number of private records).
        #[arg(long, default_value_t = 128)]
        batch: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { batch } => demo::run(batch),
    }
}

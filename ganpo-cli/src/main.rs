//! The `ganpo` command-line tool: one subcommand per file in [`commands`], the IMDb experiment in
//! [`experiment`]; everything they train or compute comes from the `ganpo-train` library.

mod commands;
mod experiment;
mod tensorboard;
mod trl;

use anyhow::Result;
use clap::{Parser, Subcommand};
use ganpo_core::backend::BackendKind;

/// The system allocator, ending a chat-template rendering that asks for more than 256 MiB with a
/// message naming the template instead of an abort (`ganpo_train::data::template_guard`).
#[global_allocator]
static ALLOC: ganpo_train::data::TemplateGuard = ganpo_train::data::TemplateGuard;

/// Preference optimization of causal language models with GANPO.
#[derive(Parser)]
#[command(name = "ganpo", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a tiny causal LM with DPO and with DPO + GANPO from the same start on a synthetic
    /// task, then compare them on held-out pairs (seconds on 2 CPU cores).
    Toy(commands::toy::Args),
    /// The whole job in a few minutes on a CPU: SFT a tiny model on a synthetic task with an
    /// exact reward, sample and label pairs, train DPO / SimPO with and without GANPO, evaluate
    /// (oracle reward, KL, held-out accuracy), write tables and plots.
    Quickstart(commands::quickstart::Args),
    /// Write a built-in task's files: an untrained model, SFT text, prompts (`ganpo task`).
    Task(commands::task::Args),
    /// Supervised fine-tuning on text or prompt/completion rows.
    Sft(commands::sft::Args),
    /// Sample completions of a prompt file (several per prompt) to JSONL.
    Sample(commands::sample::Args),
    /// Reward models: train one on labelled texts or preference pairs, evaluate one.
    #[command(subcommand)]
    Reward(commands::reward::Command),
    /// Experiments: `ganpo experiment run configs/experiments/imdb.toml [--quick]`.
    #[command(subcommand)]
    Experiment(experiment::Command),
    /// Score generations with a reward function (adds a `reward` field; prints the mean).
    Score(commands::score::Args),
    /// Make preference pairs (best vs worst completion per prompt) from scored samples.
    Pairs(commands::pairs::Args),
    /// Sampled sequence-level KL divergence of a model from a reference, with its standard error.
    Kl(commands::kl::Args),
    /// Preference-train a model (DPO, SimPO, ... plus GANPO) from a TOML run configuration.
    Train(commands::train::Args),
    /// Run a `trl dpo` command line as it is: `ganpo trl dpo --config dpo.yaml
    /// --learning_rate 5e-7 ...` (TRL's keys and defaults; what ganpo lacks is refused by name).
    Trl(commands::trl::Args),
    /// Print the DPO evaluation metrics of a model on a dataset, as TRL's evaluate() names them.
    Eval(commands::eval::Args),
    /// Write PNG plots of a training run's metrics (losses, rewards, GANPO diagnostics).
    Plot(commands::plot::Args),
    /// Show a checkpoint's architecture, sizes, parameter count, weight dtypes and tokenizer.
    Inspect(commands::inspect::Args),
    /// Print, as JSON, the per-token log-probabilities of a completion given a prompt.
    Logprobs(commands::logprobs::Args),
    /// Continue one or more prompts (greedy or sampled, KV-cached, batched); prints JSON.
    Generate(commands::generate::Args),
    /// Write a model (HF directory, GGUF or ONNX export) as an HF directory with f32 safetensors.
    Export(commands::export::Args),
    /// Time the training step (DPO / SimPO, with or without GANPO) of a named model shape with
    /// random weights and tokens; prints JSON (ms/step, tokens/s, per-phase breakdown, memory).
    Bench(commands::bench::Args),
    /// List the compute backends compiled into this binary.
    Backends,
}

fn main() -> Result<()> {
    // Log lines go to stderr: `info` by default (RUST_LOG overrides), colours only on a terminal.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match Cli::parse().command {
        Command::Toy(args) => commands::toy::run(args),
        Command::Quickstart(args) => commands::quickstart::run(args),
        Command::Task(args) => commands::task::run(args),
        Command::Sft(args) => commands::sft::run(args),
        Command::Sample(args) => commands::sample::run(args),
        Command::Reward(command) => commands::reward::run(command),
        Command::Experiment(command) => experiment::run(command),
        Command::Score(args) => commands::score::run(args),
        Command::Pairs(args) => commands::pairs::run(args),
        Command::Kl(args) => commands::kl::run(args),
        Command::Train(args) => commands::train::run(args),
        Command::Trl(args) => commands::trl::run(args),
        Command::Eval(args) => commands::eval::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Inspect(args) => commands::inspect::run(args),
        Command::Logprobs(args) => commands::logprobs::run(args),
        Command::Generate(args) => commands::generate::run(args),
        Command::Export(args) => commands::export::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Backends => {
            for kind in BackendKind::ALL {
                let state = if kind.is_compiled() {
                    "compiled in"
                } else {
                    "not compiled in"
                };
                println!(
                    "{:<5} {state} (cargo feature `{}`)",
                    kind.name(),
                    kind.feature()
                );
            }
            Ok(())
        }
    }
}

//! `omnisync generate man|completions DIR`: the man pages and shell completions, generated
//! from the clap definition of the command line so they never drift from it. Hidden from
//! `--help`; `scripts/build-deb.sh` runs it to put them into the `.deb`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use clap_complete::Shell;

/// What to generate.
#[derive(Subcommand)]
pub enum Generate {
    /// Man pages: omnisync.1 and one omnisync-SUBCOMMAND.1 per subcommand, into DIR.
    Man {
        /// The directory to write them to (created if missing).
        dir: PathBuf,
    },
    /// Completions for bash (omnisync.bash), zsh (_omnisync) and fish (omnisync.fish), into DIR.
    Completions {
        /// The directory to write them to (created if missing).
        dir: PathBuf,
    },
}

/// Writes what `what` asks for, from `cmd` (the whole CLI), and prints each file written.
pub fn run(mut cmd: clap::Command, what: &Generate) -> anyhow::Result<()> {
    let dir = match what {
        Generate::Man { dir } | Generate::Completions { dir } => dir,
    };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    match what {
        Generate::Man { dir } => {
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages to {}", dir.display()))?;
            list(dir, |name| name.ends_with(".1"))?;
        }
        Generate::Completions { dir } => {
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let file = clap_complete::generate_to(shell, &mut cmd, "omnisync", dir)
                    .with_context(|| format!("writing {shell} completions to {}", dir.display()))?;
                println!("{}", file.display());
            }
        }
    }
    Ok(())
}

fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> anyhow::Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| keep(n))
        .collect();
    names.sort();
    for n in names {
        println!("{}", dir.join(n).display());
    }
    Ok(())
}

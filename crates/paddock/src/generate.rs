//! `paddock generate`: the man page and the shell completion scripts, made from the clap
//! command itself (as ripgrep does), so they never drift from the real flags. Packaging
//! (scripts/build-deb) writes them into the .deb.

use std::io::Write;

use clap_complete::Shell;

/// What `paddock generate` prints.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// The man page, paddock(1), in roff.
    Man,
    /// The bash completion script.
    CompleteBash,
    /// The zsh completion script.
    CompleteZsh,
    /// The fish completion script.
    CompleteFish,
}

/// Writes `what`, made from `cmd` (the whole command line interface), to stdout.
pub fn print(what: What, mut cmd: clap::Command) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let shell = match what {
        What::Man => return out.write_all(&man(cmd)?),
        What::CompleteBash => Shell::Bash,
        What::CompleteZsh => Shell::Zsh,
        What::CompleteFish => Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "paddock", &mut out);
    out.flush()
}

/// roff's apostrophe preamble, which clap_mangen writes before each part it renders.
const PREAMBLE: &str = ".ie \\n(.g .ds Aq \\(aq\n.el .ds Aq '\n";

/// The FILES section of the man page.
const FILES: &[(&str, &str)] = &[
    (
        crate::config::DEFAULT_PATH,
        "The daemon's config file: the flags of paddock serve as TOML keys (see --config); the flags win.",
    ),
    (
        crate::serve::DEFAULT_SOCKET,
        "The daemon's unix socket (--socket).",
    ),
    (
        crate::serve::DEFAULT_STATE_DIR,
        "The daemon's state: its lock, identity, database and the sandboxes' logs (--state-dir).",
    ),
];

/// One man page, paddock(1): the top-level synopsis, description and options, then one
/// section per (visible) subcommand with its own synopsis, description and options, then
/// the version (with the commit).
pub fn man(mut cmd: clap::Command) -> std::io::Result<Vec<u8>> {
    cmd.build();
    let top = clap_mangen::Man::new(cmd.clone());
    let mut page = Vec::new();
    top.render_title(&mut page)?;
    let mut part = |f: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>, demote: bool| {
        let mut buf = Vec::new();
        f(&mut buf)?;
        let text = String::from_utf8_lossy(&buf);
        let text = text.strip_prefix(PREAMBLE).unwrap_or(&text);
        for line in text.lines() {
            match line.strip_prefix(".SH ") {
                Some(h) if demote => writeln!(page, ".SS {h}")?,
                _ => writeln!(page, "{line}")?,
            }
        }
        std::io::Result::Ok(())
    };
    part(&|w| top.render_name_section(w), false)?;
    part(&|w| top.render_synopsis_section(w), false)?;
    part(&|w| top.render_description_section(w), false)?;
    part(&|w| top.render_options_section(w), false)?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        let name = sub.get_name();
        part(
            &|w| writeln!(w, ".SH \"PADDOCK {}\"", name.to_uppercase()),
            false,
        )?;
        let m = clap_mangen::Man::new(sub.clone());
        part(&|w| m.render_synopsis_section(w), true)?;
        part(&|w| m.render_description_section(w), true)?;
        part(&|w| m.render_options_section(w), true)?;
    }
    part(
        &|w| {
            writeln!(w, ".SH FILES")?;
            for (path, what) in FILES {
                writeln!(w, ".TP\n{path}\n{what}")?;
            }
            Ok(())
        },
        false,
    )?;
    part(&|w| top.render_version_section(w), false)?;
    Ok(page)
}

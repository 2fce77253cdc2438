//! What packaging relies on: `--version` names the commit, and `paddock generate` makes a
//! man page and completion scripts that cover every subcommand. No daemon, no root.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_paddock");

fn out(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().unwrap();
    assert!(o.status.success(), "paddock {args:?}: {o:?}");
    String::from_utf8(o.stdout).unwrap()
}

/// The visible subcommands, from `paddock --help`.
fn subcommands() -> Vec<String> {
    let help = out(&["--help"]);
    let list = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|s| s.split("\n\n").next())
        .expect("a Commands: list");
    let v: Vec<String> = list
        .lines()
        // A command's line is indented by two spaces; its wrapped text by more.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    assert!(v.len() > 10 && v.contains(&"serve".to_owned()), "{v:?}");
    v
}

#[test]
fn version_names_the_commit() {
    let v = out(&["--version"]);
    let rest = v
        .strip_prefix(&format!("paddock {} (commit ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("{v:?}"));
    let commit = rest.trim_end().strip_suffix(')').unwrap();
    assert!(
        commit == "unknown"
            || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_alphanumeric())),
        "{v:?}"
    );
}

#[test]
fn man_page_covers_every_subcommand() {
    let man = out(&["generate", "man"]);
    assert!(man.starts_with(".ie \\n(.g .ds Aq"), "roff");
    assert!(man.contains(".TH paddock 1"), "title");
    assert!(man.contains("/etc/paddock/config.toml"), "FILES");
    assert!(man.contains("(commit "), "version with the commit");
    for c in subcommands() {
        let head = format!(".SH \"PADDOCK {}\"", c.to_uppercase());
        assert!(man.contains(&head), "man page lacks {head}");
    }
    // Flags of subcommands are there (roff escapes dashes).
    assert!(man.contains("\\-\\-max\\-sandboxes"), "serve's flags");
    assert!(
        !man.contains("PADDOCK GENERATE"),
        "hidden commands stay hidden"
    );
}

#[test]
fn completions_cover_every_subcommand() {
    for shell in ["bash", "zsh", "fish"] {
        let s = out(&["generate", &format!("complete-{shell}")]);
        for c in subcommands() {
            assert!(s.contains(&c), "{shell} completion lacks {c}");
        }
        assert!(s.contains("max-sandboxes"), "{shell}: serve's flags");
    }
    assert!(out(&["generate", "complete-bash"]).contains("complete -F"));
    assert!(out(&["generate", "complete-zsh"]).starts_with("#compdef paddock"));
    assert!(out(&["generate", "complete-fish"]).contains("complete -c paddock"));
}

//! The daemon's config file, `/etc/paddock/config.toml`: the flags of `paddock serve` as
//! TOML keys (the long flag names, kebab-case: `max-sandboxes = 100`, `delegated = true`,
//! `state-dir = "/var/lib/paddock"`), so that a unit file or a package can keep its
//! settings apart from the command line.
//!
//! Over 600 lines with its unit tests (about 380 without): the tests, including the drift
//! test against deploy/config.toml, sit next to the merge they check.
//!
//! How it is applied: the command line is parsed first; each key of the file whose flag
//! was *not* given on the command line or by its environment variable becomes a `--key=value`
//! token added to the command line, which is then parsed again. So every check of the flags
//! (types, ranges, `requires`, `conflicts_with`) applies to the file's values with the very
//! same code, and the command line and the environment always win: a key is dropped when its
//! flag was given, and when it conflicts with a flag that was given (`delegated = true` in
//! the file and `--cgroup-root` on the command line: the command line's choice holds).
//!
//! Values have their natural TOML type: `true`/`false` for switches (`false` is the default
//! of every switch: it adds nothing, and a switch set in the file is undone only by editing
//! the file or by `--config none`), integers for counts (or a string where the flag takes
//! units, e.g. `log-max-size = "10M"`), strings for paths, addresses and durations, arrays
//! for flags that may be repeated. Unknown keys, tables, values of another type, and a file
//! that cannot be read are errors that name the file and the key; nothing is started then.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::ArgAction;
use clap::parser::{ArgMatches, ValueSource};

/// Where `paddock serve` looks for its config file when `--config` is not given (a missing
/// file there is no error: the built-in defaults hold).
pub const DEFAULT_PATH: &str = "/etc/paddock/config.toml";

/// `--config none`: read no config file.
pub const NONE: &str = "none";

/// Largest config file read, in bytes.
pub const MAX_SIZE: u64 = 1 << 20;

/// The global flags a config file may set besides `serve`'s own (the other global flags,
/// `--json` and `--request-timeout`, concern only the client commands).
const GLOBAL_KEYS: &[&str] = &["socket", "log-format"];

/// Which TOML values a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A switch: `true` or `false`.
    Switch,
    /// A whole number (or a string, for flags that take units).
    Integer,
    /// A number (or a string).
    Number,
    /// A string.
    String,
}

/// A key a config file may hold: a flag of `paddock serve`.
#[derive(Debug, Clone)]
pub struct Key {
    /// The key, the flag's long name.
    pub name: String,
    /// The flag's clap ID.
    pub id: String,
    /// The TOML values it takes.
    pub kind: Kind,
    /// Whether the flag may be repeated (the key then also takes an array).
    pub repeated: bool,
    /// The flag's default as on the command line, if it has one.
    pub default: Option<String>,
}

/// The keys a config file may hold, from `root`, the whole command line interface: the
/// long flags of `serve` that are shown in its help (hidden, test-only flags are not
/// keys), without `--config` itself, `--help` and `--version`, plus [`GLOBAL_KEYS`].
pub fn keys(root: &clap::Command) -> Vec<Key> {
    let mut root = root.clone();
    root.build();
    let serve = root
        .find_subcommand("serve")
        .expect("paddock has a serve command");
    let globals: Vec<&clap::Arg> = root.get_arguments().filter(|a| a.is_global_set()).collect();
    serve
        .get_arguments()
        .filter(|a| !a.is_hide_set())
        .filter_map(|a| Some((a, a.get_long()?)))
        .filter(|(a, long)| {
            !matches!(*long, "help" | "version" | "config")
                && (!globals.iter().any(|g| g.get_id() == a.get_id()) || GLOBAL_KEYS.contains(long))
        })
        .map(|(a, long)| Key {
            name: long.to_owned(),
            id: a.get_id().to_string(),
            kind: kind_of(a),
            repeated: matches!(a.get_action(), ArgAction::Append),
            default: match a.get_default_values() {
                [v] => Some(v.to_string_lossy().into_owned()),
                _ => None,
            },
        })
        .collect()
}

fn kind_of(a: &clap::Arg) -> Kind {
    use std::any::TypeId;
    if matches!(a.get_action(), ArgAction::SetTrue) {
        return Kind::Switch;
    }
    let t = a.get_value_parser().type_id();
    let ints = [
        TypeId::of::<u8>(),
        TypeId::of::<u16>(),
        TypeId::of::<u32>(),
        TypeId::of::<u64>(),
        TypeId::of::<usize>(),
        TypeId::of::<i8>(),
        TypeId::of::<i16>(),
        TypeId::of::<i32>(),
        TypeId::of::<i64>(),
        TypeId::of::<isize>(),
    ];
    if ints.iter().any(|i| t == *i) {
        Kind::Integer
    } else if t == TypeId::of::<f64>() || t == TypeId::of::<f32>() {
        Kind::Number
    } else {
        Kind::String
    }
}

/// What a config file set, for the daemon's log.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// The file.
    pub path: PathBuf,
    /// The keys taken from it.
    pub keys: Vec<String>,
    /// The keys of the file that the command line or the environment overrode.
    pub overridden: Vec<String>,
}

impl Applied {
    /// Wraps an error of the flags parsed with the file's keys so that it names the file.
    pub fn wrap(&self, e: clap::Error) -> clap::Error {
        let text = e.render().to_string();
        let text: Vec<&str> = text
            .trim()
            .lines()
            .filter(|l| !l.starts_with("For more information"))
            .collect();
        let text = text.join("\n");
        let text = text.trim().trim_start_matches("error: ");
        clap::Error::raw(
            e.kind(),
            format!(
                "config file {}: {text}\n(the file's keys {:?} are read as the flags of `paddock serve` \
                 of the same names; fix the file, give the flag on the command line to override it, \
                 or pass --config none to ignore the file)\n",
                self.path.display(),
                self.keys
            ),
        )
    }
}

fn error(msg: String) -> clap::Error {
    clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{msg}\n"))
}

/// The config file to read: `--config PATH` (or `PADDOCK_CONFIG`), `none` for none, and
/// without it [`DEFAULT_PATH`] if that exists.
pub fn resolve(explicit: Option<&OsStr>) -> Result<Option<PathBuf>, clap::Error> {
    match explicit {
        Some(p) if p == NONE => Ok(None),
        Some(p) if p.is_empty() => Err(error(
            "--config: an empty path; give a file, or `none` to read no config file".into(),
        )),
        Some(p) => Ok(Some(PathBuf::from(p))),
        None => match Path::new(DEFAULT_PATH).try_exists() {
            Ok(true) => Ok(Some(DEFAULT_PATH.into())),
            Ok(false) => Ok(None),
            Err(e) => Err(error(format!(
                "cannot tell whether the config file {DEFAULT_PATH} exists: {e}; fix the \
                 permissions of /etc/paddock, or pass --config none to read no config file"
            ))),
        },
    }
}

/// Reads a config file (at most [`MAX_SIZE`] bytes of UTF-8).
pub fn read(path: &Path) -> Result<String, clap::Error> {
    use std::io::Read;
    let what = |e: std::io::Error| {
        error(format!(
            "cannot read the config file {}: {e}; fix the path or its permissions, or pass \
             --config none to read no config file",
            path.display()
        ))
    };
    use std::os::unix::fs::OpenOptionsExt;
    // Opened without blocking (a FIFO planted at the path answers at once instead of
    // holding the daemon's start), as the token file is, and checked on the open file.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(what)?;
    let meta = f.metadata().map_err(what)?;
    if !meta.is_file() {
        return Err(error(format!(
            "the config file {} is not a regular file; pass the path of a TOML file, or \
             --config none",
            path.display()
        )));
    }
    let mut bytes = Vec::new();
    f.take(MAX_SIZE + 1).read_to_end(&mut bytes).map_err(what)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(error(format!(
            "the config file {} is larger than {MAX_SIZE} bytes; it holds a few flags, so this \
             is not a config file",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|e| {
        error(format!(
            "the config file {} is not UTF-8 (byte {}); TOML files are UTF-8",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The command-line tokens of a config file's text: for each key, its flag's ID and the
/// `--key=value` tokens (none for `false`), in the file's order. Checks every key and
/// value type; the values themselves are checked by the flags' own parsers later.
pub fn tokens(
    path: &Path,
    text: &str,
    keys: &[Key],
) -> Result<Vec<(String, Vec<OsString>)>, clap::Error> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        error(format!(
            "the config file {} is not valid TOML: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    let mut out = Vec::new();
    for (name, value) in &table {
        let Some(key) = keys.iter().find(|k| k.name == *name) else {
            let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
            return Err(error(format!(
                "config file {}: unknown key `{name}`; the keys are the long flags of `paddock \
                 serve` without their dashes ({}); remove it or correct its name",
                path.display(),
                names.join(", ")
            )));
        };
        let values: Vec<&toml::Value> = match value {
            toml::Value::Array(a) if key.repeated => a.iter().collect(),
            v => vec![v],
        };
        let mut toks = Vec::new();
        for v in values {
            if let Some(t) = token(key, v).map_err(|want| {
                error(format!(
                    "config file {}: key `{name}` must be {want}, not {}{}",
                    path.display(),
                    describe(v),
                    key.default
                        .as_deref()
                        .map(|d| format!(" (its default: {})", example(key, d)))
                        .unwrap_or_default()
                ))
            })? {
                toks.push(t);
            }
        }
        out.push((key.id.clone(), toks));
    }
    Ok(out)
}

/// `key = value` for a default value, as the file would hold it.
pub fn example(key: &Key, default: &str) -> String {
    match key.kind {
        Kind::Integer | Kind::Number if default.parse::<f64>().is_ok() => {
            format!("{} = {default}", key.name)
        }
        Kind::Switch => format!("{} = {default}", key.name),
        _ => format!("{} = {}", key.name, toml::Value::String(default.into())),
    }
}

fn describe(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => format!("the string {}", toml::Value::String(s.clone())),
        toml::Value::Integer(i) => format!("the integer {i}"),
        toml::Value::Float(f) => format!("the number {f}"),
        toml::Value::Boolean(b) => format!("the boolean {b}"),
        toml::Value::Datetime(d) => format!("the date {d}"),
        toml::Value::Array(_) => "an array".into(),
        toml::Value::Table(_) => "a table (keys are flat: no [sections])".into(),
    }
}

/// The token of one value, or what the key wants instead.
fn token(key: &Key, v: &toml::Value) -> Result<Option<OsString>, &'static str> {
    let flag = |s: &str| Some(OsString::from(format!("--{}={s}", key.name)));
    match (key.kind, v) {
        (Kind::Switch, toml::Value::Boolean(true)) => Ok(Some(format!("--{}", key.name).into())),
        (Kind::Switch, toml::Value::Boolean(false)) => Ok(None),
        (Kind::Switch, _) => Err("true or false"),
        (Kind::Integer | Kind::Number, toml::Value::Integer(i)) => Ok(flag(&i.to_string())),
        (Kind::Number, toml::Value::Float(f)) => Ok(flag(&f.to_string())),
        (Kind::Integer | Kind::Number | Kind::String, toml::Value::String(s)) => Ok(flag(s)),
        (Kind::Integer, _) => Err("a whole number (or a string with a unit)"),
        (Kind::Number, _) => Err("a number"),
        (Kind::String, _) => Err("a string (in double quotes)"),
    }
}

/// Whether a value of `id` came from the command line or the environment.
fn given(id: &str, sub: &ArgMatches, root: &ArgMatches) -> bool {
    [sub, root].iter().any(|m| {
        matches!(
            m.try_contains_id(id).ok().and_then(|_| m.value_source(id)),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    })
}

/// The command line with a config file's keys added: `argv` parsed as `root` (the whole
/// interface) and `sub` (its `serve` matches) was; `path` the file, `text` its content.
/// Keys whose flag was given, or conflicts with a flag given, are left out (see the module
/// doc). The tokens go before a `--`, if any.
pub fn merge(
    cli: &clap::Command,
    argv: &[OsString],
    root: &ArgMatches,
    sub: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<(Vec<OsString>, Applied), clap::Error> {
    let keys = keys(cli);
    let mut built = cli.clone();
    built.build();
    let serve = built.find_subcommand("serve").expect("a serve command");
    let given_ids: Vec<&clap::Arg> = serve
        .get_arguments()
        .filter(|a| given(a.get_id().as_str(), sub, root))
        .collect();
    let conflicts = |id: &str| -> bool {
        let Some(arg) = serve.get_arguments().find(|a| a.get_id() == id) else {
            return false;
        };
        let mine = serve.get_arg_conflicts_with(arg);
        given_ids.iter().any(|g| {
            mine.iter().any(|c| c.get_id() == g.get_id())
                || serve
                    .get_arg_conflicts_with(g)
                    .iter()
                    .any(|c| c.get_id() == id)
        })
    };
    let mut applied = Applied {
        path: path.to_owned(),
        ..Applied::default()
    };
    let mut add = Vec::new();
    for (id, toks) in tokens(path, text, &keys)? {
        let name = keys.iter().find(|k| k.id == id).map(|k| k.name.clone());
        let name = name.unwrap_or_else(|| id.clone());
        if given(&id, sub, root) || conflicts(&id) {
            applied.overridden.push(name);
            continue;
        }
        applied.keys.push(name);
        add.extend(toks);
    }
    let at = argv.iter().position(|a| a == "--").unwrap_or(argv.len());
    let mut out = argv[..at].to_vec();
    out.extend(add);
    out.extend_from_slice(&argv[at..]);
    Ok((out, applied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Cli, Cmd};
    use clap::CommandFactory;

    /// Parses `paddock serve ARGS --config FILE` with `toml` as the file.
    fn serve(toml: &str, args: &[&str]) -> Result<(crate::serve::ServeArgs, Cli), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml).unwrap();
        let mut argv: Vec<OsString> = vec!["paddock".into(), "serve".into()];
        argv.extend(args.iter().map(OsString::from));
        argv.push("--config".into());
        argv.push(path.clone().into());
        match crate::parse(argv) {
            Ok((mut cli, applied)) => {
                assert_eq!(applied.unwrap().path, path);
                match std::mem::replace(&mut cli.command, Cmd::Node) {
                    Cmd::Serve(a) => Ok((*a, cli)),
                    c => panic!("not serve: {c:?}"),
                }
            }
            Err(e) => Err(e
                .render()
                .to_string()
                .replace(&path.display().to_string(), "FILE")),
        }
    }

    #[test]
    fn the_files_values_apply_with_their_natural_types() {
        let (a, cli) = serve(
            r#"
                max-sandboxes = 5
                delegated = true
                stop-sandboxes-on-exit = false
                log-format = "json"
                socket = "/run/x.sock"
                header-timeout = "3s"
                log-max-size = "1M"
                log-max-files = 7
                uid-range = "none"
                net-pool = "10.9.0.0/24"
                listen = "127.0.0.1:7070"
                token-file = "/etc/paddock/token"
            "#,
            &[],
        )
        .unwrap();
        assert_eq!(a.max_sandboxes, Some(5));
        assert!(a.delegated);
        assert!(!a.stop_sandboxes_on_exit);
        assert_eq!(cli.log_format, crate::logging::Format::Json);
        assert_eq!(cli.socket, PathBuf::from("/run/x.sock"));
        assert_eq!(a.header_timeout, std::time::Duration::from_secs(3));
        assert_eq!(a.log_max_size, 1 << 20);
        assert_eq!(a.log_max_files, 7);
        assert!(a.uid_range.0.is_none());
        assert_eq!(a.net_pool.net_pool.0.to_string(), "10.9.0.0/24");
        assert_eq!(a.listen, Some("127.0.0.1:7070".parse().unwrap()));
        // An integer where the flag takes units.
        assert_eq!(serve("log-max-size = 0", &[]).unwrap().0.log_max_size, 0);
        // Untouched keys keep the flags' defaults.
        assert_eq!(a.retain_stopped_count, 1000);
    }

    #[test]
    fn the_command_line_wins_over_the_file() {
        let (a, cli) = serve(
            "max-sandboxes = 5\nlog-format = \"json\"\nsocket = \"/run/x.sock\"\nlog-max-files = 7",
            &[
                "--max-sandboxes",
                "9",
                "--socket=/run/y.sock",
                "--log-format",
                "text",
            ],
        )
        .unwrap();
        assert_eq!(a.max_sandboxes, Some(9));
        assert_eq!(a.log_max_files, 7);
        assert_eq!(cli.socket, PathBuf::from("/run/y.sock"));
        assert_eq!(cli.log_format, crate::logging::Format::Text);
        // A global flag given before the subcommand wins too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "socket = \"/run/x.sock\"").unwrap();
        let argv: Vec<OsString> = ["paddock", "--socket", "/run/z.sock", "serve", "--config"]
            .iter()
            .map(OsString::from)
            .chain([path.into_os_string()])
            .collect();
        let (cli, applied) = crate::parse(argv).unwrap();
        assert_eq!(cli.socket, PathBuf::from("/run/z.sock"));
        assert_eq!(applied.unwrap().overridden, ["socket"]);
    }

    /// A key that conflicts with a flag given yields to it; conflicting keys in the file
    /// itself, and a key whose `requires` is unmet, are errors that name the file.
    #[test]
    fn conflicts_and_requirements() {
        let (a, _) = serve("delegated = true", &["--cgroup-root", "/sys/fs/cgroup/x"]).unwrap();
        assert!(!a.delegated);
        assert_eq!(a.cgroup_root, Some("/sys/fs/cgroup/x".into()));
        let (a, _) = serve("cgroup-root = \"/sys/fs/cgroup/x\"", &["--delegated"]).unwrap();
        assert!(a.delegated);
        assert_eq!(a.cgroup_root, None);
        let e = serve("delegated = true\ncgroup-root = \"/x\"", &[]).unwrap_err();
        assert!(
            e.contains("config file FILE") && e.contains("cannot be used with"),
            "{e}"
        );
        let e = serve("listen = \"127.0.0.1:7070\"", &[]).unwrap_err();
        assert!(
            e.contains("config file FILE") && e.contains("--token-file"),
            "{e}"
        );
        assert!(e.contains("--config none"), "{e}");
        // The requirement met by the command line, or by the file.
        let (a, _) = serve("listen = \"127.0.0.1:7070\"", &["--token-file", "/t"]).unwrap();
        assert_eq!(a.token_file, Some("/t".into()));
        let (a, _) = serve("token-file = \"/t\"", &["--listen", "127.0.0.1:1"]).unwrap();
        assert_eq!(a.token_file, Some("/t".into()));
        // Met by neither: the command line's own error (with no file), or the file's.
        let e = crate::parse(
            ["paddock", "serve", "--config", "none", "--token-file", "/t"]
                .iter()
                .map(OsString::from)
                .collect(),
        )
        .unwrap_err()
        .render()
        .to_string();
        assert!(e.contains("--listen") && !e.contains("config file"), "{e}");
        let e = serve("max-sandboxes = 1", &["--token-file", "/t"]).unwrap_err();
        assert!(e.contains("--listen"), "{e}");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        for (toml, want) in [
            ("max-sandboxs = 1", "unknown key `max-sandboxs`"),
            ("[serve]\nmax-sandboxes = 1", "unknown key `serve`"),
            (
                "max-sandboxes = \"ten\"",
                "invalid value 'ten' for '--max-sandboxes",
            ),
            (
                "max-sandboxes = -1",
                "invalid value '-1' for '--max-sandboxes",
            ),
            (
                "max-sandboxes = 1.5",
                "key `max-sandboxes` must be a whole number",
            ),
            ("state-dir = 5", "key `state-dir` must be a string"),
            (
                "delegated = \"yes\"",
                "key `delegated` must be true or false",
            ),
            ("delegated = 1", "key `delegated` must be true or false"),
            (
                "state-dir = [\"/a\", \"/b\"]",
                "key `state-dir` must be a string",
            ),
            (
                "log-max-files = 0",
                "invalid value '0' for '--log-max-files",
            ),
            ("header-timeout = \"0\"", "must be more than 0"),
            ("max-sandboxes = ", "not valid TOML"),
            ("reconcile-interval = 1", "unknown key `reconcile-interval`"),
            ("config = \"/x\"", "unknown key `config`"),
            ("json = true", "unknown key `json`"),
        ] {
            let e = serve(toml, &[]).expect_err(toml);
            assert!(
                e.contains("config file FILE") || e.contains("FILE"),
                "{toml}: {e}"
            );
            assert!(e.contains(want), "{toml}: want {want:?} in {e}");
        }
        let e = crate::parse(
            ["paddock", "serve", "--config", "/nonexistent/paddock.toml"]
                .iter()
                .map(OsString::from)
                .collect(),
        )
        .unwrap_err()
        .render()
        .to_string();
        assert!(
            e.contains("/nonexistent/paddock.toml") && e.contains("No such file"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path()).unwrap_err().render().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        // A FIFO with no writer: refused at once, not waited on (on a thread, so a read
        // that blocks fails the test instead of hanging it).
        let fifo = dir.path().join("fifo.toml");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read(&fifo).map_err(|e| e.render().to_string()));
        });
        let e = rx
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("reading a FIFO config file blocked")
            .unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn config_none_reads_nothing() {
        let argv = ["paddock", "serve", "--config", "none"]
            .iter()
            .map(OsString::from)
            .collect();
        let (_, applied) = crate::parse(argv).unwrap();
        assert!(applied.is_none());
        assert_eq!(resolve(Some(OsStr::new("none"))).unwrap(), None);
    }

    /// deploy/config.toml, the commented default config the package installs: as shipped
    /// it sets nothing; with every `# key = value` line uncommented it holds every key of
    /// `paddock serve` once, each at the flag's default (switches false), and every value
    /// has the key's type. A flag added, renamed or given another default fails this test
    /// until the file follows.
    #[test]
    fn the_shipped_config_matches_the_serve_flags() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let keys = keys(&Cli::command());
        assert!(
            tokens(&path, &text, &keys).unwrap().is_empty(),
            "nothing set"
        );
        let (a, _) = serve(&text, &[]).unwrap();
        assert_eq!(a.max_sandboxes, None);
        let uncommented: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
            .map(|l| format!("{l}\n"))
            .collect();
        let table: toml::Table = uncommented.parse().expect("the commented keys are TOML");
        let mut missing = Vec::new();
        for k in &keys {
            let Some(v) = table.get(&k.name) else {
                missing.push(k.name.clone());
                continue;
            };
            token(k, v).unwrap_or_else(|want| panic!("{}: must be {want}", k.name));
            let shown = match v {
                toml::Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            match (&k.default, k.kind) {
                (Some(d), _) => assert_eq!(&shown, d, "the default of `{}`", k.name),
                (None, Kind::Switch) => assert_eq!(shown, "false", "switch `{}`", k.name),
                (None, _) => {}
            }
        }
        assert!(
            missing.is_empty(),
            "keys missing from {}: {missing:?}",
            path.display()
        );
        let extra: Vec<&String> = table
            .keys()
            .filter(|t| !keys.iter().any(|k| &k.name == *t))
            .collect();
        assert!(extra.is_empty(), "not keys of `paddock serve`: {extra:?}");
    }
}

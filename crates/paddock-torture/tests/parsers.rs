//! Structured property tests for the cgroup parsers: well-formed files parse to the values
//! they were built from; damaged ones give an error (never a panic).

use paddock_cgroup::mount::{find_cgroup2, parse_mountinfo};
use paddock_cgroup::{CpuStat, Events, MemoryEvents};
use proptest::prelude::*;

fn escape(s: &str) -> String {
    let mut o = String::new();
    for c in s.chars() {
        match c {
            ' ' => o += "\\040",
            '\t' => o += "\\011",
            '\n' => o += "\\012",
            '\\' => o += "\\134",
            c => o.push(c),
        }
    }
    o
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec("[a-zA-Z0-9 _.\\\\\t-]{1,10}", 0..4)
        .prop_map(|v| format!("/{}", v.join("/")))
}

#[derive(Debug, Clone)]
struct Line {
    root: String,
    mount: String,
    fs: String,
    opts: String,
    optional: Vec<String>,
}

fn line() -> impl Strategy<Value = Line> {
    (
        path(),
        path(),
        prop_oneof![
            Just("cgroup2"),
            Just("cgroup"),
            Just("ext4"),
            Just("tmpfs"),
            Just("proc")
        ],
        "[a-z,=0-9]{1,20}",
        proptest::collection::vec("(shared|master|propagate_from):[0-9]{1,3}", 0..3),
    )
        .prop_map(|(root, mount, fs, opts, optional)| Line {
            root,
            mount,
            fs: fs.to_string(),
            opts,
            optional,
        })
}

fn render(i: usize, l: &Line) -> String {
    let mut left = vec![
        format!("{}", 20 + i),
        "1".into(),
        "0:26".into(),
        escape(&l.root),
        escape(&l.mount),
        "rw,nosuid".into(),
    ];
    left.extend(l.optional.iter().cloned());
    format!("{} - {} {} {}", left.join(" "), l.fs, l.fs, l.opts)
}

proptest! {
    #[test]
    fn mountinfo_roundtrip(lines in proptest::collection::vec(line(), 0..8)) {
        let text: String = lines.iter().enumerate().map(|(i, l)| render(i, l) + "\n").collect();
        let parsed = parse_mountinfo(&text).unwrap();
        prop_assert_eq!(parsed.len(), lines.len());
        for (p, l) in parsed.iter().zip(&lines) {
            prop_assert_eq!(p.root.to_str().unwrap(), l.root.as_str());
            prop_assert_eq!(p.mount_point.to_str().unwrap(), l.mount.as_str());
            prop_assert_eq!(&p.fs_type, &l.fs);
            prop_assert_eq!(&p.super_options, &l.opts);
        }
        let first = lines.iter().position(|l| l.fs == "cgroup2");
        prop_assert_eq!(find_cgroup2(&parsed).map(|e| e.mount_point.clone()),
            first.map(|i| std::path::PathBuf::from(&lines[i].mount)));
    }

    #[test]
    fn mountinfo_damaged_lines_error_not_panic(
        lines in proptest::collection::vec(line(), 1..5),
        cut in 0usize..400,
        junk in "\\PC{0,20}",
    ) {
        let text: String = lines.iter().enumerate().map(|(i, l)| render(i, l) + "\n").collect();
        let mut cut = cut.min(text.len());
        while !text.is_char_boundary(cut) { cut -= 1; }
        let damaged = format!("{}{}", &text[..cut], junk);
        let _ = parse_mountinfo(&damaged);
        // A line without the separator is always an error naming it.
        prop_assert!(parse_mountinfo("36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 cgroup2 cgroup2 rw").is_err());
    }

    #[test]
    fn events_structured(populated in 0u64..3, frozen in 0u64..3, extra in "[a-z_]{1,8}", ev in any::<u64>(), order in any::<bool>()) {
        let mut lines = [format!("populated {populated}"), format!("frozen {frozen}"), format!("{extra} {ev}")];
        if order { lines.reverse(); }
        let text = lines.join("\n") + "\n";
        let r = Events::parse(&text);
        if populated <= 1 && frozen <= 1 && !matches!(extra.as_str(), "populated" | "frozen") {
            let e = r.unwrap();
            prop_assert_eq!(e.populated, populated == 1);
            prop_assert_eq!(e.frozen, frozen == 1);
        } else if populated > 1 || frozen > 1 {
            prop_assert!(r.is_err());
        }
        prop_assert!(Events::parse("frozen 0\n").is_err());
    }

    #[test]
    fn cpu_stat_structured(u in any::<u64>(), us in any::<u64>(), sy in any::<u64>(), thr in proptest::option::of((any::<u64>(), any::<u64>(), any::<u64>()))) {
        let mut text = format!("usage_usec {u}\nuser_usec {us}\nsystem_usec {sy}\ncore_sched.force_idle_usec 0\n");
        if let Some((p, t, tu)) = thr {
            text += &format!("nr_periods {p}\nnr_throttled {t}\nthrottled_usec {tu}\nnr_bursts 0\nburst_usec 0\n");
        }
        let s = CpuStat::parse(&text).unwrap();
        prop_assert_eq!((s.usage_usec, s.user_usec, s.system_usec), (u, us, sy));
        prop_assert_eq!(s.nr_periods, thr.map(|t| t.0));
        prop_assert_eq!(s.nr_throttled, thr.map(|t| t.1));
        prop_assert_eq!(s.throttled_usec, thr.map(|t| t.2));
        // A non-number value is an error.
        let bad = text.replace(&format!("usage_usec {}", u), "usage_usec x");
        prop_assert!(CpuStat::parse(&bad).is_err());
    }

    #[test]
    fn memory_events_structured(v in proptest::collection::vec(any::<u64>(), 6), drop_key in proptest::option::of(0usize..6)) {
        let keys = ["low", "high", "max", "oom", "oom_kill", "oom_group_kill"];
        let text: String = keys.iter().zip(&v).enumerate()
            .filter(|(i, _)| Some(*i) != drop_key)
            .map(|(_, (k, n))| format!("{k} {n}\n")).collect();
        let r = MemoryEvents::parse(&text);
        // Must not panic; with every key present the values are exact.
        if drop_key.is_none() {
            let m = r.unwrap();
            prop_assert_eq!([m.low, m.high, m.max, m.oom, m.oom_kill, m.oom_group_kill], [v[0], v[1], v[2], v[3], v[4], v[5]]);
        } else if drop_key == Some(4) {
            prop_assert!(r.is_err(), "oom_kill is required");
        } else {
            prop_assert_eq!(r.unwrap().oom_kill, v[4]);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sizes (`--memory 512M`, `memory_max` in the CLI) and CPU quotas (`--cpus 1.5`).

use paddock_cgroup::CpuMax;
use paddock_supervisor::{SandboxId, SandboxSpec, parse_size};

/// Every spelling of a unit `parse_size` documents, with its multiplier.
fn unit() -> impl Strategy<Value = (String, u64)> {
    let spellings: Vec<(&str, u64)> = vec![
        ("", 1),
        ("B", 1),
        ("K", 1 << 10),
        ("KB", 1 << 10),
        ("KiB", 1 << 10),
        ("M", 1 << 20),
        ("MB", 1 << 20),
        ("MiB", 1 << 20),
        ("G", 1 << 30),
        ("GB", 1 << 30),
        ("GiB", 1 << 30),
        ("T", 1 << 40),
        ("TB", 1 << 40),
        ("TiB", 1 << 40),
    ];
    (proptest::sample::select(spellings), any::<bool>()).prop_map(|((u, m), lower)| {
        (
            if lower {
                u.to_ascii_lowercase()
            } else {
                u.to_owned()
            },
            m,
        )
    })
}

/// Whether `parse_size`'s error names the input exactly as given.
fn names_input(err: &impl std::fmt::Display, input: &str) -> bool {
    err.to_string().contains(&format!("{input:?}"))
}

/// `cpus` as `SandboxSpec::validate` sees it.
fn spec_accepts_cpus(cpus: f64) -> Result<(), String> {
    let mut s = SandboxSpec::new(SandboxId::new("p").unwrap(), "/bin/true", [""; 0]);
    s.limits.cpus = Some(cpus);
    s.validate().map_err(|e| e.to_string())
}

/// The largest `cpu.max` quota the kernel takes: `max_cfs_runtime` in
/// kernel/sched/core.c, `MAX_BW` = 2^44 − 1 µs; a larger one is `EINVAL`.
const KERNEL_MAX_QUOTA_US: u64 = (1 << 44) - 1;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// A whole number times a unit is exactly that many bytes (whole numbers are computed
    /// in integers, also above 2^53), with or without whitespace between them.
    #[test]
    fn size_whole_number_times_unit_is_exact(n in 0u64..(1 << 22), (u, m) in unit(), space in any::<bool>()) {
        let input = format!("{n}{}{u}", if space && !u.is_empty() { " " } else { "" });
        let want = u128::from(n) * u128::from(m);
        let r = parse_size(&input);
        if n == 0 {
            let e = r.unwrap_err();
            prop_assert!(names_input(&e, &input), "{e}");
        } else {
            prop_assert_eq!(u128::from(r.unwrap()), want, "{}", input);
        }
    }

    /// A decimal number times a unit is the nearest whole number of bytes (within one
    /// byte: the decimal fraction is not exact in binary), and at least 1.
    #[test]
    fn size_decimal_times_unit_rounds_to_the_byte(int in 0u64..100_000, frac in 0u64..1000, digits in 1usize..4, (u, m) in unit()) {
        let frac = frac % 10u64.pow(digits as u32);
        let input = format!("{int}.{frac:0digits$}{u}");
        // The exact value, in units of 10^-digits bytes.
        let scaled = (u128::from(int) * 10u128.pow(digits as u32) + u128::from(frac)) * u128::from(m);
        let exact = scaled as f64 / 10f64.powi(digits as i32);
        match parse_size(&input) {
            Ok(b) => {
                prop_assert!(b >= 1, "{input} → {b}");
                prop_assert!((b as f64 - exact).abs() <= 1.0, "{input} → {b}, exact {exact}");
            }
            Err(e) => {
                prop_assert!(exact < 1.0, "{input} refused ({e}) though it is {exact} bytes");
                prop_assert!(names_input(&e, &input), "{e}");
            }
        }
    }

    /// Anything else: a value of at least one byte or an error that quotes the input;
    /// never a panic. Signs, unknown units and non-numbers are errors.
    #[test]
    fn size_any_text_is_a_value_or_an_error_naming_it(s in "\\PC{0,16}") {
        match parse_size(&s) {
            Ok(b) => prop_assert!(b >= 1),
            Err(e) => prop_assert!(names_input(&e, &s), "{e}"),
        }
    }

    #[test]
    fn size_signs_units_and_junk_are_errors(n in 1u64..1_000_000, junk in prop_oneof![
        Just("-"), Just("+"), Just("x"), Just("KQ"), Just("P"), Just("E"), Just("e3"), Just("Mi"),
    ]) {
        for input in [format!("-{n}M"), format!("+{n}M"), format!("{n}{junk}"), format!("{junk}{n}")] {
            let e = parse_size(&input);
            prop_assert!(e.is_err(), "{input} → {e:?}");
            prop_assert!(names_input(&e.unwrap_err(), &input));
        }
    }

    /// `CpuMax::from_cpus` (what `--cpus` and `limits.cpus` become) over every f64: a quota
    /// of round(cpus × 100 ms) per 100 ms period, at least 1 ms, or an error that names the
    /// value; never a panic.
    #[test]
    fn cpus_any_f64_is_a_quota_or_a_precise_error(cpus in proptest::num::f64::ANY) {
        match CpuMax::from_cpus(cpus) {
            Ok(c) => {
                prop_assert_eq!(c.period_us, CpuMax::DEFAULT_PERIOD_US);
                let q = c.quota_us.unwrap();
                prop_assert!(q >= 1000);
                prop_assert_eq!(q as f64, (cpus * 100_000.0).round());
                // Within what the cgroup layer writes (`Cgroup::set_limit` checks the same).
                prop_assert!((1000..=1_000_000).contains(&c.period_us));
            }
            Err(e) => {
                let m = e.to_string();
                prop_assert!(m.contains("cpu.max") && m.contains(&format!("{cpus}")), "{m}");
            }
        }
    }

    /// `--cpus` text as the CLI parses it (an f64) through the spec's validation and the
    /// cgroup layer: they agree exactly (so a start never fails on it after the cgroup was
    /// made), everything from 0.01 up to the kernel's largest quota (2^44 − 1 µs, about
    /// 1.76e8 CPUs) is accepted, and a refusal names `cpus`; never a panic.
    #[test]
    fn cpus_spec_validation_agrees_with_the_cgroup_layer(
        cpus in prop_oneof![
            0.0f64..2.0,
            0.009f64..0.011,
            1.0f64..(KERNEL_MAX_QUOTA_US as f64 / 100_000.0),
            Just(0.01), Just(0.005), Just(-1.0), Just(f64::NAN), Just(f64::INFINITY),
            Just(f64::MIN_POSITIVE), Just(-0.0),
        ],
    ) {
        let text = format!("{cpus}");
        let parsed: f64 = text.parse().unwrap();
        let spec = spec_accepts_cpus(parsed);
        let cg = CpuMax::from_cpus(parsed);
        prop_assert_eq!(
            spec.is_ok(),
            cg.is_ok(),
            "--cpus {}: spec validation says {:?}, the cgroup layer says {:?}",
            text, spec, cg
        );
        if let Ok(c) = &cg {
            prop_assert!(c.quota_us.unwrap() <= KERNEL_MAX_QUOTA_US, "{c:?}");
        }
        if (0.01..=CpuMax::MAX_CPUS).contains(&parsed) {
            prop_assert!(spec.is_ok(), "--cpus {text}: {spec:?}");
        }
        if let Err(e) = spec {
            prop_assert!(e.contains("cpus"), "{e}");
        }
    }
}

/// Quotas beyond what the kernel's cpu.max takes are refused by the spec's validation, up
/// front and with the range, not at start after the cgroup was made.
#[test]
fn cpus_beyond_the_kernels_quota_are_refused_by_validation() {
    for big in [1e9, 1e15, CpuMax::MAX_CPUS + 1.0] {
        let e = spec_accepts_cpus(big).unwrap_err();
        assert!(e.contains("cpus") && e.contains("175921860"), "{e}");
        assert!(CpuMax::from_cpus(big).is_err());
    }
    let top = CpuMax::from_cpus(CpuMax::MAX_CPUS).unwrap();
    assert!(top.quota_us.unwrap() <= KERNEL_MAX_QUOTA_US);
    assert!(spec_accepts_cpus(CpuMax::MAX_CPUS).is_ok());
}

/// A size has exactly one unit suffix (`5KiBiB` and `5KBB` are errors, not 5120), and whole
/// numbers above 2^53 bytes are exact, not rounded through f64.
#[test]
fn size_units_are_one_suffix_and_whole_numbers_exact() {
    for bad in ["5KiBiB", "5KBB", "5iB", "5BB", "5Ki"] {
        assert!(parse_size(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_size("5B").unwrap(), 5);
    assert_eq!(parse_size("5kib").unwrap(), 5 << 10);
    let big = (1u64 << 53) + 1;
    assert_eq!(parse_size(&big.to_string()).unwrap(), big);
}

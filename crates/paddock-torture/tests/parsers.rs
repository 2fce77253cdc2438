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

//! Unit tests of the API's pure parts.

use super::*;

#[test]
fn ct_eq() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(!constant_time_eq(b"", b"a"));
}

#[test]
fn bearer_scheme_is_case_insensitive() {
    for (h, want) in [
        (&b"Bearer tok"[..], Some(&b"tok"[..])),
        (b"bearer tok", Some(b"tok")),
        (b"BEARER tok", Some(b"tok")),
        (b"bEaReR   tok", Some(b"tok")),
        (b"Bearer", None),
        (b"Bearer ", None),
        (b"Basic tok", None),
        (b"Bearertok", None),
        (b"Bearer\ttok", None),
        (b"", None),
    ] {
        assert_eq!(bearer_token(h), want, "{:?}", String::from_utf8_lossy(h));
    }
}

#[test]
fn duplicate_keys_are_refused_at_every_depth() {
    for body in [
        &br#"{"id":"a","id":"b","command":"/bin/true"}"#[..],
        br#"{"id":"a","command":"/bin/true","env":{"X":"1","X":"2"}}"#,
        br#"{"id":"a","command":"/bin/true","limits":{"pids_max":1,"pids_max":2}}"#,
        br#"{"id":"a","command":"/bin/true","stdio":{"stdout":"log","stdout":"null"}}"#,
        br#"{"id":"a","command":"/bin/true","labels":{"k":"v","k":"v"}}"#,
        br#"{"id":"a","command":"/bin/true","start":true,"start":true}"#,
    ] {
        let e = parse_create(body).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("duplicate key"), "{}", e.message);
    }
    // Strict decoding is serde_json's otherwise.
    for body in [
        &br#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":18446744073709551615}"#[..],
        b"[]",
        b"  {}  ",
    ] {
        assert_eq!(
            strict_json(body).unwrap(),
            serde_json::from_slice::<Value>(body).unwrap()
        );
    }
    assert!(strict_json(b"{} x").is_err());
    // serde_json's recursion limit holds: deep nesting is an error, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let e = strict_json(deep.as_bytes()).unwrap_err().to_string();
    assert!(e.contains("recursion limit"), "{e}");
    assert!(strict_json(b"{\"a\":1}{}").is_err());
}

#[test]
fn a_bad_id_is_explained_once() {
    let e = parse_create(br#"{"id":"../x","command":"/bin/true"}"#).unwrap_err();
    assert_eq!(
        e.message.matches("invalid sandbox spec").count(),
        1,
        "{}",
        e.message
    );
    assert!(e.message.contains("sandbox ID"), "{}", e.message);
}

#[test]
fn create_bodies() {
    assert!(parse_create(br#"{"id":"a","command":"/bin/true"}"#).is_ok());
    let s = parse_create(br#"{"id":"a","command":"/bin/true","start":true}"#).unwrap();
    assert_eq!(s.stdio.stdout, StdioTarget::Log);
    for (body, want) in [
        (&br#"{"id":"a","#[..], "malformed JSON"),
        (br#"[1]"#, "JSON object"),
        (
            br#"{"id":"a","command":"/bin/true","bogus":1}"#,
            "unknown field `bogus`",
        ),
        (br#"{"id":"../x","command":"/bin/true"}"#, "sandbox ID"),
        (
            br#"{"id":"a","command":"/bin/true","limits":{"cpus":0}}"#,
            "cpus",
        ),
        (
            br#"{"id":"a","command":"/bin/true","start":false}"#,
            "start",
        ),
        (
            br#"{"id":"a","command":"/bin/true","stdio":{"stdout":"inherit"}}"#,
            "stdio.stdout",
        ),
    ] {
        let e = parse_create(body).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains(want), "{want}: {}", e.message);
    }
}

#[test]
fn api_durations() {
    for (s, want) in [
        ("10s", Duration::from_secs(10)),
        ("10", Duration::from_secs(10)),
        ("500ms", Duration::from_millis(500)),
        ("2m", Duration::from_secs(120)),
        ("2min", Duration::from_secs(120)),
        ("1.5h", Duration::from_secs(5400)),
        (".5", Duration::from_millis(500)),
        ("5.", Duration::from_secs(5)),
        ("0", Duration::ZERO),
        ("007s", Duration::from_secs(7)),
        ("8760h", MAX_DURATION),
        ("8760.000h", MAX_DURATION),
        ("525600m", MAX_DURATION),
        ("31536000", MAX_DURATION),
        ("31536000000ms", MAX_DURATION),
    ] {
        assert_eq!(parse_api_duration(s), Ok(want), "{s}");
    }
    for s in [
        "",
        ".",
        "s",
        "-1s",
        "+1s",
        " 1s",
        "1s ",
        "1e3",
        "inf",
        "NaN",
        "1.2.3",
        "1x",
        "1 s",
        "8761h",
        "8760.0001h",
        "31536001",
        "31536000001ms",
        "525601m",
    ] {
        let e = parse_api_duration(s).unwrap_err();
        assert!(e.contains("duration") && e.contains("examples"), "{s}: {e}");
    }
    assert!(
        parse_api_duration("8761h")
            .unwrap_err()
            .contains("365 days")
    );
}

fn duration_validator() -> jsonschema::Validator {
    jsonschema::draft202012::new(&serde_json::json!({
        "type": "string", "pattern": duration_pattern()
    }))
    .unwrap()
}

/// The document's pattern for `?timeout=` matches exactly what the parser accepts, at
/// the bounds and around them.
#[test]
fn duration_pattern_is_the_parser() {
    let v = duration_validator();
    let mut cases: Vec<String> = Vec::new();
    for unit in ["", "s", "ms", "m", "min", "h", "x", "sec", "hh"] {
        let b = duration_bound(if unit.is_empty() { "s" } else { unit });
        for n in [
            "0".to_owned(),
            "00".into(),
            ".0".into(),
            "0.".into(),
            "1".into(),
            (b - 1).to_string(),
            format!("{}.999999999999999999", b - 1),
            b.to_string(),
            format!("0{b}"),
            format!("{b}."),
            format!("{b}.0000"),
            format!("{b}.0001"),
            format!("{b}.0000000000000000000001"),
            (b + 1).to_string(),
            (b * 10).to_string(),
            format!("1{}", "0".repeat(40)),
        ] {
            cases.push(format!("{n}{unit}"));
        }
    }
    for s in &cases {
        let json = Value::String(s.clone());
        assert_eq!(
            v.is_valid(&json),
            parse_api_duration(s).is_ok(),
            "{s:?}: the pattern and the parser disagree"
        );
    }
    // Both accept and refuse something.
    assert!(cases.iter().any(|s| parse_api_duration(s).is_ok()));
    assert!(cases.iter().any(|s| parse_api_duration(s).is_err()));
}

#[test]
fn integral_floats_are_integers() {
    let mut v = serde_json::json!({
        "a": 5.0, "b": [1e3, -2.0, 1.5], "c": {"d": 18446744073709551615.0, "e": 7}
    });
    integral_floats_to_integers(&mut v);
    assert_eq!(v["a"], serde_json::json!(5));
    assert!(v["a"].is_u64());
    assert_eq!(v["b"], serde_json::json!([1000, -2, 1.5]));
    // 2^64 does not fit a u64: it stays a float (and a u64 field refuses it).
    assert!(v["c"]["d"].is_f64());
    assert_eq!(v["c"]["e"], serde_json::json!(7));
    let spec = parse_create(
        br#"{"id":"f","command":"/bin/true","limits":{"pids_max":64.0},"stop":{"signal":9.0}}"#,
    )
    .unwrap();
    assert_eq!(spec.limits.pids_max, Some(64));
    assert_eq!(spec.stop.signal, 9);
    let e =
        parse_create(br#"{"id":"f","command":"/bin/true","limits":{"pids_max":6.5}}"#).unwrap_err();
    assert_eq!(e.status, StatusCode::BAD_REQUEST);
}

proptest::proptest! {
    /// Random strings: the pattern and the parser agree.
    #[test]
    fn duration_pattern_agrees_on_random_strings(s in "[0-9.]{0,14}(ms|s|m|min|h|x)?") {
        let v = duration_validator();
        proptest::prop_assert_eq!(
            v.is_valid(&Value::String(s.clone())),
            parse_api_duration(&s).is_ok(),
            "{:?}", s
        );
    }

    /// Any bytes: a spec or a 400 with a message, never a panic or another status.
    #[test]
    fn create_decoding_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        if let Err(e) = parse_create(&body) {
            proptest::prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
            proptest::prop_assert!(!e.message.is_empty());
        }
    }

    /// Structured bodies with hostile field values: accepted specs are valid, refused
    /// ones are a 400 that names a reason.
    #[test]
    fn create_decoding_of_hostile_fields(
        id in "(\\PC{0,20}|\\.\\.|/|cgroup\\.procs|[a-z]{1,200})",
        cmd in "\\PC{0,10}",
        cpus in proptest::num::f64::ANY,
        mem in proptest::option::of(proptest::num::u64::ANY),
        extra in proptest::option::of("[a-z_]{1,12}"),
    ) {
        let mut v = serde_json::json!({ "id": id, "command": cmd, "limits": { "cpus": cpus, "memory_max": mem } });
        if let Some(k) = extra {
            v[k] = serde_json::json!(1);
        }
        let body = serde_json::to_vec(&v).unwrap_or_default();
        match parse_create(&body) {
            Ok(spec) => proptest::prop_assert!(spec.validate().is_ok()),
            Err(e) => {
                proptest::prop_assert_eq!(e.status, StatusCode::BAD_REQUEST);
                proptest::prop_assert!(!e.message.is_empty());
            }
        }
    }
}

/// A jail with a value its schema refuses is a 400 naming the field; one whose fields each
/// match the document but do not fit together is a 422 naming the field. The document
/// agrees: the first body breaks the create's schema, the second matches it.
#[test]
fn jail_field_errors_are_400_and_inconsistencies_422() {
    let doc: Value = serde_json::from_str(&crate::openapi::document_string()).unwrap();
    let mut root = serde_json::json!({ "components": doc["components"].clone() });
    root["$ref"] = "#/components/schemas/CreateRequest".into();
    let schema = jsonschema::draft202012::new(&root).unwrap();
    let body = |jail: Value| serde_json::json!({"id": "j", "command": "/bin/true", "jail": jail});
    let map = |count: u32| serde_json::json!([{"inside": 0, "outside": 1000, "count": count}]);
    let cases = [
        (
            body(serde_json::json!({"user_ns": {"uid_map": map(0), "gid_map": map(1)}})),
            StatusCode::BAD_REQUEST,
            "jail.user_ns.uid_map[0].count: must be at least 1",
        ),
        (
            body(serde_json::json!({"filesystem": {"devices": ["/etc/passwd"]}})),
            StatusCode::BAD_REQUEST,
            "jail.filesystem.devices[0]",
        ),
        (
            body(serde_json::json!({"privileges": {"cap_add": ["CAP_FLY"]}})),
            StatusCode::BAD_REQUEST,
            "jail.privileges.cap_add[0]: unknown capability",
        ),
        (
            body(
                serde_json::json!({"privileges": {"cap_add": ["NET_ADMIN"], "cap_drop": ["net_admin"]}}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "jail.privileges.cap_drop[0]: net_admin is also in cap_add",
        ),
        (
            body(
                serde_json::json!({"user_ns": {"uid_map": map(10), "gid_map": [
                    {"inside": 0, "outside": 1000, "count": 10},
                    {"inside": 5, "outside": 5000, "count": 1}
                ]}}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "jail.user_ns.gid_map[1]: inside ids overlap jail.user_ns.gid_map[0]",
        ),
        (
            body(serde_json::json!({"init": true})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "jail.init: needs a pid namespace",
        ),
    ];
    for (b, status, field) in cases {
        let e = parse_create(b.to_string().as_bytes()).unwrap_err();
        assert_eq!(e.status, status, "{b}: {}", e.message);
        assert!(e.message.contains(field), "{b}: {}", e.message);
        assert_eq!(
            schema.is_valid(&b),
            status == StatusCode::UNPROCESSABLE_ENTITY,
            "{b}: the document says what is a 400"
        );
    }
    // A supervisor's inconsistency is a 422 wherever it comes from.
    let e = ApiError::from(SupError::Inconsistent("jail.init: x".into()));
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
}

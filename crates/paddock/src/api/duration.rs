//! `?timeout=` durations: the parser, and the regular expression of exactly what it accepts (for the OpenAPI document).

use super::*;

/// `?timeout=10s&lifecycle=...` of stop (the grace period replacing the spec's, e.g.
/// `10s`, `500ms`, `0`) and of wait (return after this long at the latest; default: no
/// limit).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimeoutQuery {
    pub(super) timeout: Option<String>,
    pub(super) lifecycle: Option<String>,
}

impl TimeoutQuery {
    pub(super) fn timeout(&self) -> ApiResult<Option<Duration>> {
        self.timeout
            .as_deref()
            .map(|t| parse_api_duration(t).map_err(|why| ApiError::bad(format!("timeout: {why}"))))
            .transpose()
    }
}

/// The query of `POST /v1/sandboxes/{id}/deadline`.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct ExtendQuery {
    pub(super) extend: Option<String>,
}

impl ExtendQuery {
    /// The required `extend` duration (`0` keeps a deadline as it is).
    pub(super) fn extend(&self) -> ApiResult<Duration> {
        let Some(t) = self.extend.as_deref() else {
            return Err(ApiError::bad(
                "extend: missing (how much later the deadline is to be, such as 5m)",
            ));
        };
        parse_api_duration(t).map_err(|why| ApiError::bad(format!("extend: {why}")))
    }
}

/// The units of an API duration, each with its length in seconds.
pub(super) const DURATION_UNITS: [(&str, f64); 5] = [
    ("ms", 0.001),
    ("s", 1.0),
    ("m", 60.0),
    ("min", 60.0),
    ("h", 3600.0),
];

/// The largest number [`parse_api_duration`] takes with `unit`: [`MAX_DURATION`] in it.
pub(super) fn duration_bound(unit: &str) -> u64 {
    let s = MAX_DURATION.as_secs();
    match unit {
        "ms" => s * 1000,
        "m" | "min" => s / 60,
        "h" => s / 3600,
        _ => s,
    }
}

/// Parses a `?timeout=` value: a decimal number (`10`, `1.5`, `.5`, `5.`; digits and at
/// most one point, no sign, no exponent, no spaces), then an optional unit (`ms`, `s`,
/// `m` or `min`, `h`; seconds without one), at most 365 days ([`MAX_DURATION`]). The
/// bound is checked on the decimal text, so exactly the strings matching
/// [`duration_pattern`] are accepted. The error says why, with examples.
pub fn parse_api_duration(s: &str) -> Result<Duration, String> {
    let err = |why: &str| format!("duration {s:?}: {why} (examples: 10s, 500ms, 2m, 1.5h)");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    if num.is_empty() || num.bytes().filter(|&b| b == b'.').count() > 1 || num == "." {
        return Err(err("not a non-negative decimal number"));
    }
    let Some(&(_, secs_per_unit)) = DURATION_UNITS
        .iter()
        .find(|(u, _)| *u == unit || (unit.is_empty() && *u == "s"))
    else {
        return Err(err("unknown unit (ms, s, m, min, h)"));
    };
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let int = int.trim_start_matches('0');
    let bound = duration_bound(unit).to_string();
    let within = match int.len().cmp(&bound.len()) {
        std::cmp::Ordering::Less => true,
        std::cmp::Ordering::Greater => false,
        std::cmp::Ordering::Equal => {
            int < bound.as_str() || (int == bound && frac.bytes().all(|b| b == b'0'))
        }
    };
    if !within {
        return Err(err("out of range (at most 365 days)"));
    }
    let v: f64 = num.parse().map_err(|_| err("not a number"))?;
    Ok(Duration::from_secs_f64(
        (v * secs_per_unit).min(MAX_DURATION.as_secs_f64()),
    ))
}

/// A regular expression (ECMA-262) of the decimal numbers `[0-9]+(\.[0-9]*)?|\.[0-9]+`
/// whose value is at most `n`.
pub(super) fn at_most_pattern(n: u64) -> String {
    let digits: Vec<u8> = n.to_string().bytes().map(|b| b - b'0').collect();
    let k = digits.len();
    let frac = r"(?:\.[0-9]*)?";
    // Positive integers without a leading zero below n: fewer digits, or k digits with a
    // smaller digit after a common prefix.
    let mut below = Vec::new();
    if k >= 2 {
        below.push(format!("[1-9][0-9]{{0,{}}}", k - 2));
    }
    for (i, &d) in digits.iter().enumerate() {
        let lo = u8::from(i == 0);
        if d > lo {
            let prefix: String = digits[..i].iter().map(|x| char::from(b'0' + x)).collect();
            let class = if d - 1 == lo {
                lo.to_string()
            } else {
                format!("[{lo}-{}]", d - 1)
            };
            let rest = k - 1 - i;
            let tail = if rest > 0 {
                format!("[0-9]{{{rest}}}")
            } else {
                String::new()
            };
            below.push(format!("{prefix}{class}{tail}"));
        }
    }
    let mut alts = vec![format!(r"0+{frac}"), r"\.[0-9]+".to_owned()];
    if !below.is_empty() {
        alts.push(format!("0*(?:{}){frac}", below.join("|")));
    }
    alts.push(format!(r"0*{n}(?:\.0*)?"));
    alts.join("|")
}

/// The regular expression of exactly the strings [`parse_api_duration`] accepts.
pub fn duration_pattern() -> String {
    let mut by_unit: Vec<(u64, Vec<&str>)> = Vec::new();
    for (u, _) in DURATION_UNITS {
        let b = duration_bound(u);
        match by_unit.iter_mut().find(|(x, _)| *x == b) {
            Some((_, us)) => us.push(u),
            None => by_unit.push((b, vec![u])),
        }
    }
    let alts: Vec<String> = by_unit
        .iter()
        .map(|(b, units)| {
            let units: Vec<&str> = units
                .iter()
                .map(|u| if *u == "s" { "s?" } else { u })
                .collect();
            format!("(?:{})(?:{})", at_most_pattern(*b), units.join("|"))
        })
        .collect();
    format!("^(?:{})$", alts.join("|"))
}

/// A `?timeout=` duration, as the OpenAPI document describes it.
pub struct ApiDuration;

impl utoipa::PartialSchema for ApiDuration {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A duration: a decimal number (digits, at most one `.`; no sign, exponent or space), then a unit — `ms`, `s`, `m` or `min`, `h` — or none for seconds; at most 365 days. Examples: `10s`, `500ms`, `2m`, `1.5h`, `0`",
            ))
            .pattern(Some(duration_pattern()))
            .examples(["10s", "500ms"])
            .into()
    }
}

impl ToSchema for ApiDuration {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("Duration")
    }
}

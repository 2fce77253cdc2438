//! Decoding of hostile input: path IDs, query strings, strict JSON bodies (duplicate keys refused) and the create body.

use super::*;

/// The `{id}` of a per-sandbox path. A segment that cannot be decoded (percent-encoding of
/// bytes that are not UTF-8) is refused like every other error, as JSON.
pub struct IdPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Path(id) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(IdPath(id))
    }
}

/// The `id` of a path or query: a 400 naming the parameter when it is not a valid ID.
pub(super) fn parse_id(id: &str) -> ApiResult<SandboxId> {
    SandboxId::new(id).map_err(|e| {
        ApiError::bad(match e {
            SupError::InvalidSpec(why) => format!("id: {why}"),
            e => format!("id: {e}"),
        })
    })
}

pub(super) fn parse_lc(lc: Option<&str>) -> ApiResult<Option<LifecycleId>> {
    lc.map(|s| {
        LifecycleId::parse(s)
            .ok_or_else(|| ApiError::bad(format!("lifecycle {s:?} is not 16 hex digits")))
    })
    .transpose()
}

/// The query of endpoints that take no parameters: any parameter is a 400 naming it.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct NoQuery {}

/// Extracts [`NoQuery`]: refuses any query parameter with a 400 that names it.
pub struct NoParams;

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for NoParams {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Query(NoQuery {}) = Query::<NoQuery>::from_request_parts(parts, state)
            .await
            .map_err(|e| {
                ApiError::bad(format!(
                    "query string: {} (this endpoint takes no query parameters)",
                    e.body_text()
                ))
            })?;
        Ok(NoParams)
    }
}

/// `?lifecycle=` on the per-sandbox endpoints.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LcQuery {
    pub(super) lifecycle: Option<String>,
}

/// Decodes JSON into a [`Value`] like `serde_json::from_slice`, except that an object with
/// the same key twice is an error (`serde_json` keeps the last one silently, so a body
/// could say one thing to a proxy that reads the first and another to the daemon).
pub fn strict_json(body: &[u8]) -> serde_json::Result<Value> {
    use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

    struct Strict;
    impl<'de> DeserializeSeed<'de> for Strict {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(Strict)
        }
    }
    impl<'de> Visitor<'de> for Strict {
        type Value = Value;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(v.into())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
            serde_json::Number::from_f64(v)
                .map(Value::Number)
                .ok_or_else(|| E::custom("a number that is not finite"))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut v = Vec::new();
            while let Some(x) = seq.next_element_seed(Strict)? {
                v.push(x);
            }
            Ok(Value::Array(v))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut m = serde_json::Map::new();
            while let Some(k) = map.next_key::<String>()? {
                if m.contains_key(&k) {
                    return Err(A::Error::custom(format!("duplicate key {k:?}")));
                }
                let v = map.next_value_seed(Strict)?;
                m.insert(k, v);
            }
            Ok(Value::Object(m))
        }
    }

    let mut de = serde_json::Deserializer::from_slice(body);
    let v = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Turns every number written with a fraction or an exponent whose value is a whole number
/// that fits an `i64` or a `u64` (`5.0`, `1e3`) into that integer, as JSON Schema counts
/// them integers (`serde` would refuse them where an integer is expected).
pub(super) fn integral_floats_to_integers(v: &mut Value) {
    match v {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
            {
                // `as` saturates; a round trip tells a value that fits.
                if f >= 0.0 && f < u64::MAX as f64 && (f as u64) as f64 == f {
                    *n = (f as u64).into();
                } else if f < 0.0 && f >= i64::MIN as f64 && (f as i64) as f64 == f {
                    *n = (f as i64).into();
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(m) => m.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// Parses a create body: a `SandboxSpec` plus an optional `"start": true`. Duplicate keys
/// (in any object) are refused. What breaks the OpenAPI document is a 400 naming the field;
/// a spec whose fields match it but do not fit together is a 422 naming the field.
pub fn parse_create(body: &[u8]) -> ApiResult<SandboxSpec> {
    let mut v: Value =
        strict_json(body).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(ApiError::bad(
            "request body must be a JSON object (a SandboxSpec)",
        ));
    };
    match obj.remove("start") {
        None | Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => {
            return Err(ApiError::bad(
                "\"start\": false is not supported: the daemon starts every sandbox it creates",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad(format!(
                "\"start\" must be a boolean, not {other}"
            )));
        }
    }
    let stdio_given = obj.contains_key("stdio");
    integral_floats_to_integers(&mut v);
    let mut spec: SandboxSpec = serde_json::from_value(v)
        .map_err(|e| ApiError::bad(format!("invalid sandbox spec: {e}")))?;
    if !stdio_given {
        spec.stdio.stdin = StdioTarget::Null;
        spec.stdio.stdout = StdioTarget::Log;
        spec.stdio.stderr = StdioTarget::Log;
    }
    for (name, t) in [
        ("stdin", &spec.stdio.stdin),
        ("stdout", &spec.stdio.stdout),
        ("stderr", &spec.stdio.stderr),
    ] {
        match t {
            StdioTarget::Inherit | StdioTarget::Pipe => {
                return Err(ApiError::bad(format!(
                    "stdio.{name}: {t:?} is not available through the daemon (use \"log\", \"null\" or a file)"
                )));
            }
            StdioTarget::Log if name == "stdin" => {
                return Err(ApiError::bad("stdio.stdin: \"log\" is an output target"));
            }
            _ => {}
        }
    }
    // A field the document refuses is a 400 (`InvalidSpec`); fields that each match it
    // but do not fit together are a 422 (`Inconsistent`). Either way nothing is created.
    spec.validate().map_err(ApiError::from)?;
    Ok(spec)
}

/// Most `label` selectors one list takes.
pub const MAX_LABEL_SELECTORS: usize = 16;

/// Longest `label` selector, in characters. With [`MAX_LABEL_SELECTORS`] the longest query
/// percent-encodes to under 50,000 bytes (12 per 4-byte character), within the 65,534
/// bytes the HTTP layer takes in a request target (longer is its 414).
pub const MAX_LABEL_SELECTOR_LEN: usize = 256;

/// One `?label=` selector of `GET /v1/sandboxes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    /// The label's key.
    pub key: String,
    /// The value it must have; `None`: it must be present.
    pub value: Option<String>,
}

impl LabelSelector {
    /// Parses `key=value` or `key` (split at the first `=`; the key must not be empty).
    pub fn parse(s: &str) -> Result<Self, String> {
        let chars = s.chars().count();
        if chars > MAX_LABEL_SELECTOR_LEN {
            return Err(format!(
                "label: a selector of {chars} characters; at most {MAX_LABEL_SELECTOR_LEN}"
            ));
        }
        let (key, value) = match s.split_once('=') {
            Some((k, v)) => (k, Some(v.to_owned())),
            None => (s, None),
        };
        if key.is_empty() {
            return Err(format!(
                "label: selector {s:?} has no key (label=key=value or label=key)"
            ));
        }
        Ok(LabelSelector {
            key: key.to_owned(),
            value,
        })
    }

    /// Whether `labels` match.
    pub fn matches(&self, labels: &std::collections::BTreeMap<String, String>) -> bool {
        match (labels.get(&self.key), &self.value) {
            (Some(v), Some(want)) => v == want,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }
}

/// The query of `GET /v1/sandboxes`: `label` selectors only (repeatable); anything else,
/// or a selector that does not parse, is a 400 naming it.
pub struct LabelQuery(pub Vec<LabelSelector>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for LabelQuery {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let mut sel = Vec::new();
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k != "label" {
                return Err(ApiError::bad(format!(
                    "query string: unknown field `{k}`, expected `label` (this endpoint takes only label selectors)"
                )));
            }
            if sel.len() == MAX_LABEL_SELECTORS {
                return Err(ApiError::bad(format!(
                    "label: more than {MAX_LABEL_SELECTORS} selectors"
                )));
            }
            sel.push(LabelSelector::parse(&v).map_err(ApiError::bad)?);
        }
        Ok(LabelQuery(sel))
    }
}

/// A `label` selector, as the OpenAPI document describes it.
pub struct LabelSelectorParam;

impl utoipa::PartialSchema for LabelSelectorParam {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "`key=value` or `key`: a non-empty key, then optionally `=` and the value (split at the first `=`)",
            ))
            .pattern(Some(r"^[^=][\s\S]*$"))
            .max_length(Some(MAX_LABEL_SELECTOR_LEN))
            .examples(["app=web", "tier"])
            .into()
    }
}

impl ToSchema for LabelSelectorParam {
    fn name() -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("LabelSelector")
    }
}

/// The `label` selectors of a list, as the OpenAPI document describes them.
pub struct LabelSelectors;

impl utoipa::PartialSchema for LabelSelectors {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(LabelSelectorParam::schema())
            .max_items(Some(MAX_LABEL_SELECTORS))
            .into()
    }
}

impl ToSchema for LabelSelectors {}

#[cfg(test)]
mod label_tests {
    use super::{LabelSelector, integral_floats_to_integers};
    use serde_json::Value;
    use std::collections::BTreeMap;

    /// A whole number written as a float is that integer, also near 2^51 and 2^53, where a
    /// float parser that is not correctly rounded can land an ulp off (the API fuzzer got a
    /// 400 "floating point `2251799813685247.2`" for a schema-valid integer; serde_json's
    /// `float_roundtrip` feature makes its parsing exact).
    #[test]
    fn large_integral_floats_are_exact_integers() {
        for (text, want) in [
            ("2251799813685247.0", 2_251_799_813_685_247_u64),
            ("4503599627370495.0", 4_503_599_627_370_495),
            ("9007199254740992.0", 9_007_199_254_740_992),
            ("1e3", 1000),
        ] {
            let mut v: Value = serde_json::from_str(text).unwrap();
            integral_floats_to_integers(&mut v);
            assert_eq!(v.as_u64(), Some(want), "{text}");
        }
    }

    /// Split at the first `=`; an empty key or an oversized selector is refused naming
    /// `label`; presence and equality match.
    #[test]
    fn selectors_parse_and_match() {
        let s = LabelSelector::parse("a=b=c").unwrap();
        assert_eq!((s.key.as_str(), s.value.as_deref()), ("a", Some("b=c")));
        let s = LabelSelector::parse("a=").unwrap();
        assert_eq!(s.value.as_deref(), Some(""));
        assert_eq!(LabelSelector::parse("a").unwrap().value, None);
        for bad in ["", "=", "=a"] {
            assert!(
                LabelSelector::parse(bad).unwrap_err().contains("label"),
                "{bad:?}"
            );
        }
        assert!(LabelSelector::parse(&"é".repeat(256)).is_ok());
        assert!(LabelSelector::parse(&"é".repeat(257)).is_err());
        let labels: BTreeMap<String, String> =
            [("a".into(), "".into()), ("b".into(), "x".into())].into();
        assert!(LabelSelector::parse("a").unwrap().matches(&labels));
        assert!(LabelSelector::parse("a=").unwrap().matches(&labels));
        assert!(!LabelSelector::parse("b=").unwrap().matches(&labels));
        assert!(LabelSelector::parse("b=x").unwrap().matches(&labels));
        assert!(!LabelSelector::parse("c").unwrap().matches(&labels));
    }
}

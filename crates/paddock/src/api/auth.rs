//! Bearer-token authentication of the TCP listener.

use super::*;

/// The credentials of an `Authorization: Bearer <token>` header value: the scheme is
/// case-insensitive and followed by one or more spaces (RFC 7235); `None` for another
/// scheme or no credentials.
pub fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let sp = value.iter().position(|&b| b == b' ')?;
    let (scheme, rest) = value.split_at(sp);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let start = rest.iter().position(|&b| b != b' ')?;
    Some(&rest[start..])
}

/// Requires `Authorization: Bearer <token>` (scheme in any case; the token compared in
/// constant time).
pub async fn require_token(
    State(token): State<Arc<Vec<u8>>>,
    req: Request,
    next: Next,
) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
        .is_some_and(|given| constant_time_eq(given, &token));
    if !ok {
        return ApiError {
            status: StatusCode::UNAUTHORIZED,
            message: "missing or wrong bearer token".into(),
        }
        .into_response();
    }
    next.run(req).await
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len().max(b.len());
    let mut diff = (a.len() ^ b.len()) as u64;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

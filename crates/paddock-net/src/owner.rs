//! Ownership: the instance tag, the sandbox key, and the names derived from them.
//!
//! Everything this crate creates carries its [`Owner`], written `<tag>+<key>`:
//! - a pinned namespace is the file `<pin dir>/<tag>+<key>`;
//! - a host-side veth is named `pdk<8 hex>` (IFNAMSIZ is 16 bytes with the NUL, so a full
//!   owner cannot be a link name) and carries the full owner in its alias
//!   (`IFLA_IFALIAS`), which is what [`crate::Network::reclaim`] reads;
//! - nftables rules (phase 2) carry it in their comment.
//!
//! `+` is in neither alphabet, so the split is unambiguous, and a name without it, or
//! with another tag before it, is never ours.

use std::fmt;

use crate::error::Error;

/// The separator between tag and key in an owner string.
pub const SEPARATOR: char = '+';

/// Prefix of every host-side link name this crate makes.
pub const LINK_PREFIX: &str = "pdk";

/// The longest tag accepted.
pub const MAX_TAG: usize = 64;
/// The longest key accepted (so that an owner, at most 128 bytes, fits an nftables
/// comment).
pub const MAX_KEY: usize = 63;

fn check(what: &'static str, value: &str, max: usize, extra: &[u8]) -> Result<(), Error> {
    let bad = |reason: &'static str| Error::Invalid {
        what,
        value: value.to_owned(),
        reason,
    };
    if value.is_empty() {
        return Err(bad("it is empty"));
    }
    if value.len() > max {
        return Err(bad("it is too long"));
    }
    if value == "." || value == ".." {
        return Err(bad("it is a relative path component"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b) || extra.contains(&b))
    {
        return Err(bad(
            "only ASCII letters, digits and . _ - : (and @ in keys) are allowed",
        ));
    }
    Ok(())
}

/// The instance tag: who created an object (for paddock, the daemon's or run's owner
/// string, `daemon:<32 hex>` or `pid:<pid>:<start time>:<pid ns>`). At most [`MAX_TAG`] bytes of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    /// Validates `tag`.
    pub fn new(tag: impl Into<String>) -> Result<Self, Error> {
        let tag = tag.into();
        check("tag", &tag, MAX_TAG, b"")?;
        Ok(Self(tag))
    }

    /// The tag as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sandbox key: which sandbox of the instance an object belongs to (for paddock, the
/// lifecycle ID, 16 hex digits, unique per start; sandbox IDs may hold any character and
/// are too long). At most [`MAX_KEY`] bytes of `[A-Za-z0-9._:@-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(String);

impl Key {
    /// Validates `key`.
    pub fn new(key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        check("key", &key, MAX_KEY, b"@")?;
        Ok(Self(key))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The owner of one sandbox's network objects: an instance's tag and a sandbox's key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The instance that made the objects.
    pub tag: Tag,
    /// The sandbox they belong to.
    pub key: Key,
}

impl Owner {
    /// The owner of `key`'s objects made by instance `tag`.
    pub fn new(tag: Tag, key: Key) -> Self {
        Self { tag, key }
    }

    /// Parses `<tag>+<key>`; `None` for anything else (never ours).
    pub fn parse(s: &str) -> Option<Self> {
        let (tag, key) = s.split_once(SEPARATOR)?;
        Some(Self {
            tag: Tag::new(tag).ok()?,
            key: Key::new(key).ok()?,
        })
    }

    /// The host-side veth's name: `pdk` and 8 hex digits of the FNV-1a hash of the owner
    /// string (11 bytes, under IFNAMSIZ). Stable across versions and platforms. Two owners
    /// with the same hash make the second creation fail with `EEXIST`; nothing is
    /// overwritten, and teardown checks the alias before deleting.
    pub fn host_ifname(&self) -> String {
        format!("{LINK_PREFIX}{:08x}", fnv1a(self.to_string().as_bytes()))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{SEPARATOR}{}", self.tag, self.key)
    }
}

/// 32-bit FNV-1a (a fixed, documented hash, unlike std's `DefaultHasher`).
pub(crate) fn fnv1a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in bytes {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_round_trips_and_rejects_foreign_names() {
        let o = Owner::new(
            Tag::new("daemon:3f2a").unwrap(),
            Key::new("web@01hx").unwrap(),
        );
        assert_eq!(o.to_string(), "daemon:3f2a+web@01hx");
        assert_eq!(Owner::parse(&o.to_string()), Some(o.clone()));
        assert_eq!(Owner::parse("eth0"), None);
        assert_eq!(Owner::parse("a+b+c"), None);
        assert_eq!(Owner::parse("+x"), None);
        assert_eq!(Owner::parse("a/b+c"), None);
    }

    #[test]
    fn host_ifname_fits_ifnamsiz_and_is_stable() {
        let o = Owner::new(Tag::new("t").unwrap(), Key::new("k").unwrap());
        let name = o.host_ifname();
        assert_eq!(name.len(), 11);
        assert!(name.starts_with("pdk"));
        // FNV-1a of "t+k", computed by hand once: the name must never change between
        // versions, or teardown after an upgrade would miss the link.
        assert_eq!(name, format!("pdk{:08x}", fnv1a(b"t+k")));
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
    }

    #[test]
    fn invalid_names_are_typed_errors() {
        assert!(Tag::new("").is_err());
        assert!(Tag::new("a+b").is_err());
        assert!(Tag::new("a/b").is_err());
        assert!(Tag::new("..").is_err());
        assert!(Tag::new("x".repeat(MAX_TAG + 1)).is_err());
        assert!(Key::new("id@lc").is_ok());
        assert!(Tag::new("id@lc").is_err());
        let e = Key::new("a b").unwrap_err().to_string();
        assert!(e.contains("key") && e.contains("a b"), "{e}");
    }
}

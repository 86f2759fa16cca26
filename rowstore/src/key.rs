//! Versioned keys: the one idea every engine shares.
//!
//! An internal key is a user key plus the commit timestamp of the write. Internal keys
//! sort by user key ascending, then by timestamp *descending*, so the newest version of a
//! key comes first and "the newest version visible at snapshot `s`" is the first entry
//! at or after `(key, s)`.

use std::cmp::Ordering;

/// A commit timestamp. Every committed write batch gets one; a snapshot is a timestamp.
pub type Ts = u64;

/// The largest timestamp; `(key, MAX_TS)` sorts before every version of `key`.
pub const MAX_TS: Ts = u64::MAX;

/// A borrowed versioned entry: (user key, commit ts, value or `None` for a tombstone).
pub type EntryRef<'a> = (&'a [u8], Ts, Option<&'a [u8]>);

/// A user-key range `[start, end)`; `None` is unbounded.
pub type KeyRange = (Option<Vec<u8>>, Option<Vec<u8>>);

/// What a versioned entry says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueKind {
    /// A tombstone: the key was deleted at this timestamp.
    Delete = 0,
    /// The key was set to a value at this timestamp.
    Put = 1,
}

impl ValueKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        match b {
            0 => Some(ValueKind::Delete),
            1 => Some(ValueKind::Put),
            _ => None,
        }
    }
}

/// An owned user key + commit timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InternalKey {
    pub user_key: Vec<u8>,
    pub ts: Ts,
}

impl InternalKey {
    pub fn new(user_key: impl Into<Vec<u8>>, ts: Ts) -> Self {
        InternalKey {
            user_key: user_key.into(),
            ts,
        }
    }
    pub fn as_ref(&self) -> (&[u8], Ts) {
        (&self.user_key, self.ts)
    }
}

/// Compare two internal keys given as parts: user key ascending, timestamp descending.
#[inline]
pub fn cmp_internal(a_key: &[u8], a_ts: Ts, b_key: &[u8], b_ts: Ts) -> Ordering {
    match a_key.cmp(b_key) {
        Ordering::Equal => b_ts.cmp(&a_ts),
        o => o,
    }
}

/// A borrowed view of an internal key, so ordered maps keyed by [`InternalKey`] can be
/// probed with `(&[u8], Ts)` without allocating an owned key.
pub trait KeyView {
    fn parts(&self) -> (&[u8], Ts);
}

impl KeyView for InternalKey {
    fn parts(&self) -> (&[u8], Ts) {
        (&self.user_key, self.ts)
    }
}

impl KeyView for (&[u8], Ts) {
    fn parts(&self) -> (&[u8], Ts) {
        (self.0, self.1)
    }
}

impl<'a> std::borrow::Borrow<dyn KeyView + 'a> for InternalKey {
    fn borrow(&self) -> &(dyn KeyView + 'a) {
        self
    }
}

impl PartialEq for dyn KeyView + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyView + '_ {}

impl PartialOrd for dyn KeyView + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for dyn KeyView + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, at) = self.parts();
        let (b, bt) = other.parts();
        cmp_internal(a, at, b, bt)
    }
}

impl Ord for InternalKey {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_internal(&self.user_key, self.ts, &other.user_key, other.ts)
    }
}

impl PartialOrd for InternalKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Printable form of a key for error messages: UTF-8 if it is, hex otherwise, cut short.
pub fn display_key(key: &[u8]) -> String {
    const MAX: usize = 64;
    let k = &key[..key.len().min(MAX)];
    let mut s = match std::str::from_utf8(k) {
        Ok(t) if t.chars().all(|c| !c.is_control()) => format!("{t:?}"),
        _ => format!(
            "0x{}",
            k.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    };
    if key.len() > MAX {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_version_sorts_first() {
        let mut v = [
            InternalKey::new(b"b".to_vec(), 1),
            InternalKey::new(b"a".to_vec(), 1),
            InternalKey::new(b"a".to_vec(), 5),
            InternalKey::new(b"ab".to_vec(), 9),
        ];
        v.sort();
        let got: Vec<_> = v.iter().map(|k| (k.user_key.clone(), k.ts)).collect();
        assert_eq!(
            got,
            vec![
                (b"a".to_vec(), 5),
                (b"a".to_vec(), 1),
                (b"ab".to_vec(), 9),
                (b"b".to_vec(), 1)
            ]
        );
    }
}

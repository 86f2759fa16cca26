//! The B+Tree's on-disk extents: nodes (leaves of versioned entries, internal nodes of
//! child pointers), value extents (overflow for large values) and the free list.
//!
//! Every extent is one or more 4 KiB pages and starts with the same 20-byte header:
//!
//! ```text
//! [0] magic 0xB7   [1] format version   [2] kind   [3] 0
//! [4..8]   length in bytes, header included (u32 LE)
//! [8..12]  crc32c of bytes [0..8] then [12..length]
//! [12..20] the extent's own first page number (catches misdirected writes)
//! ```
//!
//! Leaf and internal nodes share one body layout: an entry count, the prefix every key
//! in the node shares (stored once: prefix compression), a table of entry offsets (for
//! binary search), then the entries, each a key suffix, a commit timestamp and
//! either a value (leaf) or a child pointer (internal). Keys are versioned: entries sort
//! by user key ascending, then timestamp descending ([`crate::key::cmp_internal`]).
//!
//! Decoding never panics on bad bytes: the checksum is checked first, and every read
//! after it is bounds-checked; a failure is [`NodeError`], which the tree turns into
//! `Error::Corruption` naming the file and offset.

use crate::coding::{put_u32, put_u64, put_varint, varint_len};
use crate::key::{Ts, cmp_internal};
use std::cmp::Ordering;

/// The page size: every extent is a whole number of pages.
pub const PAGE: usize = 4096;
/// Bytes of the common extent header.
pub const HEADER: usize = 20;
const MAGIC: u8 = 0xB7;
/// The extent format version written: 2 stores a leaf entry's timestamp as a varint
/// (commit timestamps are small; 8 fixed bytes were 6% of a 100-byte entry).
pub const FORMAT: u8 = 2;
/// The first format, still read: leaf timestamps as 8 fixed bytes. Decoding refuses
/// any other version.
pub const FORMAT_FIXED_TS: u8 = 1;
/// Bytes of an entry's slot: its offset, and the first four bytes of its key suffix
/// (most binary-search steps compare these and never touch the entry).
const SLOT: usize = 8;
/// A value longer than this (with its key) goes to a value extent of its own.
pub const INLINE_MAX: usize = PAGE / 4;

/// What an extent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Leaf = 1,
    Internal = 2,
    Value = 3,
    FreeList = 4,
}

impl Kind {
    #[inline]
    fn from_u8(b: u8) -> NResult<Kind> {
        match b {
            1 => Ok(Kind::Leaf),
            2 => Ok(Kind::Internal),
            3 => Ok(Kind::Value),
            4 => Ok(Kind::FreeList),
            k => Err(NodeError(format!("unknown extent kind {k}"))),
        }
    }
}

/// Bad bytes in an extent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeError(pub String);

type NResult<T> = std::result::Result<T, NodeError>;

fn bad<T>(why: &str) -> NResult<T> {
    Err(NodeError(why.to_string()))
}

/// A run of pages: the first page number and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Extent {
    pub page: u64,
    pub pages: u32,
}

impl Extent {
    pub fn offset(&self) -> u64 {
        self.page * PAGE as u64
    }
    pub fn bytes(&self) -> usize {
        self.pages as usize * PAGE
    }
}

/// Pages needed for `len` bytes.
pub fn pages_for(len: usize) -> u32 {
    len.div_ceil(PAGE).max(1) as u32
}

/// Fill in the header of an extent whose body is already in `buf[HEADER..]`, and pad
/// it to whole pages. `buf` must start with `HEADER` bytes reserved.
pub fn seal(buf: &mut Vec<u8>, kind: Kind, page: u64) {
    seal_as(buf, kind, page, FORMAT);
}

fn seal_as(buf: &mut Vec<u8>, kind: Kind, page: u64, format: u8) {
    let len = buf.len() as u32;
    buf[0] = MAGIC;
    buf[1] = format;
    buf[2] = kind as u8;
    buf[3] = 0;
    buf[4..8].copy_from_slice(&len.to_le_bytes());
    buf[12..20].copy_from_slice(&page.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[0..8]), &buf[12..]);
    buf[8..12].copy_from_slice(&crc.to_le_bytes());
    let padded = pages_for(buf.len()) as usize * PAGE;
    buf.resize(padded, 0);
}

/// Check an extent's header and checksum; returns its kind and the bytes it uses.
pub fn verify(buf: &[u8], page: u64) -> NResult<(Kind, &[u8])> {
    if buf.len() < HEADER {
        return bad("extent shorter than its header");
    }
    if buf[0] != MAGIC {
        return bad("bad extent magic");
    }
    if buf[1] != FORMAT && buf[1] != FORMAT_FIXED_TS {
        return Err(NodeError(format!("unknown node format version {}", buf[1])));
    }
    let kind = Kind::from_u8(buf[2])?;
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
    if len < HEADER || len > buf.len() {
        return bad("extent length out of range");
    }
    let stored = u32::from_le_bytes(buf[8..12].try_into().unwrap());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[0..8]), &buf[12..len]);
    if crc != stored {
        return bad("extent checksum mismatch");
    }
    let own = u64::from_le_bytes(buf[12..20].try_into().unwrap());
    if own != page {
        return Err(NodeError(format!(
            "extent at page {page} says it was written for page {own}"
        )));
    }
    Ok((kind, &buf[..len]))
}

/// An extent's kind and used bytes, its checksum already checked by [`verify`] (only
/// the header is read again).
#[inline]
pub fn verify_trusted(buf: &[u8]) -> NResult<(Kind, &[u8])> {
    if buf.len() < HEADER || buf[0] != MAGIC {
        return bad("bad extent header");
    }
    let kind = Kind::from_u8(buf[2])?;
    let len = u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize;
    buf.get(..len)
        .filter(|_| len >= HEADER)
        .map(|b| (kind, b))
        .ok_or_else(|| NodeError("extent length out of range".into()))
}

/// What an extent's header claims, unchecked (a hint for a walk over the file's pages):
/// its kind, length and own first page.
pub fn peek(first_page: &[u8]) -> Option<(Kind, usize, u64)> {
    let len = claimed_len(first_page)?;
    let kind = Kind::from_u8(first_page[2]).ok()?;
    let own = u64::from_le_bytes(first_page[12..20].try_into().ok()?);
    Some((kind, len, own))
}

/// The length an extent's header claims (to size a read of a multi-page extent).
pub fn claimed_len(first_page: &[u8]) -> Option<usize> {
    (first_page.len() >= HEADER && first_page[0] == MAGIC)
        .then(|| u32::from_le_bytes(first_page[4..8].try_into().unwrap()) as usize)
}

/// A leaf entry's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val<'a> {
    Delete,
    Inline(&'a [u8]),
    /// In a value extent of its own: where, and the value's length.
    Overflow(Extent, u32),
}

const V_DELETE: u8 = 0;
const V_INLINE: u8 = 1;
const V_OVERFLOW: u8 = 2;

/// A decoded view of a leaf or internal node (borrowing its bytes).
#[derive(Debug, Clone, Copy)]
pub struct NodeView<'a> {
    buf: &'a [u8],
    kind: Kind,
    n: usize,
    prefix: &'a [u8],
    offsets: usize,
    /// Written in [`FORMAT_FIXED_TS`]: leaf timestamps take 8 fixed bytes.
    fixed_ts: bool,
}

#[inline]
fn u32_at(b: &[u8], at: usize) -> NResult<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| NodeError("node truncated".into()))
}

#[inline]
fn u64_at(b: &[u8], at: usize) -> NResult<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
        .ok_or_else(|| NodeError("node truncated".into()))
}

/// A varint, decoded inline: lengths take one byte, a leaf entry's timestamp two or
/// three (read at every entry a scan passes). The one-byte case is the whole inlined
/// body; longer ones go out of line.
#[inline(always)]
fn varint_at(b: &[u8], at: &mut usize) -> NResult<u64> {
    if let Some(&byte) = b.get(*at)
        && byte < 0x80
    {
        *at += 1;
        return Ok(u64::from(byte));
    }
    varint_long(b, at)
}

#[inline(never)]
fn varint_long(b: &[u8], at: &mut usize) -> NResult<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    while let Some(&byte) = b.get(*at) {
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return bad("varint too long");
        }
    }
    bad("node truncated")
}

/// What [`NodeView::new`] worked out about a node, to view the same bytes again
/// without parsing them (an iterator does, at every entry).
#[derive(Debug, Clone, Copy)]
pub struct ViewParts {
    kind: Kind,
    n: usize,
    len: usize,
    plen: usize,
    fixed_ts: bool,
}

impl ViewParts {
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl<'a> NodeView<'a> {
    pub fn parts(&self) -> ViewParts {
        ViewParts {
            kind: self.kind,
            n: self.n,
            len: self.buf.len(),
            plen: self.prefix.len(),
            fixed_ts: self.fixed_ts,
        }
    }

    /// View again the extent bytes `parts` came from (`extent`: all of its pages).
    #[inline]
    pub fn from_parts(extent: &'a [u8], parts: ViewParts) -> Self {
        let buf = extent.get(..parts.len).unwrap_or_default();
        NodeView {
            buf,
            kind: parts.kind,
            n: parts.n,
            prefix: buf
                .get(HEADER + 8..HEADER + 8 + parts.plen)
                .unwrap_or_default(),
            offsets: HEADER + 8 + parts.plen,
            fixed_ts: parts.fixed_ts,
        }
    }

    /// View a verified extent (`buf` as returned by [`verify`]) as a node.
    pub fn new(kind: Kind, buf: &'a [u8]) -> NResult<Self> {
        if !matches!(kind, Kind::Leaf | Kind::Internal) {
            return bad("extent is not a tree node");
        }
        let n = u32_at(buf, HEADER)? as usize;
        let plen = u32_at(buf, HEADER + 4)? as usize;
        let prefix = buf
            .get(HEADER + 8..HEADER + 8 + plen)
            .ok_or_else(|| NodeError("node prefix out of range".into()))?;
        let offsets = HEADER + 8 + plen;
        if n == 0 || offsets + SLOT * n > buf.len() {
            return bad("node entry table out of range");
        }
        Ok(NodeView {
            buf,
            kind,
            n,
            prefix,
            offsets,
            fixed_ts: buf.get(1) == Some(&FORMAT_FIXED_TS),
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }
    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn prefix(&self) -> &'a [u8] {
        self.prefix
    }

    /// Entry `i`: its key suffix, timestamp, and the offset of what follows.
    #[inline(always)]
    fn entry(&self, i: usize) -> NResult<(&'a [u8], Ts, usize)> {
        let mut at = u32_at(self.buf, self.offsets + SLOT * i)? as usize;
        let slen = varint_at(self.buf, &mut at)? as usize;
        let suffix = self
            .buf
            .get(at..at + slen)
            .ok_or_else(|| NodeError("key suffix out of range".into()))?;
        if self.kind == Kind::Internal {
            // Separators are user keys: no timestamp.
            return Ok((suffix, 0, at + slen));
        }
        if self.fixed_ts {
            let ts = u64_at(self.buf, at + slen)?;
            return Ok((suffix, ts, at + slen + 8));
        }
        let mut at = at + slen;
        let ts = varint_at(self.buf, &mut at)?;
        Ok((suffix, ts, at))
    }

    /// Start loading entry `i`'s bytes (up to `span` of them) before they are read.
    #[inline]
    pub fn prefetch_entry(&self, i: usize, span: usize) {
        if let Ok(at) = u32_at(self.buf, self.offsets + SLOT * i) {
            let at = (at as usize).min(self.buf.len());
            crate::cache_line::prefetch(&self.buf[at..(at + span).min(self.buf.len())]);
        }
    }

    /// Entry `i`'s key suffix (after [`Self::prefix`]) and timestamp.
    #[inline]
    pub fn key(&self, i: usize) -> NResult<(&'a [u8], Ts)> {
        self.entry(i).map(|(s, t, _)| (s, t))
    }

    /// Entry `i`'s full user key.
    pub fn user_key(&self, i: usize) -> NResult<Vec<u8>> {
        let (s, _) = self.key(i)?;
        let mut k = Vec::with_capacity(self.prefix.len() + s.len());
        k.extend_from_slice(self.prefix);
        k.extend_from_slice(s);
        Ok(k)
    }

    /// Compare entry `i` with `(key, ts)` in internal-key order.
    #[inline]
    pub fn cmp(&self, i: usize, key: &[u8], ts: Ts) -> NResult<Ordering> {
        let (suffix, ets) = self.key(i)?;
        let p = self.prefix.len();
        let head = &key[..p.min(key.len())];
        Ok(match self.prefix.cmp(head) {
            Ordering::Equal if key.len() >= p => cmp_internal(suffix, ets, &key[p..], ts),
            // `key` is a proper prefix of the node's prefix: every entry sorts after it.
            Ordering::Equal => Ordering::Greater,
            o => o,
        })
    }

    /// The first entry at or after `(key, ts)` (`len()` if none).
    pub fn lower_bound(&self, key: &[u8], ts: Ts) -> NResult<usize> {
        let rest = match self.past_prefix(key) {
            Ok(rest) => rest,
            Err(Ordering::Less) => return Ok(self.n),
            Err(_) => return Ok(0),
        };
        let h = head(rest);
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let below = match self.slot_head(mid)?.cmp(&h) {
                Ordering::Equal => {
                    let (suffix, ets) = self.key(mid)?;
                    cmp_internal(suffix, ets, rest, ts) == Ordering::Less
                }
                o => o == Ordering::Less,
            };
            if below {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// `key` past the node's prefix, or how every entry compares with `key` when the
    /// prefix alone decides it (`Less`: all entries sort before it).
    #[inline]
    fn past_prefix<'k>(&self, key: &'k [u8]) -> Result<&'k [u8], Ordering> {
        let p = self.prefix.len();
        match self.prefix.cmp(&key[..p.min(key.len())]) {
            Ordering::Equal if key.len() >= p => Ok(&key[p..]),
            // `key` is a proper prefix of the node's prefix: every entry sorts after it.
            Ordering::Equal => Err(Ordering::Greater),
            o => Err(o),
        }
    }

    /// The first four bytes of entry `i`'s key suffix, from its slot.
    #[inline]
    fn slot_head(&self, i: usize) -> NResult<u32> {
        u32_at(self.buf, self.offsets + SLOT * i + 4)
    }

    /// Leaf entry `i`'s value.
    pub fn value(&self, i: usize) -> NResult<Val<'a>> {
        self.leaf_entry(i).map(|(_, _, v)| v)
    }

    /// Leaf entry `i` whole: key suffix, timestamp and value, decoded in one pass.
    #[inline(always)]
    pub fn leaf_entry(&self, i: usize) -> NResult<(&'a [u8], Ts, Val<'a>)> {
        let (suffix, ts, at) = self.entry(i)?;
        self.value_at(at).map(|v| (suffix, ts, v))
    }

    #[inline(always)]
    fn value_at(&self, mut at: usize) -> NResult<Val<'a>> {
        let tag = *self
            .buf
            .get(at)
            .ok_or_else(|| NodeError("node truncated".into()))?;
        at += 1;
        match tag {
            V_DELETE => Ok(Val::Delete),
            V_INLINE => {
                let len = varint_at(self.buf, &mut at)? as usize;
                self.buf
                    .get(at..at + len)
                    .map(Val::Inline)
                    .ok_or_else(|| NodeError("value out of range".into()))
            }
            V_OVERFLOW => Ok(Val::Overflow(
                Extent {
                    page: u64_at(self.buf, at)?,
                    pages: u32_at(self.buf, at + 8)?,
                },
                u32_at(self.buf, at + 12)?,
            )),
            _ => bad("unknown value tag"),
        }
    }

    /// Internal entry `i`'s child.
    pub fn child(&self, i: usize) -> NResult<Extent> {
        let (_, _, at) = self.entry(i)?;
        Ok(Extent {
            page: u64_at(self.buf, at)?,
            pages: u32_at(self.buf, at + 8)?,
        })
    }

    /// The child of an internal node holding `key`'s versions: the last whose
    /// separator is at or before `key` (the first child if none is). Separators are
    /// user keys, each above every key of the child before it and at or below every
    /// key of its own child; a key's versions never span two leaves.
    pub fn route(&self, key: &[u8]) -> NResult<usize> {
        let rest = match self.past_prefix(key) {
            Ok(rest) => rest,
            Err(Ordering::Less) => return Ok(self.n - 1),
            Err(_) => return Ok(0),
        };
        let h = head(rest);
        // The first separator above `key`, minus one.
        let (mut lo, mut hi) = (0, self.n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let at_or_below = match self.slot_head(mid)?.cmp(&h) {
                Ordering::Equal => self.key(mid)?.0 <= rest,
                o => o == Ordering::Less,
            };
            if at_or_below {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo.saturating_sub(1))
    }
}

/// The shortest key above `last` and at or below `first` (`last < first`): the
/// separator an internal node stores for the child that starts at `first`.
pub fn separator(last: &[u8], first: &[u8]) -> Vec<u8> {
    let same = common_prefix(last, first);
    first[..(same + 1).min(first.len())].to_vec()
}

/// The first four bytes of `suffix`, zero-padded, as a number that orders like the
/// bytes: if two heads differ, so do the suffixes, the same way.
#[inline]
fn head(suffix: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = suffix.len().min(4);
    b[..n].copy_from_slice(&suffix[..n]);
    u32::from_be_bytes(b)
}

/// An owned entry, while nodes are rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub ts: Ts,
    pub val: OwnedVal,
}

/// What an owned entry carries: a leaf value or a child pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedVal {
    Delete,
    Inline(Vec<u8>),
    Overflow(Extent, u32),
    Child(Extent),
}

impl OwnedVal {
    fn encoded_len(&self) -> usize {
        match self {
            OwnedVal::Delete => 1,
            OwnedVal::Inline(v) => 1 + varint_len(v.len() as u64) + v.len(),
            OwnedVal::Overflow(..) => 1 + 16,
            OwnedVal::Child(_) => 12,
        }
    }
    pub fn from_val(v: Val<'_>) -> Self {
        match v {
            Val::Delete => OwnedVal::Delete,
            Val::Inline(b) => OwnedVal::Inline(b.to_vec()),
            Val::Overflow(e, len) => OwnedVal::Overflow(e, len),
        }
    }
}

/// Packs sorted entries into nodes of about one page each, tracking the size each node
/// would encode to (prefix compression included) as entries are added.
#[derive(Debug, Default)]
pub struct Packer {
    entries: Vec<Entry>,
    prefix: usize,
    key_bytes: usize,
    rest_bytes: usize,
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

impl Packer {
    /// The encoded size of the node with `e` added.
    fn size_with(&self, e: &Entry) -> usize {
        let n = self.entries.len() + 1;
        let prefix = match self.entries.first() {
            Some(f) => self.prefix.min(common_prefix(&f.key, &e.key)),
            None => e.key.len(),
        };
        let key_bytes = self.key_bytes + e.key.len();
        let rest = self.rest_bytes + Self::rest_len(e);
        HEADER + 8 + prefix + SLOT * n + (key_bytes - n * prefix) + rest
    }

    /// An entry's bytes besides its key suffix: at most this (the suffix's length
    /// takes at most as many varint bytes as the whole key's).
    fn rest_len(e: &Entry) -> usize {
        let ts = if matches!(e.val, OwnedVal::Child(_)) {
            0
        } else {
            varint_len(e.ts)
        };
        varint_len(e.key.len() as u64) + ts + e.val.encoded_len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Would adding `e` take the node past `target` bytes (a node always takes one)?
    pub fn would_overflow(&self, e: &Entry, target: usize) -> bool {
        !self.entries.is_empty() && self.size_with(e) > target
    }

    pub fn push(&mut self, e: Entry) {
        self.prefix = match self.entries.first() {
            Some(f) => self.prefix.min(common_prefix(&f.key, &e.key)),
            None => e.key.len(),
        };
        self.key_bytes += e.key.len();
        self.rest_bytes += Self::rest_len(&e);
        self.entries.push(e);
    }

    /// The last entry's user key.
    pub fn last_key(&self) -> Option<&Vec<u8>> {
        self.entries.last().map(|e| &e.key)
    }

    /// The first entry's key (what the parent routes by).
    pub fn first(&self) -> Option<&Entry> {
        self.entries.first()
    }

    /// Encode the node (header reserved, unsealed) and start a new one.
    pub fn take(&mut self) -> Vec<u8> {
        let entries = std::mem::take(&mut self.entries);
        let plen = self.prefix;
        *self = Packer::default();
        encode_node(&entries, plen, false)
    }
}

/// `fixed_ts`: timestamps as 8 fixed bytes ([`FORMAT_FIXED_TS`], kept to test reading
/// trees written before [`FORMAT`] 2).
fn encode_node(entries: &[Entry], plen: usize, fixed_ts: bool) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER];
    put_u32(&mut buf, entries.len() as u32);
    put_u32(&mut buf, plen as u32);
    buf.extend_from_slice(&entries[0].key[..plen]);
    let table = buf.len();
    buf.resize(table + SLOT * entries.len(), 0);
    for (i, e) in entries.iter().enumerate() {
        let at = buf.len() as u32;
        let suffix = &e.key[plen..];
        let slot = table + SLOT * i;
        buf[slot..slot + 4].copy_from_slice(&at.to_le_bytes());
        buf[slot + 4..slot + 8].copy_from_slice(&head(suffix).to_le_bytes());
        put_varint(&mut buf, suffix.len() as u64);
        buf.extend_from_slice(suffix);
        match e.val {
            OwnedVal::Child(_) => {}
            _ if fixed_ts => put_u64(&mut buf, e.ts),
            _ => put_varint(&mut buf, e.ts),
        }
        match &e.val {
            OwnedVal::Delete => buf.push(V_DELETE),
            OwnedVal::Inline(v) => {
                buf.push(V_INLINE);
                put_varint(&mut buf, v.len() as u64);
                buf.extend_from_slice(v);
            }
            OwnedVal::Overflow(x, len) => {
                buf.push(V_OVERFLOW);
                put_u64(&mut buf, x.page);
                put_u32(&mut buf, x.pages);
                put_u32(&mut buf, *len);
            }
            OwnedVal::Child(x) => {
                put_u64(&mut buf, x.page);
                put_u32(&mut buf, x.pages);
            }
        }
    }
    buf
}

/// A value extent's bytes (header reserved, unsealed).
pub fn encode_value(v: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + v.len());
    buf.resize(HEADER, 0);
    buf.extend_from_slice(v);
    buf
}

/// A free-list extent's bytes (header reserved, unsealed).
pub fn encode_free_list(free: &[Extent]) -> Vec<u8> {
    let mut buf = vec![0u8; HEADER];
    put_u64(&mut buf, free.len() as u64);
    for x in free {
        put_u64(&mut buf, x.page);
        put_u32(&mut buf, x.pages);
    }
    buf
}

/// Decode a verified free-list extent.
pub fn decode_free_list(buf: &[u8]) -> NResult<Vec<Extent>> {
    let n = u64_at(buf, HEADER)? as usize;
    if n > buf.len() / 12 {
        return bad("free list count out of range");
    }
    (0..n)
        .map(|i| {
            let at = HEADER + 8 + 12 * i;
            Ok(Extent {
                page: u64_at(buf, at)?,
                pages: u32_at(buf, at + 8)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(k: &str, ts: Ts, v: &str) -> Entry {
        Entry {
            key: k.as_bytes().to_vec(),
            ts,
            val: OwnedVal::Inline(v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn a_leaf_round_trips_with_its_prefix_stored_once() {
        let mut p = Packer::default();
        for e in [
            entry("user:0001", 9, "a"),
            entry("user:0001", 3, "b"),
            entry("user:0002", 4, "c"),
        ] {
            assert!(!p.would_overflow(&e, PAGE));
            p.push(e);
        }
        let mut buf = p.take();
        seal(&mut buf, Kind::Leaf, 7);
        assert_eq!(buf.len(), PAGE);
        let (kind, used) = verify(&buf, 7).unwrap();
        let n = NodeView::new(kind, used).unwrap();
        assert_eq!(n.prefix(), b"user:000");
        assert_eq!(n.len(), 3);
        assert_eq!(n.key(1).unwrap(), (&b"1"[..], 3));
        assert_eq!(n.value(2).unwrap(), Val::Inline(b"c"));
        // The newest version at or below 5 of user:0001 is the one at 3.
        assert_eq!(n.lower_bound(b"user:0001", 5).unwrap(), 1);
        assert_eq!(n.lower_bound(b"user:0000", 5).unwrap(), 0);
        assert_eq!(n.lower_bound(b"user:", 5).unwrap(), 0);
        assert_eq!(n.lower_bound(b"v", 5).unwrap(), 3);
        // A flipped bit or a misplaced extent is refused, not read.
        let mut bent = buf.clone();
        bent[60] ^= 1;
        assert!(verify(&bent, 7).is_err());
        assert!(verify(&buf, 8).is_err());
    }

    #[test]
    fn leaves_of_the_first_format_are_still_read_and_the_new_one_is_smaller() {
        let entries = vec![
            entry("user:0001", 9, "a"),
            entry("user:0001", 3, "b"),
            entry("user:0002", u64::MAX >> 1, "c"),
            entry("user:0003", 300, "d"),
        ];
        let mut sizes = Vec::new();
        for (fixed_ts, format) in [(true, FORMAT_FIXED_TS), (false, FORMAT)] {
            let mut buf = encode_node(&entries, 8, fixed_ts);
            seal_as(&mut buf, Kind::Leaf, 3, format);
            let (kind, used) = verify(&buf, 3).unwrap();
            sizes.push(used.len());
            let n = NodeView::new(kind, used).unwrap();
            let back = NodeView::from_parts(&buf, n.parts());
            for view in [n, back] {
                for (i, e) in entries.iter().enumerate() {
                    let (suffix, ts, v) = view.leaf_entry(i).unwrap();
                    assert_eq!(
                        ([view.prefix(), suffix].concat(), ts),
                        (e.key.clone(), e.ts)
                    );
                    assert_eq!(OwnedVal::from_val(v), e.val);
                }
                assert_eq!(view.lower_bound(b"user:0002", u64::MAX >> 1).unwrap(), 2);
                assert_eq!(view.lower_bound(b"user:0002", 5).unwrap(), 3);
            }
        }
        assert!(sizes[1] < sizes[0], "{sizes:?}");
        // A format from the future is refused.
        let mut buf = encode_node(&entries, 8, false);
        seal_as(&mut buf, Kind::Leaf, 3, FORMAT + 1);
        assert!(verify(&buf, 3).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        let mut rng = 0x9e3779b97f4a7c15u64;
        for round in 0..2000 {
            let mut p = Packer::default();
            for i in 0..(round % 7 + 1) {
                p.push(entry(&format!("k{i:03}"), i as u64, "vv"));
            }
            let mut buf = p.take();
            seal(&mut buf, Kind::Leaf, 1);
            // Corrupt a few bytes past the checksum's reach by re-sealing after damage.
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let at = HEADER + (rng as usize % 64);
                buf[at] = (rng >> 32) as u8;
            }
            let len = claimed_len(&buf).unwrap();
            let mut body = buf[..len].to_vec();
            seal(&mut body, Kind::Leaf, 1);
            if let Ok((k, used)) = verify(&body, 1)
                && let Ok(n) = NodeView::new(k, used)
            {
                for i in 0..n.len() {
                    let _ = n.key(i);
                    let _ = n.value(i);
                    let _ = n.lower_bound(b"k003", 2);
                }
            }
        }
    }
}

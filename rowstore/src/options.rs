//! Engine options: the row store's knobs, already validated by the facade.

use crate::compression::Compression;
use crate::error::{Error, Result};
use crate::vfs::Vfs;
use std::sync::Arc;
use std::time::Duration;

/// When a commit counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A commit returns after its WAL record is fsynced (fdatasync). Commits that arrive
    /// while a sync is running share the next one (group commit), so concurrent writers
    /// do not pay one fsync each. Survives process crash and power loss.
    Sync,
    /// Like `Sync`, but the commit leader waits up to `max_delay` for more commits to
    /// join its group before syncing: fewer fsyncs under load, at the cost of up to
    /// `max_delay` extra latency per commit. Still durable when a commit returns.
    GroupCommit { max_delay: Duration },
    /// A commit returns once its WAL record is written to the OS (no fsync). Survives a
    /// process crash (SIGKILL) but the last commits may be lost on power loss or an OS
    /// crash. The WAL is fsynced when a memtable is rotated, flushed, or the database
    /// closes.
    Buffered,
}

/// The on-disk structure under the WAL and memtables, chosen when a database is created
/// and recorded in its manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageKind {
    /// Levels of sorted tables, merged by background compaction: the fastest writes.
    #[default]
    Lsm,
    /// One copy-on-write B+Tree file ([`crate::btree`]) that flushes merge into: one
    /// structure to read, the fastest point reads and scans.
    BTree,
}

impl StorageKind {
    pub fn name(self) -> &'static str {
        match self {
            StorageKind::Lsm => "lsm",
            StorageKind::BTree => "btree",
        }
    }
    /// The name in messages: `LSM` or `B+Tree`.
    pub fn title(self) -> &'static str {
        match self {
            StorageKind::Lsm => "LSM",
            StorageKind::BTree => "B+Tree",
        }
    }
    pub(crate) fn code(self) -> u8 {
        match self {
            StorageKind::Lsm => 0,
            StorageKind::BTree => 1,
        }
    }
    pub(crate) fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(StorageKind::Lsm),
            1 => Some(StorageKind::BTree),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// The storage structure a new database gets; an existing one must match what it
    /// recorded.
    pub storage: StorageKind,
    /// Target size of an uncompressed SST data block.
    pub block_size: usize,
    /// Bytes of decompressed blocks kept in the block cache (0 disables the cache).
    pub cache_size: u64,
    /// Many cache shards (concurrent) or one (global eviction order).
    pub sharded_cache: bool,
    /// Budget of table bytes read through memory maps; `None` reads with pread only.
    pub mmap_size: Option<u64>,
    pub compression: Compression,
    pub bloom_bits_per_key: usize,
    /// Bytes of writes buffered in memtables per flush: the LSM flushes each memtable
    /// as it fills (a level-0 table of at most this size); the B+Tree engine gathers
    /// this many bytes of memtables before it merges them into its tree (each flush
    /// rewrites every leaf its writes touch, so it pays to batch them).
    pub write_buffer_size: usize,
    /// Size at which the active memtable is frozen and a new one started (at most
    /// `write_buffer_size`; with `background_compaction` only). A skiplist that stays
    /// within the CPU's last-level cache takes inserts markedly faster than one that
    /// outgrows it: a bulk load of 1M keys ran 1.2-1.4x faster through 16 MiB memtables
    /// than through 64 MiB ones on a 32 MiB-L3 machine.
    pub memtable_size: usize,
    /// Immutable memtables allowed to wait for flush before writes stall, counted in
    /// `write_buffer_size`s (so in memtables when `memtable_size` is that large).
    pub max_immutable_memtables: usize,
    /// Number of L0 tables that triggers an L0 -> L1 compaction.
    pub level0_compaction_trigger: usize,
    /// Number of L0 tables at which writes stall until compaction catches up.
    pub level0_stop_writes_trigger: usize,
    /// Target size of level 1; each deeper level is `level_size_multiplier` times larger.
    pub level_base_bytes: u64,
    pub level_size_multiplier: u64,
    /// Size at which compaction output tables are cut.
    pub target_file_size: u64,
    pub wal_enabled: bool,
    /// Leader/follower group commit (true) or one WAL write + sync per commit under a
    /// lock (false).
    pub group_commit: bool,
    /// Writers waiting for a large commit group (8 or more writers) yield the processor
    /// for up to about two group commit times before they sleep, so that most of them
    /// are running when the group is done instead of each waiting for a wake-up; the
    /// wait adapts, and stops yielding while other threads want the processors. More
    /// throughput and lower latency from many writers, for processor time that would
    /// otherwise idle during the WAL sync. `false`: waiting writers always sleep.
    pub commit_yield: bool,
    pub durability: Durability,
    /// Flush and compaction on background threads (true) or inline in the writer that
    /// fills the memtable (false).
    pub background_compaction: bool,
    /// Compaction threads when `background_compaction` is on.
    pub compaction_workers: usize,
    /// Scan read-ahead: (worker threads, blocks ahead); `None` disables it.
    pub prefetch: Option<(usize, usize)>,
    /// The file system every file of the database goes through.
    pub vfs: Arc<dyn Vfs>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            storage: StorageKind::Lsm,
            block_size: 4096,
            cache_size: 256 << 20,
            sharded_cache: true,
            mmap_size: Some(1 << 30),
            compression: Compression::Lz4,
            bloom_bits_per_key: 10,
            write_buffer_size: 64 << 20,
            memtable_size: DEFAULT_MEMTABLE_SIZE,
            max_immutable_memtables: 2,
            level0_compaction_trigger: 4,
            level0_stop_writes_trigger: 20,
            level_base_bytes: 256 << 20,
            level_size_multiplier: 10,
            target_file_size: 64 << 20,
            wal_enabled: true,
            group_commit: true,
            commit_yield: true,
            durability: Durability::Sync,
            background_compaction: true,
            compaction_workers: 2,
            prefetch: Some((2, 8)),
            vfs: crate::vfs::std_vfs(),
        }
    }
}

/// Default [`EngineOptions::memtable_size`]: half a typical server L3 cache.
pub const DEFAULT_MEMTABLE_SIZE: usize = 16 << 20;

impl EngineOptions {
    /// Bytes at which the active memtable is switched for a new one.
    pub fn memtable_switch_bytes(&self) -> usize {
        if self.background_compaction {
            self.memtable_size.min(self.write_buffer_size)
        } else {
            // An inline flush runs at every switch: switch once per flush.
            self.write_buffer_size
        }
    }

    /// Memtables (of [`Self::memtable_switch_bytes`]) that make one `write_buffer_size`.
    pub fn memtables_per_buffer(&self) -> usize {
        self.write_buffer_size
            .div_ceil(self.memtable_switch_bytes())
            .max(1)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if !(512..=(1 << 20)).contains(&self.block_size) {
            return bad(format!(
                "page_size must be between 512 and 1048576 bytes, got {}",
                self.block_size
            ));
        }
        if self.write_buffer_size < 4096 {
            return bad(format!(
                "write_buffer_size must be at least 4096 bytes, got {}",
                self.write_buffer_size
            ));
        }
        if self.memtable_size < 4096 {
            return bad(format!(
                "memtable_size must be at least 4096 bytes, got {}",
                self.memtable_size
            ));
        }
        if self.max_immutable_memtables == 0 {
            return bad("max_immutable_memtables must be at least 1".into());
        }
        if self.level0_compaction_trigger < 2 {
            return bad("level0_compaction_trigger must be at least 2".into());
        }
        if self.level0_stop_writes_trigger <= self.level0_compaction_trigger {
            return bad("level0_stop_writes_trigger must exceed level0_compaction_trigger".into());
        }
        if self.level_base_bytes < 4096 || self.target_file_size < 4096 {
            return bad("level_base_bytes and target_file_size must be at least 4096".into());
        }
        if self.level_size_multiplier < 2 {
            return bad("level_size_multiplier must be at least 2".into());
        }
        if !(1..=64).contains(&self.bloom_bits_per_key) {
            return bad("bloom_bits_per_key must be between 1 and 64".into());
        }
        if self.background_compaction && !(1..=64).contains(&self.compaction_workers) {
            return bad(format!(
                "parallel_compaction_workers must be between 1 and 64, got {}",
                self.compaction_workers
            ));
        }
        if let Some((w, d)) = self.prefetch
            && (!(1..=64).contains(&w) || !(1..=1024).contains(&d))
        {
            return bad(format!(
                "prefetch_workers must be 1..=64 and prefetch_distance 1..=1024 (got {w}, {d})"
            ));
        }
        if let Durability::GroupCommit { max_delay } = self.durability
            && max_delay > Duration::from_secs(1)
        {
            return bad("group commit max_delay must be at most 1 second".into());
        }
        Ok(())
    }
}

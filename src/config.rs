//! `LightningDbConfig`: every knob of a database, validated at create/open.

use crate::error::{Error, Result};
use lightning_rowstore::vfs::Vfs;
use lightning_rowstore::{Compression, EngineOptions};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use lightning_rowstore::Durability;

/// The row store's on-disk structure, chosen when a database is created and recorded in
/// it. Both keep the same WAL, commit pipeline, transactions, tables, column store and
/// SQL; they differ in what a flush writes and a read looks through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageEngine {
    /// A log-structured merge tree (the default): flushes write sorted tables that
    /// background compaction merges. The fastest writes; pick it for write-heavy work.
    #[default]
    Lsm,
    /// A copy-on-write B+Tree in one file that every flush merges into (shadow paging:
    /// a crash leaves the last published tree). One structure to read: the fastest
    /// point reads and range scans; pick it for read- and scan-heavy work. Not yet
    /// available with encryption at rest.
    BTree,
}

impl StorageEngine {
    /// The name `lightning-cli stats` and the metrics show: `lsm` or `btree`.
    pub fn name(self) -> &'static str {
        self.kind().name()
    }

    pub(crate) fn kind(self) -> lightning_rowstore::StorageKind {
        match self {
            StorageEngine::Lsm => lightning_rowstore::StorageKind::Lsm,
            StorageEngine::BTree => lightning_rowstore::StorageKind::BTree,
        }
    }

    pub(crate) fn from_kind(k: lightning_rowstore::StorageKind) -> Self {
        match k {
            lightning_rowstore::StorageKind::Lsm => StorageEngine::Lsm,
            lightning_rowstore::StorageKind::BTree => StorageEngine::BTree,
        }
    }
}

/// Isolation level of transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsistencyLevel {
    /// Snapshot isolation: every read of a transaction sees the snapshot taken when it
    /// began; a commit fails if another transaction committed a write to one of the same
    /// keys after that snapshot (first committer wins). Write skew is possible.
    #[default]
    Snapshot,
    /// Serializable: snapshot isolation plus validation of the read set at commit; a
    /// commit fails if any key the transaction read (including keys found absent and
    /// keys in scanned ranges) was changed by a transaction that committed after its
    /// snapshot. Refuses write skew.
    Serializable,
}

/// Which files SQL statements (`CREATE EXTERNAL TABLE … LOCATION`, `COPY … TO`) may
/// read and write. Whatever this says, SQL never reads or writes inside a database
/// directory (this database's or, where recognizable, another one's).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SqlFileAccess {
    /// No file access from SQL: external tables and `COPY … TO` are refused.
    None,
    /// Only files inside these directories (and below them).
    Directories(Vec<PathBuf>),
    /// Any path the process may access, except database directories. The default:
    /// SQL in an embedded database comes from the application, and imports and
    /// exports through SQL are what analysts expect. An application that runs SQL from
    /// untrusted users should set [`SqlFileAccess::None`] or
    /// [`SqlFileAccess::Directories`].
    #[default]
    Any,
}

/// Configuration of a database. Use `..Default::default()` for the fields you do not set.
///
/// Every field is checked by [`crate::Database::create`] and [`crate::Database::open`];
/// an out-of-range value is refused with [`Error::InvalidConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct LightningDbConfig {
    /// Target size in bytes of an uncompressed table data block (the unit of reads,
    /// caching and compression). Smaller blocks make point reads cheaper, larger blocks
    /// compress better and scan faster. 512..=1 MiB, power of two. Default 4096.
    pub page_size: usize,
    /// Bytes of decompressed data blocks kept in the block cache. 0 disables the cache
    /// (every read goes to the file). Default 256 MiB.
    pub cache_size: u64,
    /// Budget in bytes of table files read through memory maps instead of `pread`.
    /// Tables beyond the budget are read with `pread`. `None` or `Some(0)` disables
    /// memory mapping. Default `Some(1 GiB)`.
    pub mmap_size: Option<u64>,
    /// Compress table blocks with `compression_type`. Blocks that do not shrink by at
    /// least 1/8 are stored raw. Default true.
    pub compression_enabled: bool,
    /// Block codec when `compression_enabled`: 1 = Zstd, 2 = LZ4, 3 = Snappy.
    /// Default 2 (LZ4).
    pub compression_type: u8,
    /// Most transactions open at once; `begin_transaction` beyond it returns
    /// [`Error::TooManyTransactions`]. 1..=1_000_000. Default 10_000.
    pub max_active_transactions: usize,
    /// Validate commits against an in-memory index of recently committed keys (true),
    /// instead of looking up every written key's newest version in the LSM tree (false).
    /// Both give the same answers; true is faster. Default true.
    pub use_optimized_transactions: bool,
    /// Read ahead during scans: worker threads load upcoming table blocks into the block
    /// cache while the scan works. Default true.
    pub prefetch_enabled: bool,
    /// How many blocks ahead a scan prefetches (1..=1024). Default 8.
    pub prefetch_distance: usize,
    /// Prefetch worker threads (1..=64). Default 2.
    pub prefetch_workers: usize,
    /// A sharded block cache whose shards are used concurrently (true), or a single
    /// shard with one global eviction order (false). Default true.
    pub use_lock_free_cache: bool,
    /// Write every commit to the write-ahead log first. With `false`, writes live only in
    /// memory until a memtable flush (or `close`); a crash loses them. Default true.
    pub wal_enabled: bool,
    /// Group commit: concurrent commits are written to the WAL together by one leader and
    /// share one fsync (true); with false, each commit is written and synced alone under
    /// a lock. Default true.
    pub improved_wal: bool,
    /// With 8 or more concurrent writers, writers waiting for their commit group yield
    /// the processor (adaptively, and not while other threads want it) instead of
    /// sleeping at once: more commits per second and lower latency, for processor time
    /// that would idle during the WAL sync (see the row store's
    /// `EngineOptions::commit_yield`). `false`: waiting writers always sleep, which
    /// uses the least processor time. Default true.
    pub commit_yield: bool,
    /// Run memtable flushes and compactions on background threads (true). With false,
    /// no background thread is started: the commit that fills the memtable flushes it
    /// and runs any due compaction itself. Default true.
    pub background_compaction: bool,
    /// Compaction threads when `background_compaction` is on (1..=64). Compactions of
    /// disjoint level pairs run in parallel. Default 2.
    pub parallel_compaction_workers: usize,
    /// When a commit counts as durable. Default [`Durability::Sync`]: fsync before every
    /// commit returns (concurrent commits share fsyncs).
    pub durability: Durability,
    /// Bytes of writes buffered in memory per flush. The LSM engine flushes each
    /// memtable to a level-0 table as it fills; the B+Tree engine merges this many
    /// bytes of memtables into its tree at once (each merge rewrites the leaves its
    /// writes touch, so fewer, larger merges cost less). Default 64 MiB.
    pub write_buffer_size: usize,
    /// Size at which the active memtable is frozen and a new one started (at most
    /// `write_buffer_size`; with `background_compaction` on). A memtable that fits the
    /// CPU's last-level cache takes writes faster: a 1M-key bulk load ran 1.2-1.4x
    /// faster through 16 MiB memtables than through 64 MiB ones. Default 16 MiB.
    pub memtable_size: usize,
    /// Level-0 tables that trigger a compaction into level 1. Default 4.
    pub level0_compaction_trigger: usize,
    /// Level-0 tables at which writes wait for compaction. Default 20.
    pub level0_stop_writes_trigger: usize,
    /// Target size of level 1; each deeper level is 10x larger. Default 256 MiB.
    pub level_base_size: u64,
    /// Size at which compaction output tables are cut. Default 64 MiB.
    pub target_file_size: u64,
    /// Bloom filter bits per key (1..=64; ~1% false positives at 10). Default 10.
    pub bloom_bits_per_key: usize,
    /// Default isolation level of transactions. Default `Snapshot`.
    pub consistency_level: ConsistencyLevel,
    /// A transaction idle for longer than this is aborted and its resources freed
    /// (its id then returns [`Error::TransactionNotFound`]). Default 60 s.
    pub transaction_timeout: Duration,
    /// Compact committed rows into column segments on a background thread (true), or
    /// only when `compact_columnar` is called (false). Default true.
    pub columnar_background: bool,
    /// A table is compacted into the column store at least this often while it has new
    /// commits (the age threshold). Default 1 s.
    pub columnar_compaction_interval: Duration,
    /// ...or as soon as this many row changes were committed since the last round (the
    /// rows threshold). Default 100_000.
    pub columnar_compaction_rows: u64,
    /// ...or as soon as this many bytes were written to the WAL since the last round
    /// (the bytes threshold). Default 64 MiB.
    pub columnar_compaction_bytes: u64,
    /// Buffer compression of column segments: 0 = none, 1 = Zstd (default), 2 = LZ4.
    pub columnar_compression: u8,
    /// Most rows in one column segment (1_000..=16M). Default 1_048_576.
    pub columnar_segment_rows: usize,
    /// Rows per record batch inside a segment (1_000..=16M; a segment smaller than this
    /// is one batch): the unit of lazy decoding, of zone-map pruning within a segment and
    /// of scan parallelism. Default 65_536.
    pub columnar_batch_rows: usize,
    /// Bytes of decoded column-segment data kept in memory for later queries (columns
    /// as stored, dictionaries kept). A segment's columns stay until a compaction round
    /// replaces it; what does not fit is decoded (and decompressed) again by every
    /// query that reads it. 0 = keep nothing. Default: a quarter of the memory this
    /// process may use (physical memory, or the cgroup's limit when lower), at least
    /// 512 MiB ([`default_columnar_cache_bytes`]); only columns queries read are held.
    pub columnar_cache_bytes: u64,
    /// Also compact the key-value API's data (the `kv` table) into column segments.
    /// Off by default: SQL over `kv` then reads the row store, and key-value workloads
    /// pay nothing for the column store. Default false.
    pub columnar_kv: bool,
    /// `health_check` reports low disk space below this many free bytes. Default 256 MiB.
    pub health_min_free_disk_bytes: u64,
    /// Longest SQL text accepted by `sql`, in bytes; longer statements are refused with
    /// [`Error::Sql`] before they are parsed. 1 KiB..=64 MiB. Default 1 MiB.
    pub sql_max_statement_bytes: usize,
    /// Deepest nesting accepted in a SQL statement: of expressions (a chain
    /// `a + b + c` of n terms nests n deep) and of set operations (`UNION` chains).
    /// Deeper statements are refused with [`Error::Sql`] before planning. DataFusion's
    /// planning time grows with the square of this depth, hence the modest default
    /// (DuckDB's `max_expression_depth` is also 1000). 16..=10_000. Default 1000.
    pub sql_max_expression_depth: usize,
    /// Worker threads of the SQL runtime, which is also how many partitions DataFusion
    /// splits a query into: how much of the machine one query may use. 0 = one per
    /// core less one (at least one), so one core is always left to the commit path and
    /// queries keep their speed while transactions run; an analytics-only database can
    /// set it to the core count. Default 0.
    pub sql_threads: usize,
    /// An SQL `INSERT` (`INSERT … SELECT`, `INSERT … VALUES`) larger than this many
    /// bytes of encoded rows stops collecting one write batch and stages its rows as
    /// sorted runs of this size, written straight to table files and published by one
    /// commit at the end: any size of statement, atomic (also across a crash), with
    /// memory bounded by one run. 1 KiB..=256 MiB. Default 64 MiB.
    pub sql_insert_run_bytes: usize,
    /// CPU priority (a Linux nice value, 0..=19) of the threads that serve analytics:
    /// the SQL runtime and the column-store compactor. Above 0 they give way to the
    /// commit path (writer threads, the commit leader, the WAL and memtable flushes)
    /// whenever both want a core, so queries use the cores transactions leave idle
    /// instead of queueing commits behind scans. Never lower than the process's own
    /// nice value. 0 = no difference. Default 10.
    pub analytics_nice: i32,
    /// Which files SQL may read and write. Default [`SqlFileAccess::Any`] (except
    /// database directories).
    pub sql_file_access: SqlFileAccess,
    /// The file system every database file goes through. `None`: the operating
    /// system's. Tests pass a [`crate::vfs::FaultVfs`] here to inject faults and
    /// simulate power loss.
    pub vfs: Option<Arc<dyn Vfs>>,
    /// Encryption at rest: `None` (default) stores plaintext. With a key, every file
    /// (WAL, tables, manifest, `CURRENT`, column segments, delete bitmaps, catalog,
    /// checkpoints) is sealed block by block; see [`crate::encryption`]. Whether a
    /// database is encrypted is fixed when it is created: opening an encrypted one
    /// without its key, or a plaintext one with a key, fails with
    /// [`crate::Error::WrongKey`].
    pub encryption: Option<crate::encryption::EncryptionConfig>,
    /// The row store's structure ([`StorageEngine::Lsm`] by default). Fixed when the
    /// database is created: opening it with a configuration that names the other
    /// engine fails with [`Error::InvalidConfig`].
    pub storage_engine: StorageEngine,
}

impl Default for LightningDbConfig {
    fn default() -> Self {
        LightningDbConfig {
            page_size: 4096,
            cache_size: 256 * 1024 * 1024,
            mmap_size: Some(1024 * 1024 * 1024),
            compression_enabled: true,
            compression_type: 2,
            max_active_transactions: 10_000,
            use_optimized_transactions: true,
            prefetch_enabled: true,
            prefetch_distance: 8,
            prefetch_workers: 2,
            use_lock_free_cache: true,
            wal_enabled: true,
            improved_wal: true,
            commit_yield: true,
            background_compaction: true,
            parallel_compaction_workers: 2,
            durability: Durability::Sync,
            write_buffer_size: 64 * 1024 * 1024,
            memtable_size: lightning_rowstore::DEFAULT_MEMTABLE_SIZE,
            level0_compaction_trigger: 4,
            level0_stop_writes_trigger: 20,
            level_base_size: 256 * 1024 * 1024,
            target_file_size: 64 * 1024 * 1024,
            bloom_bits_per_key: 10,
            consistency_level: ConsistencyLevel::Snapshot,
            transaction_timeout: Duration::from_secs(60),
            columnar_background: true,
            columnar_compaction_interval: Duration::from_secs(1),
            columnar_compaction_rows: 100_000,
            columnar_compaction_bytes: 64 * 1024 * 1024,
            columnar_compression: 1,
            columnar_segment_rows: 1 << 20,
            columnar_batch_rows: 1 << 16,
            columnar_cache_bytes: default_columnar_cache_bytes(),
            columnar_kv: false,
            health_min_free_disk_bytes: 256 * 1024 * 1024,
            sql_max_statement_bytes: 1 << 20,
            sql_max_expression_depth: 1000,
            sql_threads: 0,
            sql_insert_run_bytes: 64 << 20,
            analytics_nice: 10,
            sql_file_access: SqlFileAccess::Any,
            vfs: None,
            encryption: None,
            storage_engine: StorageEngine::Lsm,
        }
    }
}

/// The default decoded-column cache: a quarter of the memory available to this process
/// (physical memory, or the cgroup v2 `memory.max` when lower), at least 512 MiB.
/// Elsewhere than Linux, or when neither can be read, 512 MiB.
///
/// Why a share of memory rather than a fixed size: a query over more decoded data than
/// the cache holds decompresses and decodes the rest on every run. At TPC-H SF 10 the
/// columns the 22 queries read are several GiB; with a fixed 512 MiB most of them were
/// decoded again per query.
///
/// Computed once per process: `LightningDbConfig::default()` is called for every
/// `..Default::default()`, and memory does not change under a running process.
pub fn default_columnar_cache_bytes() -> u64 {
    const FLOOR: u64 = 512 << 20;
    static BYTES: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| available_memory().map_or(FLOOR, |m| (m / 4).max(FLOOR)))
}

/// Bytes of memory this process may use: `MemTotal`, capped by a cgroup v2 limit.
fn available_memory() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let total = std::fs::read_to_string("/proc/meminfo")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse::<u64>()
            .ok()?
            .checked_mul(1024)?;
        let limit = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
            .ok()
            .and_then(|l| l.trim().parse::<u64>().ok());
        Some(limit.map_or(total, |l| l.min(total)))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

impl LightningDbConfig {
    /// The SQL runtime's worker threads: `sql_threads`, or one per core less one.
    pub fn sql_worker_threads(&self) -> usize {
        match self.sql_threads {
            0 => {
                std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
            }
            n => n,
        }
    }

    /// Check every field; on success, the row store's options.
    pub fn validate(&self) -> Result<EngineOptions> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if !self.page_size.is_power_of_two() || !(512..=1 << 20).contains(&self.page_size) {
            return bad(format!(
                "page_size must be a power of two between 512 and 1048576, got {}",
                self.page_size
            ));
        }
        let compression = if self.compression_enabled {
            match self.compression_type {
                1 => Compression::Zstd,
                2 => Compression::Lz4,
                3 => Compression::Snappy,
                t => {
                    return bad(format!(
                        "compression_type must be 1 (Zstd), 2 (LZ4) or 3 (Snappy), got {t}"
                    ));
                }
            }
        } else {
            Compression::None
        };
        if !(1..=1_000_000).contains(&self.max_active_transactions) {
            return bad(format!(
                "max_active_transactions must be between 1 and 1000000, got {}",
                self.max_active_transactions
            ));
        }
        if self.transaction_timeout.is_zero() {
            return bad("transaction_timeout must be positive".into());
        }
        if self.columnar_compression > 2 {
            return bad(format!(
                "columnar_compression must be 0 (none), 1 (Zstd) or 2 (LZ4), got {}",
                self.columnar_compression
            ));
        }
        if !(1_000..=(1 << 24)).contains(&self.columnar_segment_rows) {
            return bad(format!(
                "columnar_segment_rows must be between 1000 and 16777216, got {}",
                self.columnar_segment_rows
            ));
        }
        if !(1_000..=(1 << 24)).contains(&self.columnar_batch_rows) {
            return bad(format!(
                "columnar_batch_rows must be between 1000 and 16777216, got {}",
                self.columnar_batch_rows
            ));
        }
        if self.columnar_compaction_interval.is_zero() || self.columnar_compaction_rows == 0 {
            return bad("columnar compaction thresholds must be positive".into());
        }
        if !(1024..=64 << 20).contains(&self.sql_max_statement_bytes) {
            return bad(format!(
                "sql_max_statement_bytes must be between 1024 and 67108864, got {}",
                self.sql_max_statement_bytes
            ));
        }
        if !(1024..=256 << 20).contains(&self.sql_insert_run_bytes) {
            return bad(format!(
                "sql_insert_run_bytes must be between 1024 and 268435456, got {}",
                self.sql_insert_run_bytes
            ));
        }
        if self.sql_threads > 1024 {
            return bad(format!(
                "sql_threads must be at most 1024 (0 = one per core), got {}",
                self.sql_threads
            ));
        }
        if !(0..=19).contains(&self.analytics_nice) {
            return bad(format!(
                "analytics_nice must be between 0 and 19, got {}",
                self.analytics_nice
            ));
        }
        if !(16..=10_000).contains(&self.sql_max_expression_depth) {
            return bad(format!(
                "sql_max_expression_depth must be between 16 and 10000, got {}",
                self.sql_max_expression_depth
            ));
        }
        let opts = EngineOptions {
            storage: self.storage_engine.kind(),
            block_size: self.page_size,
            cache_size: self.cache_size,
            sharded_cache: self.use_lock_free_cache,
            mmap_size: self.mmap_size,
            compression,
            bloom_bits_per_key: self.bloom_bits_per_key,
            write_buffer_size: self.write_buffer_size,
            memtable_size: self.memtable_size,
            max_immutable_memtables: 2,
            level0_compaction_trigger: self.level0_compaction_trigger,
            level0_stop_writes_trigger: self.level0_stop_writes_trigger,
            level_base_bytes: self.level_base_size,
            level_size_multiplier: 10,
            target_file_size: self.target_file_size,
            wal_enabled: self.wal_enabled,
            group_commit: self.improved_wal,
            commit_yield: self.commit_yield,
            durability: self.durability,
            background_compaction: self.background_compaction,
            compaction_workers: self.parallel_compaction_workers,
            prefetch: self
                .prefetch_enabled
                .then_some((self.prefetch_workers, self.prefetch_distance)),
            vfs: self
                .vfs
                .clone()
                .unwrap_or_else(lightning_rowstore::vfs::std_vfs),
        };
        opts.validate()?;
        Ok(opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_refused() {
        LightningDbConfig::default().validate().unwrap();
        let cases = [
            LightningDbConfig {
                page_size: 1000,
                ..Default::default()
            },
            LightningDbConfig {
                compression_type: 9,
                ..Default::default()
            },
            LightningDbConfig {
                max_active_transactions: 0,
                ..Default::default()
            },
            LightningDbConfig {
                prefetch_distance: 0,
                ..Default::default()
            },
            LightningDbConfig {
                parallel_compaction_workers: 0,
                ..Default::default()
            },
            LightningDbConfig {
                write_buffer_size: 10,
                ..Default::default()
            },
            LightningDbConfig {
                memtable_size: 10,
                ..Default::default()
            },
            LightningDbConfig {
                bloom_bits_per_key: 0,
                ..Default::default()
            },
        ];
        for c in cases {
            assert!(
                matches!(c.validate(), Err(Error::InvalidConfig(_))),
                "{c:?} should be refused"
            );
        }
        // Disabled features do not need valid companion values.
        LightningDbConfig {
            compression_enabled: false,
            compression_type: 0,
            prefetch_enabled: false,
            prefetch_workers: 0,
            background_compaction: false,
            parallel_compaction_workers: 0,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn the_decoded_column_cache_defaults_to_a_quarter_of_memory() {
        let floor = 512u64 << 20;
        let d = default_columnar_cache_bytes();
        assert_eq!(LightningDbConfig::default().columnar_cache_bytes, d);
        #[cfg(target_os = "linux")]
        assert!(available_memory().is_some(), "Linux has /proc/meminfo");
        match available_memory() {
            Some(m) => {
                assert!(m > 0);
                assert_eq!(d, (m / 4).max(floor), "memory {m}");
            }
            None => assert_eq!(d, floor),
        }
    }
}

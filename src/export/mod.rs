//! Export of a table to open formats other engines read: hive-style partitioned Parquet
//! and Delta Lake ([`Database::export_table`]).
//!
//! An export mirrors the table's column segments. Each segment at one delete-bitmap
//! generation (an *export unit*, named `s<segment>-g<generation>`) becomes one Parquet
//! file per partition, named after its unit. A later export to the same directory
//! compares the units the table has now with the units the directory holds: it writes
//! files only for new units and removes the files of units that are gone (a segment a
//! compaction merged away, or whose delete bitmap changed). Unchanged segments are never
//! rewritten. The granularity is the segment: one updated row rewrites the file(s) of
//! its segment's old generation (see ARCHITECTURE.md for the cost and what would lower
//! it).
//!
//! - **Parquet**: the current file list is `_lightning_export.json` (replaced
//!   atomically: written, fsynced, renamed). New files are written before it is
//!   replaced and old ones deleted after, so a crash leaves either export whole; a
//!   reader that lists the directory while an export runs can see both.
//! - **Delta Lake**: a commit in `_delta_log/` (version N+1, created only if absent, so
//!   two writers cannot both commit N+1) adds the new files and removes the old; each
//!   version is a consistent snapshot and readers never see a partial export. Removed
//!   files stay on disk for readers of older versions (time travel), as in Delta.
//!
//! We write the Delta log ourselves: the `deltalake` crate's releases that match Arrow
//! 59 (1.0, 1.1) require a TLS stack (rustls with aws-lc, reqwest, object_store) even for
//! a local table, several minutes of build for the few actions an export writes
//! (`protocol`, `metaData`, `add` with statistics, `remove`, `commitInfo`). The tests
//! read every export back with independent readers (delta-rs's Python `deltalake`,
//! pyarrow, DuckDB).

mod delta;
mod parts;

use crate::db::Database;
use crate::error::{Error, Result};
use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use lightning_rowstore::vfs;
use parts::{PartFile, PartValues, hive_dir, io};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The format of [`Database::export_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Parquet files (zstd, row-group and page statistics) in hive-style partition
    /// directories (`col=value/`), with the file list in `_lightning_export.json`.
    Parquet,
    /// A Delta Lake table (`_delta_log/` plus Parquet files in partition directories).
    Delta,
}

/// Options of [`Database::export_table_with`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOptions {
    /// Columns to partition by, outermost first (integer, string, boolean or date
    /// columns). The same columns must be given to every export into one directory.
    pub partition_by: Vec<String>,
}

impl ExportOptions {
    /// Partition by these columns.
    pub fn partition_by<S: AsRef<str>>(cols: &[S]) -> ExportOptions {
        ExportOptions {
            partition_by: cols.iter().map(|c| c.as_ref().to_string()).collect(),
        }
    }
}

/// What one export did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// The export's version: the Delta table version, or the manifest's version for
    /// Parquet (0 for the first export; unchanged when nothing changed).
    pub version: u64,
    /// Whether this export made a new version (false: the directory was current).
    pub new_version: bool,
    /// Every row committed at or before this commit timestamp is in the export.
    pub watermark: u64,
    /// Rows of the table in the export (all of them, not only the new files').
    pub rows: u64,
    /// Data files written by this export, and their rows and bytes.
    pub files_added: u64,
    pub rows_written: u64,
    pub bytes_written: u64,
    /// Data files of the previous version this export no longer lists.
    pub files_removed: u64,
    /// Every file was written again because the table's schema changed.
    pub full_rewrite: bool,
}

/// A data file of an export.
#[derive(Debug, Clone, PartialEq)]
struct ExportedFile {
    /// The export unit it holds rows of (`s<segment>-g<generation>`).
    unit: String,
    /// Path relative to the export directory, as on disk (`/`-separated).
    path: String,
    values: PartValues,
    size: u64,
    rows: u64,
}

/// A file written by this export, with the column statistics of its rows.
struct NewFile {
    file: ExportedFile,
    stats: Vec<parts::ColumnStats>,
}

/// The new version an export commits.
struct Change<'a> {
    version: u64,
    /// Every row committed at or before it is in the export.
    watermark: u64,
    /// Files the new version no longer lists.
    removed: &'a [ExportedFile],
    /// Files written for it.
    added: &'a [NewFile],
}

/// What an export directory holds before an export.
#[derive(Debug, Default)]
struct Existing {
    version: Option<u64>,
    table: Option<String>,
    partition_by: Vec<String>,
    schema: String,
    files: Vec<ExportedFile>,
    /// Delta only: the table id of its `metaData`.
    table_id: Option<String>,
}

/// Everything an export needs about the table and the target.
struct Plan<'a> {
    dir: &'a Path,
    format: ExportFormat,
    table: &'a str,
    partition_by: &'a [String],
    /// Table schema of the exported columns (Delta: converted to Delta's types).
    schema: SchemaRef,
    /// Indexes (in `schema`) of the partition columns and the data columns.
    part_cols: Vec<usize>,
    data_cols: Vec<usize>,
    data_schema: SchemaRef,
    /// Fingerprint of schema + partitioning: a change rewrites everything.
    schema_id: String,
}

const MANIFEST: &str = "_lightning_export.json";
/// Most partitions one segment's rows may fall into (one open Parquet writer each).
const MAX_OPEN_PARTITIONS: usize = 4096;
const LOCK: &str = "_lightning_export.lock";

impl Database {
    /// Export table `name` into directory `dir` as `format`, unpartitioned. See
    /// [`Database::export_table_with`].
    pub fn export_table(
        &self,
        name: &str,
        dir: impl AsRef<Path>,
        format: ExportFormat,
    ) -> Result<ExportReport> {
        self.export_table_with(name, dir, format, &ExportOptions::default())
    }

    /// Export table `name` into directory `dir` (created if missing) as `format`: every
    /// row committed before the call, read from the column store after a compaction
    /// round. Exporting again into the same directory is incremental: only the files
    /// of segments that changed since are written (a new version) and the files they
    /// replace are removed; nothing is rewritten when nothing changed. A directory that
    /// holds something else, another table's export, or this table with other
    /// partition columns is refused; a changed schema rewrites the export. Exported
    /// files are plaintext, also from an encrypted database.
    pub fn export_table_with(
        &self,
        name: &str,
        dir: impl AsRef<Path>,
        format: ExportFormat,
        opts: &ExportOptions,
    ) -> Result<ExportReport> {
        let t = self.tables.as_ref().ok_or(Error::Closed)?;
        let def = t.columnar_def(name)?;
        let dir = dir.as_ref();
        let dir: PathBuf = std::path::absolute(dir).unwrap_or(dir.into());
        let rule = crate::sql::guard::Rule::new(self.path(), &crate::SqlFileAccess::Any);
        if let Some(why) = rule.refusal(&dir) {
            return Err(Error::InvalidArgument(why));
        }
        let plan = plan(&dir, format, name, &def.user_schema(), &opts.partition_by)?;
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, "creating", e))?;
        let lock_path = dir.join(LOCK);
        let lock = std::fs::File::create(&lock_path).map_err(|e| io(&lock_path, "creating", e))?;
        if lock.try_lock().is_err() {
            return Err(Error::InvalidArgument(format!(
                "another export into {} is running",
                dir.display()
            )));
        }
        let existing = match format {
            ExportFormat::Parquet => load_manifest(&dir)?,
            ExportFormat::Delta => delta::load(&dir)?,
        };
        if existing.version.is_none() {
            refuse_foreign(&dir)?;
        }
        check_same_table(&plan, &existing, &dir)?;
        // Everything committed before the call reaches the segments.
        t.store.compact(&t.engine, &def).map_err(|e| match Error::from(e) {
            Error::ReadOnly => Error::InvalidArgument(
                "exporting needs a database opened for writing (a compaction round brings the column store up to date)".into(),
            ),
            e => e,
        })?;
        let view = t.store.view(def.id);
        if !view.segments.is_empty() && view.schema_version != def.layout.version {
            return Err(Error::InvalidArgument(format!(
                "table {name} was altered during the export; export again"
            )));
        }
        let full_rewrite = existing.version.is_some() && existing.schema != plan.schema_id;
        // Each segment's unit name.
        let units: Vec<(String, &lightning_columnar::store::LoadedSegment)> = view
            .segments
            .iter()
            .map(|s| {
                let g = s.state.deletes.as_ref().map_or(0, |d| d.generation);
                (format!("s{}-g{g}", s.state.info.id), s.as_ref())
            })
            .collect();
        let have: BTreeSet<&str> = match full_rewrite {
            true => BTreeSet::new(),
            false => existing.files.iter().map(|f| f.unit.as_str()).collect(),
        };
        let want: BTreeSet<&str> = units.iter().map(|(u, _)| u.as_str()).collect();
        let removed: Vec<ExportedFile> = existing
            .files
            .iter()
            .filter(|f| full_rewrite || !want.contains(f.unit.as_str()))
            .cloned()
            .collect();
        let to_write: Vec<_> = units
            .iter()
            .filter(|(u, _)| !have.contains(u.as_str()))
            .collect();
        let rows: u64 = view.segments.iter().map(|s| s.live_rows()).sum();
        let mut report = ExportReport {
            version: existing.version.unwrap_or(0),
            watermark: view.watermark,
            rows,
            full_rewrite,
            ..Default::default()
        };
        if existing.version.is_some() && removed.is_empty() && to_write.is_empty() {
            return Ok(report);
        }
        let version = existing.version.map_or(0, |v| v + 1);
        let mut written: Vec<NewFile> = Vec::new();
        let res = (|| {
            for (unit, s) in &to_write {
                written.extend(write_unit(&plan, s, unit, version)?);
            }
            let change = Change {
                version,
                watermark: view.watermark,
                removed: &removed,
                added: &written,
            };
            match format {
                ExportFormat::Parquet => commit_manifest(&plan, &existing, &change),
                ExportFormat::Delta => delta::commit(&plan, &existing, &change),
            }
        })();
        if let Err(e) = res {
            for f in &written {
                let _ = std::fs::remove_file(dir.join(&f.file.path));
            }
            return Err(e);
        }
        if format == ExportFormat::Parquet {
            // The manifest no longer lists them: readers that follow it are done with
            // them; readers that list the directory stop seeing duplicates.
            for f in &removed {
                let _ = std::fs::remove_file(dir.join(&f.path));
                remove_empty_dirs(&dir, &f.path);
            }
        }
        report.version = version;
        report.new_version = true;
        report.files_added = written.len() as u64;
        report.rows_written = written.iter().map(|f| f.file.rows).sum();
        report.bytes_written = written.iter().map(|f| f.file.size).sum();
        report.files_removed = removed.len() as u64;
        drop(lock);
        Ok(report)
    }
}

/// Validate the partition columns and build the exported schema.
fn plan<'a>(
    dir: &'a Path,
    format: ExportFormat,
    table: &'a str,
    user: &Schema,
    partition_by: &'a [String],
) -> Result<Plan<'a>> {
    let fields = user
        .fields()
        .iter()
        .map(|f| match format {
            ExportFormat::Parquet => Ok(f.as_ref().clone()),
            ExportFormat::Delta => delta::field(f),
        })
        .collect::<Result<Vec<Field>>>()?;
    let schema = Arc::new(Schema::new(fields));
    let mut part_cols = Vec::new();
    for p in partition_by {
        let Ok(i) = schema.index_of(p) else {
            return Err(Error::InvalidArgument(format!(
                "cannot partition by {p}: table {table} has no such column"
            )));
        };
        if part_cols.contains(&i) {
            return Err(Error::InvalidArgument(format!(
                "{p} is named twice in partition_by"
            )));
        }
        let t = user.field(i).data_type();
        if !parts::partitionable(t) {
            return Err(Error::InvalidArgument(format!(
                "cannot partition by {p} of type {t}: only integer, string, boolean and date columns name partitions"
            )));
        }
        part_cols.push(i);
    }
    let data_cols: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !part_cols.contains(i))
        .collect();
    if data_cols.is_empty() {
        return Err(Error::InvalidArgument(
            "at least one column must stay out of partition_by (the files hold the other columns)"
                .into(),
        ));
    }
    let data_schema = Arc::new(schema.project(&data_cols)?);
    let schema_id = match format {
        ExportFormat::Delta => delta::schema_string(&schema),
        ExportFormat::Parquet => schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}:{}", f.name(), f.data_type(), f.is_nullable()))
            .collect::<Vec<_>>()
            .join(","),
    };
    Ok(Plan {
        dir,
        format,
        table,
        partition_by,
        schema,
        part_cols,
        data_cols,
        data_schema,
        schema_id,
    })
}

/// A first export goes into an empty directory (or one that does not exist yet).
fn refuse_foreign(dir: &Path) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| io(dir, "listing", e))?;
    for e in rd {
        let e = e.map_err(|e| io(dir, "listing", e))?;
        let n = e.file_name().to_string_lossy().to_string();
        if n != LOCK {
            return Err(Error::DirectoryNotEmpty {
                dir: dir.to_path_buf(),
                found: n,
            });
        }
    }
    Ok(())
}

fn check_same_table(plan: &Plan, existing: &Existing, dir: &Path) -> Result<()> {
    if existing.version.is_none() {
        return Ok(());
    }
    if let Some(t) = &existing.table
        && t != plan.table
    {
        return Err(Error::InvalidArgument(format!(
            "{} holds an export of table {t}, not {}; export into another directory",
            dir.display(),
            plan.table
        )));
    }
    if existing.partition_by != plan.partition_by {
        return Err(Error::InvalidArgument(format!(
            "{} is partitioned by [{}], not [{}]; export with the same partition columns or into another directory",
            dir.display(),
            existing.partition_by.join(", "),
            plan.partition_by.join(", ")
        )));
    }
    Ok(())
}

/// Write the files of one export unit (a segment at one delete generation): its live
/// rows, batch by batch, split by partition. No file is listed anywhere before the
/// version is committed, so on failure the ones begun here are removed.
fn write_unit(
    plan: &Plan,
    s: &lightning_columnar::store::LoadedSegment,
    unit: &str,
    version: u64,
) -> Result<Vec<NewFile>> {
    let mut begun = Vec::new();
    let res = fill_unit(plan, s, unit, version, &mut begun);
    if res.is_err() {
        for p in &begun {
            let _ = std::fs::remove_file(p);
        }
    }
    res
}

/// [`write_unit`], noting in `begun` every file it creates.
fn fill_unit(
    plan: &Plan,
    s: &lightning_columnar::store::LoadedSegment,
    unit: &str,
    version: u64,
    begun: &mut Vec<PathBuf>,
) -> Result<Vec<NewFile>> {
    let user: Vec<usize> = (0..plan.schema.fields().len()).collect();
    let mut files: Vec<PartFile> = Vec::new();
    let mut index: HashMap<PartValues, usize> = HashMap::new();
    let seg = &s.segment;
    for i in 0..seg.num_batches() {
        let b = seg.read_one(Some(&user), i)?;
        let b = match s.deletes.is_empty() {
            true => b,
            false => {
                let r = seg.batch_range(i);
                let mask =
                    BooleanArray::from_iter(r.map(|row| Some(!s.deletes.contains(row as u32))));
                arrow::compute::filter_record_batch(&b, &mask)?
            }
        };
        if b.num_rows() == 0 {
            continue;
        }
        let b = conform(&b, &plan.schema)?;
        for (values, rows) in parts::split(&b, &plan.part_cols)? {
            let part = parts::take(&b, &rows, &plan.data_cols, &plan.data_schema)?;
            let at = match index.get(&values) {
                Some(&at) => at,
                None => {
                    if files.len() >= MAX_OPEN_PARTITIONS {
                        return Err(Error::InvalidArgument(format!(
                            "one segment of {} holds more than {MAX_OPEN_PARTITIONS} partitions of [{}]; partition by columns with fewer values",
                            plan.table,
                            plan.partition_by.join(", ")
                        )));
                    }
                    let rel = hive_dir(plan.partition_by, &values);
                    let name = format!("part-{version:05}-{unit}-{:04}.parquet", files.len());
                    let f = PartFile::create(
                        plan.dir,
                        &rel,
                        name,
                        values.clone(),
                        &plan.data_schema,
                        plan.format == ExportFormat::Parquet,
                    )?;
                    begun.push(f.path.clone());
                    files.push(f);
                    index.insert(values, files.len() - 1);
                    files.len() - 1
                }
            };
            files[at].write(&part)?;
        }
    }
    let out = files
        .into_iter()
        .map(|f| f.finish(unit))
        .collect::<Result<Vec<_>>>()?;
    // The new files' directory entries, and those of the partition directories.
    let mut dirs = BTreeSet::new();
    for f in &out {
        let mut d = plan.dir.join(&f.file.path);
        while d.pop() && d.starts_with(plan.dir) {
            dirs.insert(d.clone());
        }
    }
    let vfs = vfs::std_vfs();
    for d in dirs.iter().rev() {
        vfs::sync_dir(&*vfs, d)?;
    }
    Ok(out)
}

/// Cast a batch read from the store to the exported types (Delta's, for Delta).
fn conform(b: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let cols = b
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => Ok(c.clone()),
            false => arrow::compute::cast(c, f.data_type()),
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(RecordBatch::try_new(schema.clone(), cols)?)
}

fn remove_empty_dirs(root: &Path, rel: &str) {
    let mut p = root.join(rel);
    while p.pop() && p.starts_with(root) && p != root {
        if std::fs::remove_dir(&p).is_err() {
            break;
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Manifest {
    format: String,
    format_version: u32,
    table: String,
    version: u64,
    watermark: u64,
    partition_by: Vec<String>,
    schema: String,
    files: Vec<ManifestFile>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ManifestFile {
    unit: String,
    path: String,
    partition_values: Vec<Option<String>>,
    size: u64,
    rows: u64,
}

const MANIFEST_FORMAT: &str = "lightning-db-parquet-export";
const MANIFEST_VERSION: u32 = 1;

fn load_manifest(dir: &Path) -> Result<Existing> {
    let p = dir.join(MANIFEST);
    let bytes = match std::fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::default()),
        Err(e) => return Err(io(&p, "reading", e)),
    };
    let bad = |why: String| Error::Corruption {
        file: p.clone(),
        offset: 0,
        reason: why,
    };
    let m: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    if m.format != MANIFEST_FORMAT || m.format_version != MANIFEST_VERSION {
        return Err(bad(format!(
            "not a Lightning DB export manifest of version {MANIFEST_VERSION} ({} {})",
            m.format, m.format_version
        )));
    }
    Ok(Existing {
        version: Some(m.version),
        table: Some(m.table),
        partition_by: m.partition_by,
        schema: m.schema,
        files: m
            .files
            .into_iter()
            .map(|f| ExportedFile {
                unit: f.unit,
                path: f.path,
                values: f.partition_values,
                size: f.size,
                rows: f.rows,
            })
            .collect(),
        table_id: None,
    })
}

fn commit_manifest(plan: &Plan, existing: &Existing, change: &Change) -> Result<()> {
    let gone: BTreeSet<&str> = change.removed.iter().map(|f| f.path.as_str()).collect();
    let files: Vec<ManifestFile> = existing
        .files
        .iter()
        .filter(|f| !gone.contains(f.path.as_str()))
        .chain(change.added.iter().map(|f| &f.file))
        .map(|f| ManifestFile {
            unit: f.unit.clone(),
            path: f.path.clone(),
            partition_values: f.values.clone(),
            size: f.size,
            rows: f.rows,
        })
        .collect();
    let m = Manifest {
        format: MANIFEST_FORMAT.into(),
        format_version: MANIFEST_VERSION,
        table: plan.table.to_string(),
        version: change.version,
        watermark: change.watermark,
        partition_by: plan.partition_by.to_vec(),
        schema: plan.schema_id.clone(),
        files,
    };
    let bytes = serde_json::to_vec_pretty(&m).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(vfs::write_file_atomic(
        &*vfs::std_vfs(),
        &plan.dir.join(MANIFEST),
        &bytes,
    )?)
}

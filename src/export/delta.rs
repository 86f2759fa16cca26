//! The Delta Lake transaction log of an export: reading the current file list back and
//! committing a new version (Delta protocol, reader version 1, or 3 with `timestampNtz`
//! when a column is a timestamp without time zone).

use super::{Change, Existing, ExportedFile, NewFile, Plan, io};
use crate::error::{Error, Result};
use arrow::datatypes::TimeUnit;
use arrow::datatypes::{DataType, Field, Schema};
use lightning_rowstore::vfs;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;

const LOG: &str = "_delta_log";
/// Where an add action names the export unit its file holds rows of.
const UNIT_TAG: &str = "lightning.unit";
/// Characters Delta does not allow in column names without column mapping.
const BAD_NAME_CHARS: &[char] = &[' ', ',', ';', '{', '}', '(', ')', '\n', '\t', '='];

/// The Arrow field a column is written as, with a Delta type: unsigned integers widen
/// to the next signed type (`UInt64` to `decimal(20,0)`), large strings become strings,
/// timestamps become microseconds.
pub(super) fn field(f: &Field) -> Result<Field> {
    if let Some(c) = f.name().chars().find(|c| BAD_NAME_CHARS.contains(c)) {
        return Err(Error::InvalidArgument(format!(
            "column {:?} cannot be exported to Delta Lake: {c:?} is not allowed in Delta column names",
            f.name()
        )));
    }
    let t = match f.data_type() {
        DataType::UInt8 => DataType::Int16,
        DataType::UInt16 => DataType::Int32,
        DataType::UInt32 => DataType::Int64,
        DataType::UInt64 => DataType::Decimal128(20, 0),
        DataType::LargeUtf8 | DataType::Utf8View => DataType::Utf8,
        DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        DataType::Timestamp(_, tz) => {
            DataType::Timestamp(TimeUnit::Microsecond, tz.as_ref().map(|_| "UTC".into()))
        }
        t => t.clone(),
    };
    delta_type(&t).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "column {} of type {} has no Delta Lake type",
            f.name(),
            f.data_type()
        ))
    })?;
    Ok(Field::new(f.name(), t, f.is_nullable()))
}

fn delta_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Int8 => "byte".into(),
        DataType::Int16 => "short".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "long".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 => "string".into(),
        DataType::Binary => "binary".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp".into(),
        DataType::Timestamp(_, None) => "timestamp_ntz".into(),
        DataType::Decimal128(p, s) if *p <= 38 && *s >= 0 => format!("decimal({p},{s})"),
        _ => return None,
    })
}

/// Delta's `schemaString` of the exported schema.
pub(super) fn schema_string(schema: &Schema) -> String {
    let fields: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| {
            json!({
                "name": f.name(),
                "type": delta_type(f.data_type()).unwrap_or_default(),
                "nullable": f.is_nullable(),
                "metadata": {},
            })
        })
        .collect();
    json!({"type": "struct", "fields": fields}).to_string()
}

fn needs_ntz(schema: &Schema) -> bool {
    schema
        .fields()
        .iter()
        .any(|f| matches!(f.data_type(), DataType::Timestamp(_, None)))
}

fn protocol(schema: &Schema) -> Value {
    match needs_ntz(schema) {
        false => json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
        true => json!({"protocol": {
            "minReaderVersion": 3,
            "minWriterVersion": 7,
            "readerFeatures": ["timestampNtz"],
            "writerFeatures": ["timestampNtz"],
        }}),
    }
}

fn commit_name(v: u64) -> String {
    format!("{v:020}.json")
}

/// Delta paths are URIs relative to the table root; ours hold only `[A-Za-z0-9._=/-]`
/// and the `%` of escaped partition values.
fn to_uri(p: &str) -> String {
    p.replace('%', "%25")
}

fn from_uri(p: &str) -> String {
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replay the log: the latest version, its metadata and its live files.
pub(super) fn load(dir: &Path) -> Result<Existing> {
    let log = dir.join(LOG);
    let rd = match std::fs::read_dir(&log) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Existing::default()),
        Err(e) => return Err(io(&log, "listing", e)),
    };
    let mut versions = Vec::new();
    for e in rd {
        let n = e.map_err(|e| io(&log, "listing", e))?.file_name();
        let n = n.to_string_lossy();
        if n == "_last_checkpoint" || n.contains(".checkpoint.") {
            return Err(Error::InvalidArgument(format!(
                "the Delta table in {} was checkpointed by another writer; export into a new directory",
                dir.display()
            )));
        }
        if let Some(v) = n.strip_suffix(".json")
            && v.len() == 20
            && let Ok(v) = v.parse::<u64>()
        {
            versions.push(v);
        }
    }
    versions.sort_unstable();
    if versions.is_empty() {
        return Ok(Existing::default());
    }
    if versions.iter().enumerate().any(|(i, v)| *v != i as u64) {
        return Err(Error::InvalidArgument(format!(
            "the Delta log in {} does not start at version 0 or has a gap",
            log.display()
        )));
    }
    let mut ex = Existing::default();
    // Live files by path (a later action on a path replaces an earlier one).
    let mut files: BTreeMap<String, ExportedFile> = BTreeMap::new();
    for v in &versions {
        let p = log.join(commit_name(*v));
        let text = std::fs::read_to_string(&p).map_err(|e| io(&p, "reading", e))?;
        let bad = |why: String| Error::Corruption {
            file: p.clone(),
            offset: 0,
            reason: why,
        };
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let a: Value = serde_json::from_str(line).map_err(|e| bad(e.to_string()))?;
            if let Some(m) = a.get("metaData") {
                ex.schema = m["schemaString"].as_str().unwrap_or_default().to_string();
                ex.partition_by = m["partitionColumns"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|c| c.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default();
                ex.table = m["name"].as_str().map(String::from);
                ex.table_id = m["id"].as_str().map(String::from);
            } else if let Some(pr) = a.get("protocol") {
                let reader = pr["minReaderVersion"].as_u64().unwrap_or(u64::MAX);
                let features_ok = pr["readerFeatures"]
                    .as_array()
                    .is_none_or(|f| f.iter().all(|x| x.as_str() == Some("timestampNtz")));
                if reader > 3 || !features_ok {
                    return Err(Error::InvalidArgument(format!(
                        "the Delta table in {} uses protocol features this export does not write; export into a new directory",
                        dir.display()
                    )));
                }
            } else if let Some(add) = a.get("add") {
                let path = from_uri(
                    add["path"]
                        .as_str()
                        .ok_or_else(|| bad("add without path".into()))?,
                );
                let Some(unit) = add["tags"][UNIT_TAG].as_str() else {
                    return Err(Error::InvalidArgument(format!(
                        "the Delta table in {} holds {path}, a file Lightning DB did not write; export into a new directory",
                        dir.display()
                    )));
                };
                let values = ex
                    .partition_by
                    .iter()
                    .map(|c| add["partitionValues"][c].as_str().map(String::from))
                    .collect();
                let rows = add["stats"]
                    .as_str()
                    .and_then(|s| serde_json::from_str::<Value>(s).ok())
                    .and_then(|s| s["numRecords"].as_u64())
                    .unwrap_or(0);
                files.insert(
                    path.clone(),
                    ExportedFile {
                        unit: unit.to_string(),
                        path,
                        values,
                        size: add["size"].as_u64().unwrap_or(0),
                        rows,
                    },
                );
            } else if let Some(rm) = a.get("remove") {
                let path = from_uri(rm["path"].as_str().unwrap_or_default());
                files.remove(&path);
            }
        }
    }
    ex.version = versions.last().copied();
    ex.files = files.into_values().collect();
    Ok(ex)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn new_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    getrandom::getrandom(&mut b)
        .map_err(|e| Error::InvalidArgument(format!("no randomness for a table id: {e}")))?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

fn partition_values(plan: &Plan, values: &[Option<String>]) -> Value {
    let m: serde_json::Map<String, Value> = plan
        .partition_by
        .iter()
        .zip(values)
        .map(|(c, v)| (c.clone(), v.as_ref().map_or(Value::Null, |v| json!(v))))
        .collect();
    Value::Object(m)
}

fn stats(plan: &Plan, f: &NewFile) -> String {
    let (mut lo, mut hi, mut nulls) = (
        serde_json::Map::new(),
        serde_json::Map::new(),
        serde_json::Map::new(),
    );
    for (field, s) in plan.data_schema.fields().iter().zip(&f.stats) {
        nulls.insert(field.name().clone(), json!(s.nulls));
        if let Some((min, max)) = s.json_bounds() {
            lo.insert(field.name().clone(), min);
            if let Some(max) = max {
                hi.insert(field.name().clone(), max);
            }
        }
    }
    json!({"numRecords": f.file.rows, "minValues": lo, "maxValues": hi, "nullCount": nulls})
        .to_string()
}

/// Commit version `version`: remove `removed`, add `added`; version 0 and a schema
/// change also carry the protocol and the table metadata. The commit file is created
/// only if absent (a hard link of a complete, fsynced temporary file), so of two
/// writers racing for one version exactly one wins and the other fails cleanly.
pub(super) fn commit(plan: &Plan, existing: &Existing, change: &Change) -> Result<()> {
    let (version, watermark, removed, added) = (
        change.version,
        change.watermark,
        change.removed,
        change.added,
    );
    let now = now_ms();
    let mut actions = vec![json!({"commitInfo": {
        "timestamp": now,
        "operation": "WRITE",
        "operationParameters": {"mode": "Append"},
        "engineInfo": concat!("lightning_db/", env!("CARGO_PKG_VERSION")),
        "isBlindAppend": removed.is_empty(),
        "lightning": {"table": plan.table, "watermark": watermark},
    }})];
    if existing.version.is_none() || existing.schema != plan.schema_id {
        actions.push(protocol(&plan.schema));
        let id = match &existing.table_id {
            Some(id) => id.clone(),
            None => new_uuid()?,
        };
        actions.push(json!({"metaData": {
            "id": id,
            "name": plan.table,
            "format": {"provider": "parquet", "options": {}},
            "schemaString": plan.schema_id,
            "partitionColumns": plan.partition_by,
            "configuration": {},
            "createdTime": now,
        }}));
    }
    for f in removed {
        actions.push(json!({"remove": {
            "path": to_uri(&f.path),
            "deletionTimestamp": now,
            "dataChange": true,
            "extendedFileMetadata": true,
            "partitionValues": partition_values(plan, &f.values),
            "size": f.size,
        }}));
    }
    for f in added {
        actions.push(json!({"add": {
            "path": to_uri(&f.file.path),
            "partitionValues": partition_values(plan, &f.file.values),
            "size": f.file.size,
            "modificationTime": now,
            "dataChange": true,
            "stats": stats(plan, f),
            "tags": {UNIT_TAG: f.file.unit},
        }}));
    }
    let mut text = String::new();
    for a in &actions {
        text.push_str(&a.to_string());
        text.push('\n');
    }
    let log = plan.dir.join(LOG);
    std::fs::create_dir_all(&log).map_err(|e| io(&log, "creating", e))?;
    let name = commit_name(version);
    let tmp = log.join(format!(".{name}.{}.tmp", std::process::id()));
    let fs = vfs::std_vfs();
    let _ = std::fs::remove_file(&tmp);
    let written = vfs::create_new_synced(&*fs, &tmp, text.as_bytes());
    let target = log.join(&name);
    let linked = written.map(|_| std::fs::hard_link(&tmp, &target));
    let _ = std::fs::remove_file(&tmp);
    match linked? {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(Error::InvalidArgument(format!(
                "another writer committed version {version} of the Delta table in {} first; export again",
                plan.dir.display()
            )));
        }
        Err(e) => return Err(io(&target, "committing", e)),
    }
    Ok(vfs::sync_dir(&*fs, &log)?)
}

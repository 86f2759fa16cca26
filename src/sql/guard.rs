//! The file guard: the object store behind every `file://` access SQL makes
//! (`CREATE EXTERNAL TABLE … LOCATION`, `COPY … TO`, `INSERT INTO` an external table),
//! through `db.sql` or the DataFusion session alike. It refuses any path inside a
//! database directory (this database's, or another Lightning DB's, recognized by its
//! `CURRENT` file) whatever the configuration says, and applies
//! [`SqlFileAccess`](crate::SqlFileAccess) to the rest. Paths are resolved through
//! symbolic links before they are judged.

use crate::config::SqlFileAccess;
use async_trait::async_trait;
use datafusion::object_store::path::Path as ObjPath;
use datafusion::object_store::{
    self, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a path may be used for.
#[derive(Debug)]
pub(crate) struct Rule {
    /// Canonical directories of databases that SQL must never touch.
    db_dirs: Vec<PathBuf>,
    access: Access,
    /// Directory -> (is a Lightning DB directory, when checked).
    seen: Mutex<HashMap<PathBuf, (bool, Instant)>>,
}

#[derive(Debug)]
enum Access {
    None,
    Directories(Vec<PathBuf>),
    Any,
}

/// `p` with symbolic links and `..` resolved, also where the file does not exist yet:
/// the longest existing ancestor is canonicalized and the rest appended.
fn resolve(p: &Path) -> PathBuf {
    let mut existing = p.to_path_buf();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for part in rest.iter().rev() {
                out.push(part);
            }
            return normalize(&out);
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => return normalize(p),
        }
    }
}

/// Remove `.` and `..` lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c.as_os_str()),
        }
    }
    out
}

impl Rule {
    pub(crate) fn new(db_dir: &Path, access: &SqlFileAccess) -> Rule {
        let canon = |p: &Path| resolve(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
        Rule {
            db_dirs: vec![canon(db_dir)],
            access: match access {
                SqlFileAccess::None => Access::None,
                SqlFileAccess::Directories(ds) => {
                    Access::Directories(ds.iter().map(|d| canon(d)).collect())
                }
                SqlFileAccess::Any => Access::Any,
            },
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `dir` holds a Lightning DB (its `CURRENT` starts with our tag).
    fn is_database_dir(&self, dir: &Path) -> bool {
        if let Some((yes, at)) = self.seen.lock().get(dir)
            && at.elapsed() < Duration::from_secs(1)
        {
            return *yes;
        }
        let yes = std::fs::File::open(dir.join(lightning_rowstore::files::CURRENT))
            .and_then(|mut f| {
                let mut b = [0u8; 8];
                std::io::Read::read_exact(&mut f, &mut b).map(|_| b)
            })
            .is_ok_and(|b| b == *lightning_rowstore::format::CURRENT_TAG.as_bytes());
        let mut seen = self.seen.lock();
        if seen.len() > 4096 {
            seen.clear();
        }
        seen.insert(dir.to_path_buf(), (yes, Instant::now()));
        yes
    }

    /// Why `path` (absolute) may not be used, if it may not.
    pub(crate) fn refusal(&self, path: &Path) -> Option<String> {
        let real = resolve(path);
        if let Some(d) = self.db_dirs.iter().find(|d| real.starts_with(d)) {
            return Some(format!(
                "{} is inside the database directory {}; SQL never reads or writes database files",
                path.display(),
                d.display()
            ));
        }
        if let Some(d) = real.ancestors().find(|a| self.is_database_dir(a)) {
            return Some(format!(
                "{} is inside the Lightning DB database directory {}; SQL never reads or writes database files",
                path.display(),
                d.display()
            ));
        }
        match &self.access {
            Access::Any => None,
            Access::None => Some(format!(
                "SQL file access is disabled (sql_file_access = None); {} was refused",
                path.display()
            )),
            Access::Directories(ds) => (!ds.iter().any(|d| real.starts_with(d))).then(|| {
                format!(
                    "{} is outside the directories SQL may use (sql_file_access: {})",
                    path.display(),
                    ds.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }),
        }
    }
}

/// A local file system object store that asks a [`Rule`] before every access.
#[derive(Debug)]
pub(crate) struct GuardedFiles {
    inner: Arc<dyn ObjectStore>,
    rule: Arc<Rule>,
}

impl std::fmt::Display for GuardedFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GuardedFiles({})", self.inner)
    }
}

impl GuardedFiles {
    pub(crate) fn new(rule: Arc<Rule>) -> Self {
        GuardedFiles {
            inner: Arc::new(object_store::local::LocalFileSystem::new()),
            rule,
        }
    }

    fn abs(p: &ObjPath) -> PathBuf {
        Path::new("/").join(p.as_ref())
    }

    fn check(&self, p: &ObjPath) -> object_store::Result<()> {
        match self.rule.refusal(&Self::abs(p)) {
            None => Ok(()),
            Some(why) => Err(object_store::Error::PermissionDenied {
                path: Self::abs(p).display().to_string(),
                source: why.into(),
            }),
        }
    }

    fn allowed(&self, p: &ObjPath) -> bool {
        self.rule.refusal(&Self::abs(p)).is_none()
    }
}

#[async_trait]
impl ObjectStore for GuardedFiles {
    async fn put_opts(
        &self,
        location: &ObjPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &ObjPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &ObjPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<ObjPath>>,
    ) -> BoxStream<'static, object_store::Result<ObjPath>> {
        let rule = self.rule.clone();
        let checked = locations
            .map(move |r| {
                let p = r?;
                match rule.refusal(&Self::abs(&p)) {
                    None => Ok(p),
                    Some(why) => Err(object_store::Error::PermissionDenied {
                        path: p.to_string(),
                        source: why.into(),
                    }),
                }
            })
            .boxed();
        self.inner.delete_stream(checked)
    }

    fn list(
        &self,
        prefix: Option<&ObjPath>,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let rule = self.rule.clone();
        if let Some(p) = prefix
            && let Some(why) = rule.refusal(&Self::abs(p))
        {
            let e = object_store::Error::PermissionDenied {
                path: p.to_string(),
                source: why.into(),
            };
            return futures::stream::once(async move { Err(e) }).boxed();
        }
        self.inner
            .list(prefix)
            .filter(move |r| {
                let keep = match r {
                    Ok(m) => rule.refusal(&Self::abs(&m.location)).is_none(),
                    Err(_) => true,
                };
                futures::future::ready(keep)
            })
            .boxed()
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&ObjPath>,
    ) -> object_store::Result<ListResult> {
        if let Some(p) = prefix {
            self.check(p)?;
        }
        let mut r = self.inner.list_with_delimiter(prefix).await?;
        r.objects.retain(|m| self.allowed(&m.location));
        r.common_prefixes.retain(|p| self.allowed(p));
        Ok(r)
    }

    async fn copy_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &ObjPath,
        to: &ObjPath,
        options: object_store::RenameOptions,
    ) -> object_store::Result<()> {
        self.check(from)?;
        self.check(to)?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_database_directories_are_refused_through_links() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("db");
        std::fs::create_dir_all(&db).unwrap();
        let rule = Rule::new(&db, &SqlFileAccess::Any);
        assert!(rule.refusal(&db.join("000004.sst")).is_some());
        assert!(rule.refusal(&db.join("x/../000004.sst")).is_some());
        assert!(rule.refusal(&d.path().join("out.parquet")).is_none());
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&db, &link).unwrap();
        assert!(rule.refusal(&link.join("new.parquet")).is_some());
        // Another Lightning DB directory, recognized by its CURRENT.
        let other = d.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("CURRENT"), "LTNGCUR1 MANIFEST-000001 0\n").unwrap();
        assert!(rule.refusal(&other.join("a.parquet")).is_some());
    }

    #[test]
    fn access_none_and_directories() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("db");
        let none = Rule::new(&db, &SqlFileAccess::None);
        assert!(none.refusal(&d.path().join("a.parquet")).is_some());
        let ok = d.path().join("ok");
        std::fs::create_dir_all(&ok).unwrap();
        let dirs = Rule::new(&db, &SqlFileAccess::Directories(vec![ok.clone()]));
        assert!(dirs.refusal(&ok.join("a.parquet")).is_none());
        assert!(dirs.refusal(&d.path().join("a.parquet")).is_some());
    }
}

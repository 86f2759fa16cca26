//! A scan described for another process: which segment batches each output partition
//! reads, and how the planner shaped the scan (fetch limit, pushed filters, order). A
//! distributed executor that opens the same published database (a checkpoint: the same
//! segments, the same fresh rows at the same snapshot) rebuilds the scan from its own
//! copy of the table ([`LightningScan::from_task`]) and reads only its partitions'
//! batches. The pushed filters travel beside the task (as DataFusion physical
//! expressions, serialized by the caller's codec).

use crate::scan::{LightningScan, Unit};
use crate::select::Selection;
use datafusion::common::Result;
use datafusion::error::DataFusionError;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;

/// One segment batch of a task's partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskUnit {
    /// The segment's id (its file), stable for one published table view.
    pub segment: u64,
    pub batch: usize,
    /// Its zone maps prove the scan's own filters true for every row.
    pub passes: bool,
}

/// A [`LightningScan`] as data (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanTask {
    pub table: String,
    /// Columns of the table's SQL schema the scan outputs (`None`: all).
    pub projection: Option<Vec<usize>>,
    /// The column-store watermark and the row-store snapshot the scan read at: the
    /// rebuilding process must see the same ones.
    pub watermark: u64,
    pub snapshot: u64,
    pub partitions: Vec<Vec<TaskUnit>>,
    /// The partition that emits the fresh rows (`partitions.len()`: one of their own).
    pub delta_part: usize,
    pub fetch: Option<usize>,
    pub count_only: bool,
    pub reversed: bool,
    /// Output declared in primary-key order.
    pub ordered: bool,
    /// Per pushed filter: the scan applies it itself (else it only prunes).
    pub applied: Vec<bool>,
}

const FORMAT: &str = "lightning-scan-task/1";

impl ScanTask {
    pub fn to_json(&self) -> String {
        let parts: Vec<Value> = self
            .partitions
            .iter()
            .map(|p| {
                Value::Array(
                    p.iter()
                        .map(|u| json!([u.segment, u.batch, u.passes]))
                        .collect(),
                )
            })
            .collect();
        json!({
            "format": FORMAT,
            "table": self.table,
            "projection": self.projection,
            "watermark": self.watermark,
            "snapshot": self.snapshot,
            "partitions": parts,
            "delta_part": self.delta_part,
            "fetch": self.fetch,
            "count_only": self.count_only,
            "reversed": self.reversed,
            "ordered": self.ordered,
            "applied": self.applied,
        })
        .to_string()
    }

    pub fn from_json(s: &str) -> Result<ScanTask> {
        let bad = |why: &str| DataFusionError::Internal(format!("bad scan task: {why}"));
        let v: Value = serde_json::from_str(s).map_err(|e| bad(&e.to_string()))?;
        if v["format"] != FORMAT {
            return Err(bad("unknown format"));
        }
        let u = |k: &str| v[k].as_u64().ok_or_else(|| bad(k));
        let b = |k: &str| v[k].as_bool().ok_or_else(|| bad(k));
        let projection = match &v["projection"] {
            Value::Null => None,
            Value::Array(a) => Some(
                a.iter()
                    .map(|x| {
                        x.as_u64()
                            .map(|x| x as usize)
                            .ok_or_else(|| bad("projection"))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            _ => return Err(bad("projection")),
        };
        let mut partitions = Vec::new();
        for p in v["partitions"]
            .as_array()
            .ok_or_else(|| bad("partitions"))?
        {
            let mut units = Vec::new();
            for x in p.as_array().ok_or_else(|| bad("partition"))? {
                let (Some(s), Some(bt), Some(ps)) = (x[0].as_u64(), x[1].as_u64(), x[2].as_bool())
                else {
                    return Err(bad("unit"));
                };
                units.push(TaskUnit {
                    segment: s,
                    batch: bt as usize,
                    passes: ps,
                });
            }
            partitions.push(units);
        }
        Ok(ScanTask {
            table: v["table"].as_str().ok_or_else(|| bad("table"))?.to_string(),
            projection,
            watermark: u("watermark")?,
            snapshot: u("snapshot")?,
            partitions,
            delta_part: u("delta_part")? as usize,
            fetch: v["fetch"].as_u64().map(|f| f as usize),
            count_only: b("count_only")?,
            reversed: b("reversed")?,
            ordered: b("ordered")?,
            applied: v["applied"]
                .as_array()
                .ok_or_else(|| bad("applied"))?
                .iter()
                .map(|x| x.as_bool().ok_or_else(|| bad("applied")))
                .collect::<Result<_>>()?,
        })
    }
}

impl LightningScan {
    /// This scan as a task, with its pushed filters (in the order of `applied`).
    pub fn task(&self) -> (ScanTask, Vec<Arc<dyn PhysicalExpr>>) {
        let partitions = self
            .partitions
            .iter()
            .map(|p| {
                p.iter()
                    .map(|u| TaskUnit {
                        segment: self.parts[u.part].segment.state.info.id,
                        batch: u.batch,
                        passes: u.passes,
                    })
                    .collect()
            })
            .collect();
        let task = ScanTask {
            table: self.table.clone(),
            projection: self.projection.clone(),
            watermark: self.watermark,
            snapshot: self.snapshot.ts(),
            partitions,
            delta_part: self.delta_part,
            fetch: self.fetch,
            count_only: self.count_only,
            reversed: self.reversed,
            ordered: self.eq.output_ordering().is_some(),
            applied: self.applied.clone(),
        };
        (task, self.filters.clone())
    }

    /// The scan `task` describes, rebuilt from `base`: a scan of the same table with the
    /// same projection, no filters and no limit, planned on the same published
    /// database (so it holds every segment and the same fresh rows). Its partitions
    /// never share batches with each other: each may run in another process.
    pub fn from_task(
        base: &LightningScan,
        task: &ScanTask,
        filters: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<LightningScan> {
        let mismatch = |what: String| {
            DataFusionError::Execution(format!(
                "scan task for {} does not match this process's copy of the database: {what}",
                task.table
            ))
        };
        if base.table != task.table || base.projection != task.projection {
            return Err(mismatch("another table or projection".into()));
        }
        if (base.watermark, base.snapshot.ts()) != (task.watermark, task.snapshot) {
            return Err(mismatch(format!(
                "watermark {} / snapshot {} here, {} / {} in the task (open the same checkpoint)",
                base.watermark,
                base.snapshot.ts(),
                task.watermark,
                task.snapshot
            )));
        }
        if filters.len() != task.applied.len() {
            return Err(mismatch("filter count".into()));
        }
        let by_id: HashMap<u64, usize> = base
            .parts
            .iter()
            .enumerate()
            .map(|(i, p)| (p.segment.state.info.id, i))
            .collect();
        let mut s = base.clone();
        s.parts = Vec::new();
        let mut new_index: HashMap<usize, usize> = HashMap::new();
        let mut partitions = Vec::with_capacity(task.partitions.len());
        for p in &task.partitions {
            let mut units = Vec::with_capacity(p.len());
            for u in p {
                let Some(&bi) = by_id.get(&u.segment) else {
                    return Err(mismatch(format!("no segment {}", u.segment)));
                };
                let bp = &base.parts[bi];
                let live = *bp.mask.live.get(u.batch).ok_or_else(|| {
                    mismatch(format!("segment {} has no batch {}", u.segment, u.batch))
                })?;
                let part = *new_index.entry(bi).or_insert_with(|| {
                    s.parts.push(bp.clone());
                    s.parts.len() - 1
                });
                units.push(Unit {
                    part,
                    batch: u.batch,
                    live,
                    passes: u.passes,
                });
            }
            partitions.push(units);
        }
        s.partitions = partitions;
        s.delta_part = task.delta_part;
        s.fetch = task.fetch;
        s.count_only = task.count_only;
        s.reversed = task.reversed;
        s.isolated = true;
        let schema = s.schema.clone();
        s.eq = match (task.count_only, task.ordered, &s.key_exprs) {
            (true, _, _) => EquivalenceProperties::new(Arc::new(arrow::datatypes::Schema::empty())),
            (false, true, Some(key)) => {
                EquivalenceProperties::new_with_orderings(schema.clone(), [key.clone()])
            }
            (false, true, None) => return Err(mismatch("no key order to declare".into())),
            (false, false, _) => EquivalenceProperties::new(schema.clone()),
        };
        let mut selection = Selection::default();
        for (f, applied) in filters.iter().zip(&task.applied) {
            if *applied {
                selection.add(f, &schema)?;
            }
        }
        // The fresh rows of `base` are unfiltered: the applied filters run on them when
        // their partition opens.
        s.delta_pending = selection.clone();
        s.selection = selection;
        s.delta_bounds = Default::default();
        s.filters = filters;
        s.applied = task.applied.clone();
        s.join_filters = Vec::new();
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_survives_its_json_and_bad_json_is_an_error() {
        let t = ScanTask {
            table: "lineitem".into(),
            projection: Some(vec![0, 4, 5]),
            watermark: 17,
            snapshot: 19,
            partitions: vec![
                vec![
                    TaskUnit {
                        segment: 3,
                        batch: 0,
                        passes: false,
                    },
                    TaskUnit {
                        segment: 3,
                        batch: 1,
                        passes: true,
                    },
                ],
                vec![],
                vec![TaskUnit {
                    segment: 9,
                    batch: 7,
                    passes: false,
                }],
            ],
            delta_part: 3,
            fetch: Some(10),
            count_only: false,
            reversed: true,
            ordered: false,
            applied: vec![true, false],
        };
        assert_eq!(ScanTask::from_json(&t.to_json()).unwrap(), t);
        let none = ScanTask {
            projection: None,
            fetch: None,
            ..t.clone()
        };
        assert_eq!(ScanTask::from_json(&none.to_json()).unwrap(), none);
        for bad in [
            "",
            "{}",
            "[1]",
            &t.to_json().replace("scan-task/1", "scan-task/9"),
        ] {
            assert!(ScanTask::from_json(bad).is_err(), "{bad}");
        }
    }
}

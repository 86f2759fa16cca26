//! Filters the scan applies itself, before it decodes what it emits (late
//! materialization).
//!
//! DataFusion pushes a `FilterExec`'s predicate into the scan; the conjuncts that are
//! deterministic and static (no `random()`, no join or TopK dynamic filter) are taken
//! over: the scan evaluates them on each segment batch as stored and reports them
//! applied, so the `FilterExec` goes away. A conjunct over one dictionary-encoded column
//! is evaluated once per distinct value (plus once for NULL) and the answers gathered by
//! key, instead of once per row on the decoded strings; the selection is combined with
//! the batch's delete mask, and only the surviving rows are decoded into the output
//! types. Fresh rows from the row store are filtered with the same predicate.
//!
//! Evaluating conjuncts one by one (or on dictionary values that no live row holds) can
//! fail where evaluating the whole predicate on the live rows would not, e.g. a cast
//! that only a deleted row's value breaks. On any error the batch falls back to exactly
//! what the `FilterExec` did: the whole predicate on the live, decoded rows.

use crate::fresh::Kept;
use crate::kernels::{IntSet, pack};
use crate::runtime_filter::RuntimeFilter;
use crate::zones::scalar_of;
use arrow::array::{
    Array, ArrayRef, ArrowPrimitiveType, AsArray, BooleanArray, BooleanBufferBuilder,
    PrimitiveArray, RecordBatch, RecordBatchOptions, downcast_integer_array, new_null_array,
};
use arrow::buffer::BooleanBuffer;
use arrow::compute::{
    FilterBuilder, FilterPredicate, concat, filter_record_batch, prep_null_mask_filter,
};
use arrow::datatypes::{ArrowNativeType, DataType, Int32Type};
use arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::{BinaryExpr, Column, InListExpr, Literal};
use datafusion::physical_expr::utils::{collect_columns, conjunction, split_conjunction};
use datafusion::physical_expr_common::physical_expr::{is_volatile, snapshot_generation};
use datafusion::scalar::ScalarValue;
use lightning_columnar::segment::ZoneMap;
use lightning_columnar::segment::to_type;
use std::sync::Arc;

/// One conjunct, rewritten over a batch of just its columns.
#[derive(Debug)]
pub(crate) struct Conjunct {
    /// Its columns' positions in the scan's output schema.
    cols: Vec<usize>,
    schema: SchemaRef,
    expr: Arc<dyn PhysicalExpr>,
    /// The conjunct as parts the kernels evaluate on stored columns, when every part of
    /// it is one (else empty): `column op literal` (which a batch's zone map can also
    /// prove) and `column IN (integers…)`, e.g. a join's dynamic filter of key bounds
    /// and key list.
    kernels: Vec<Kernel>,
}

/// A part of a conjunct evaluated by [`crate::kernels`] (column positions in the output
/// schema).
#[derive(Debug)]
enum Kernel {
    Compare(usize, Operator, ScalarValue),
    Set(usize, IntSet),
    /// A conjunct over one integer column tabulated over the values `lo..=hi` (see
    /// [`Conjunct::tabulated`]): the members it is true for (none: `None`). A batch
    /// holding a value outside `lo..=hi` is not evaluated by it.
    Table {
        col: usize,
        lo: i64,
        hi: i64,
        set: Option<IntSet>,
    },
}

impl Kernel {
    /// The parts of `expr`, if every one is a kernel's.
    fn all_of(expr: &Arc<dyn PhysicalExpr>) -> Vec<Kernel> {
        let mut out = Vec::new();
        for part in split_conjunction(expr) {
            match comparison(part) {
                Some((col, op, lit)) => out.push(Kernel::Compare(col, op, lit)),
                None => match int_set(part) {
                    Some((col, set)) => out.push(Kernel::Set(col, set)),
                    None => return Vec::new(),
                },
            }
        }
        out
    }

    /// The rows (NULL false) of a stored batch it is true for; `None` when the stored
    /// column is of a type (or the literal has no exact equal there) it does not handle.
    fn evaluate(&self, stored: &[ArrayRef]) -> Result<Option<BooleanBuffer>> {
        match self {
            Kernel::Compare(col, op, lit) => {
                crate::kernels::compare(stored[*col].as_ref(), *op, lit)
            }
            Kernel::Set(col, set) => Ok(set.members(stored[*col].as_ref())),
            Kernel::Table { col, lo, hi, set } => {
                let stored = stored[*col].as_ref();
                match crate::kernels::int_bounds(stored) {
                    Some((a, b)) if a >= *lo && b <= *hi => Ok(match set {
                        Some(set) => set.members(stored),
                        None => Some(BooleanBuffer::new_unset(stored.len())),
                    }),
                    // Values outside the table (or none, or not integers stored).
                    _ => Ok(None),
                }
            }
        }
    }
}

/// `column op literal` (either way round) of `expr`, a comparison with a non-NULL literal.
fn comparison(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, Operator, ScalarValue)> {
    let b = expr.downcast_ref::<BinaryExpr>()?;
    let (col, op, lit) = match (
        b.left().downcast_ref::<Column>(),
        b.right().downcast_ref::<Literal>(),
    ) {
        (Some(c), Some(l)) => (c, *b.op(), l),
        _ => (
            b.right().downcast_ref::<Column>()?,
            b.op().swap()?,
            b.left().downcast_ref::<Literal>()?,
        ),
    };
    (crate::kernels::is_comparison(op) && !lit.value().is_null())
        .then(|| (col.index(), op, lit.value().clone()))
}

/// `column IN (list)` of `expr`, not negated, its list integer literals (NULLs, which
/// never match, left out), as a set when a bitmap holds it.
fn int_set(expr: &Arc<dyn PhysicalExpr>) -> Option<(usize, IntSet)> {
    let e = expr.downcast_ref::<InListExpr>()?;
    let col = e.expr().downcast_ref::<Column>()?;
    if e.negated() {
        return None;
    }
    let mut values = Vec::with_capacity(e.list().len());
    for item in e.list() {
        let v = match item.downcast_ref::<Literal>()?.value() {
            ScalarValue::Int8(v) => v.map(i64::from),
            ScalarValue::Int16(v) => v.map(i64::from),
            ScalarValue::Int32(v) => v.map(i64::from),
            ScalarValue::Int64(v) => *v,
            ScalarValue::UInt8(v) => v.map(i64::from),
            ScalarValue::UInt16(v) => v.map(i64::from),
            ScalarValue::UInt32(v) => v.map(i64::from),
            _ => return None,
        };
        values.extend(v);
    }
    Some((col.index(), IntSet::new(&values)?))
}

/// The pushed-down predicate a scan applies (the conjunction of its conjuncts).
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection {
    conjuncts: Vec<Arc<Conjunct>>,
    /// All conjuncts as one expression over the output schema.
    whole: Option<Arc<dyn PhysicalExpr>>,
}

impl Selection {
    /// Whether the scan can apply `filter` exactly: deterministic, not dynamic, and
    /// every conjunct reads at least one column.
    pub fn can_apply(filter: &Arc<dyn PhysicalExpr>) -> bool {
        !is_volatile(filter)
            && snapshot_generation(filter) == 0
            && split_conjunction(filter)
                .iter()
                .all(|c| !collect_columns(c).is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.conjuncts.is_empty()
    }

    /// This selection and `other`'s conjuncts too.
    pub fn and(&mut self, other: &Selection) {
        self.conjuncts.extend(other.conjuncts.iter().cloned());
        let all: Vec<_> = self.whole.iter().chain(&other.whole).cloned().collect();
        self.whole = (!all.is_empty()).then(|| conjunction(all));
    }

    /// Add `filter` (over `schema`, the scan's output); the caller checked
    /// [`Selection::can_apply`].
    pub fn add(&mut self, filter: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Result<()> {
        for c in split_conjunction(filter) {
            self.conjuncts.push(Arc::new(Conjunct::new(c, schema)?));
        }
        let all: Vec<_> = self.whole.iter().cloned().chain([filter.clone()]).collect();
        self.whole = Some(conjunction(all));
        Ok(())
    }

    /// Whether a batch's zone maps (`zones`, by table column; output column `i` is table
    /// column `projection[i]`) prove every conjunct true for all its rows: each is a
    /// comparison with a literal that the column's bounds satisfy, on a column without
    /// NULLs (and not a float: zone maps leave NaN out).
    pub fn proven(
        &self,
        zones: &[ZoneMap],
        projection: Option<&[usize]>,
        schema: &SchemaRef,
    ) -> bool {
        !self.conjuncts.is_empty()
            && self.conjuncts.iter().all(|c| {
                let [Kernel::Compare(col, op, lit)] = &c.kernels[..] else {
                    return false;
                };
                let dt = schema.field(*col).data_type();
                let table_col = projection.map_or(Some(*col), |p| p.get(*col).copied());
                let Some(z) = table_col.and_then(|t| zones.get(t)) else {
                    return false;
                };
                if z.null_count > 0 || dt.is_floating() {
                    return false;
                }
                let (Some(min), Some(max)) = (scalar_of(dt, &z.min), scalar_of(dt, &z.max)) else {
                    return false;
                };
                let (Some(lo), Some(hi)) = (min.partial_cmp(lit), max.partial_cmp(lit)) else {
                    return false;
                };
                use std::cmp::Ordering::*;
                match op {
                    Operator::Eq => lo == Equal && hi == Equal,
                    Operator::NotEq => lo == Greater || hi == Less,
                    Operator::Lt => hi == Less,
                    Operator::LtEq => hi != Greater,
                    Operator::Gt => lo == Greater,
                    Operator::GtEq => lo != Less,
                    _ => false,
                }
            })
    }

    /// The rows of `batch` (in the output types) the predicate keeps.
    pub fn filter(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let Some(whole) = &self.whole else {
            return Ok(batch.clone());
        };
        let keep = whole.evaluate(batch)?.into_array(batch.num_rows())?;
        let keep = keep.as_boolean_opt().ok_or_else(not_boolean)?;
        Ok(filter_record_batch(batch, keep)?)
    }

    /// One stored batch (`stored`, the projected columns as the segment holds them) into
    /// the output `schema`: the rows `live` keeps (all when `None`) that the predicate
    /// keeps, decoded, with no mask; `None` when no row is left. With `may_mask` (an
    /// aggregation that can set rows aside by a mask), when at least half of the rows
    /// are kept (not all), the batch comes whole (decoded, not copied without the
    /// others) with the kept rows as its mask. `runtime`, when given, further drops the
    /// kept rows its dynamic filters rule out (evaluated on those rows only).
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &self,
        stored: Vec<ArrayRef>,
        rows: usize,
        live: Option<Arc<Kept>>,
        schema: &SchemaRef,
        coded: u64,
        may_mask: bool,
        runtime: Option<&mut RuntimeFilter>,
    ) -> Result<Option<(RecordBatch, Option<BooleanBuffer>)>> {
        // The batch's ready filter of its live rows, built only where it is used.
        let ready = || live.as_deref().map(|k| k.filter());
        let live_rows = live.as_deref().map_or(rows, |k| k.count);
        // The rows the predicate keeps, when there is one.
        let selected = match self.conjuncts.is_empty() {
            true => None,
            false => match self.select(&stored, rows, live.as_deref(), schema) {
                Ok(keep) => Some(keep),
                Err(_) => {
                    // Exactly what a FilterExec over the live rows would do, errors
                    // included.
                    let b = self.filter(&decode(&stored, rows, ready(), schema, 0)?)?;
                    return Ok((b.num_rows() > 0).then_some((b, None)));
                }
            },
        };
        let selected = match runtime {
            Some(r) => {
                let within = selected.as_ref().or(live.as_deref().map(|k| &k.bits));
                r.keep(&stored, rows, schema, within)?.or(selected)
            }
            None => selected,
        };
        let kept = selected.as_ref().map_or(live_rows, |k| k.count_set_bits());
        if selected.is_some() && kept == 0 {
            return Ok(None);
        }
        // Copying the kept rows out from between dropped ones costs more than
        // aggregating the dropped ones into a group set aside, while they are at most
        // half; copying out a few is cheaper than aggregating many.
        if may_mask && kept < rows && kept * 2 >= rows {
            let mask = match selected {
                Some(keep) => keep,
                None => live
                    .as_deref()
                    .expect("rows dropped, so a live mask")
                    .bits
                    .clone(),
            };
            let b = decode(&stored, rows, None, schema, coded)?;
            return Ok(Some((b, Some(mask))));
        }
        // When the predicate dropped no live row, the batch's ready filter applies.
        let b = match selected {
            Some(keep) if kept != live_rows => {
                let f = FilterBuilder::new(&BooleanArray::new(keep, None))
                    .optimize()
                    .build();
                decode(&stored, rows, Some(&f), schema, coded)?
            }
            _ => decode(&stored, rows, ready(), schema, coded)?,
        };
        Ok(Some((b, None)))
    }

    /// How many rows [`Selection::apply`] would yield, without decoding any.
    pub fn count(
        &self,
        stored: Vec<ArrayRef>,
        rows: usize,
        live: Option<Arc<Kept>>,
        schema: &SchemaRef,
    ) -> Result<usize> {
        if self.conjuncts.is_empty() {
            return Ok(live.map_or(rows, |k| k.count));
        }
        match self.select(&stored, rows, live.as_deref(), schema) {
            Ok(keep) => Ok(keep.count_set_bits()),
            Err(_) => Ok(self
                .apply(stored, rows, live, schema, 0, false, None)?
                .map_or(0, |(b, _)| b.num_rows())),
        }
    }

    /// The rows `live` keeps (all when `None`) that every conjunct keeps; the caller
    /// checked there is a conjunct.
    fn select(
        &self,
        stored: &[ArrayRef],
        rows: usize,
        live: Option<&Kept>,
        schema: &SchemaRef,
    ) -> Result<BooleanBuffer> {
        let mut keep = live.map(|k| k.bits.clone());
        for c in &self.conjuncts {
            let bits = c.evaluate(stored, rows, schema, None)?;
            keep = Some(match keep {
                Some(k) => &k & &bits,
                None => bits,
            });
        }
        Ok(keep.expect("a conjunct"))
    }
}

impl Conjunct {
    /// `expr` (over `schema`, the scan's output) rewritten over a batch of just its
    /// columns. The batch's fields are nullable whatever the columns say: a dictionary
    /// column's values are evaluated with one NULL slot appended.
    pub(crate) fn new(expr: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Result<Conjunct> {
        let mut cols: Vec<usize> = collect_columns(expr).iter().map(Column::index).collect();
        cols.sort_unstable();
        let fields: Vec<_> = cols
            .iter()
            .map(|&i| schema.field(i).clone().with_nullable(true))
            .collect();
        let rewritten = Arc::clone(expr)
            .transform(|e| {
                Ok(match e.downcast_ref::<Column>() {
                    Some(col) => {
                        let at = cols.binary_search(&col.index()).expect("collected");
                        Transformed::yes(Arc::new(Column::new(col.name(), at)) as _)
                    }
                    None => Transformed::no(e),
                })
            })?
            .data;
        Ok(Conjunct {
            cols,
            schema: Arc::new(Schema::new(fields)),
            expr: rewritten,
            kernels: Kernel::all_of(expr),
        })
    }

    /// The rows among `within` (all when `None`) this conjunct is true for (NULL counts
    /// as false), of a stored batch (`stored`: the scan's output columns as the segment
    /// holds them, `rows` long, decoded into `schema`). A column stored as a dictionary
    /// or in runs (a key prefix) is evaluated once per value or run; otherwise only the
    /// rows `within` are decoded and evaluated.
    pub(crate) fn evaluate(
        &self,
        stored: &[ArrayRef],
        rows: usize,
        schema: &SchemaRef,
        within: Option<&BooleanBuffer>,
    ) -> Result<BooleanBuffer> {
        let bits = match self.per_value(stored, rows, schema, within)? {
            Some(bits) => bits,
            None => match self.by_kernels(stored)? {
                Some(bits) => bits,
                None => return self.decoded(stored, rows, schema, within),
            },
        };
        Ok(match within {
            Some(w) => &bits & w,
            None => bits,
        })
    }

    /// A one-column conjunct over a dictionary (once per distinct value, plus once for
    /// NULL) or run-end-encoded column (once per run); `None` for any other, and for
    /// runs outnumbering the rows `within` (evaluated row by row for less).
    fn per_value(
        &self,
        stored: &[ArrayRef],
        rows: usize,
        schema: &SchemaRef,
        within: Option<&BooleanBuffer>,
    ) -> Result<Option<BooleanBuffer>> {
        let [col] = self.cols[..] else {
            return Ok(None);
        };
        let t = schema.field(col).data_type();
        if let Some(dict) = stored[col].as_any_dictionary_opt() {
            // The NULL slot is at index `n`.
            let values = to_type(dict.values(), t)?;
            let n = values.len();
            let values = concat(&[values.as_ref(), new_null_array(t, 1).as_ref()])?;
            let table: Vec<bool> = self.answers(vec![values], n + 1)?.iter().collect();
            let keys = dict.keys();
            let bits = downcast_integer_array!(
                keys => by_key(keys, &table),
                t => return Err(internal(format!("dictionary keys of type {t}")))
            );
            // NULL keys take NULL's answer (whatever their slots hold).
            return Ok(Some(match keys.nulls() {
                Some(valid) if table[n] => &bits | &!valid.inner(),
                Some(valid) => &bits & valid.inner(),
                None => bits,
            }));
        }
        let Some(runs) = stored[col].as_run_opt::<Int32Type>() else {
            return Ok(None);
        };
        let ends = runs.run_ends();
        if ends.offset() != 0 || ends.len() != rows {
            return Ok(None);
        }
        if within.is_some_and(|w| w.count_set_bits() < runs.values().len()) {
            return Ok(None);
        }
        let answers = self.answers(vec![to_type(runs.values(), t)?], runs.values().len())?;
        let mut out = BooleanBufferBuilder::new(rows);
        let mut start = 0usize;
        for (&end, keep) in ends.values().iter().zip(answers.iter()) {
            let end = (end as usize).min(rows);
            out.append_n(end.saturating_sub(start), keep);
            start = start.max(end);
        }
        out.append_n(rows - start, false);
        Ok(Some(out.finish()))
    }

    /// The conjunct over its columns decoded, only the rows `within` when that leaves
    /// some out (the answers spread back to their rows).
    fn decoded(
        &self,
        stored: &[ArrayRef],
        rows: usize,
        schema: &SchemaRef,
        within: Option<&BooleanBuffer>,
    ) -> Result<BooleanBuffer> {
        let within = within.filter(|w| w.count_set_bits() < rows);
        let filter =
            within.map(|w| FilterBuilder::new(&BooleanArray::new(w.clone(), None)).build());
        let n = filter.as_ref().map_or(rows, |f| f.count());
        let cols = self
            .cols
            .iter()
            .map(|&c| {
                let col = match &filter {
                    Some(f) => f.filter(stored[c].as_ref())?,
                    None => stored[c].clone(),
                };
                Ok(to_type(&col, schema.field(c).data_type())?)
            })
            .collect::<Result<Vec<_>>>()?;
        let answers = self.answers(cols, n)?;
        let Some(w) = within else {
            return Ok(answers);
        };
        let mut out = BooleanBufferBuilder::new(rows);
        out.append_n(rows, false);
        for (row, keep) in w.set_indices().zip(answers.iter()) {
            if keep {
                out.set_bit(row, true);
            }
        }
        Ok(out.finish())
    }

    /// The conjunct over `cols` (its columns, `n` rows), NULL counting as false.
    fn answers(&self, cols: Vec<ArrayRef>, n: usize) -> Result<BooleanBuffer> {
        let options = RecordBatchOptions::new().with_row_count(Some(n));
        let b = RecordBatch::try_new_with_options(self.schema.clone(), cols, &options)?;
        let answers = self.expr.evaluate(&b)?.into_array(n)?;
        Ok(truth(answers.as_boolean_opt().ok_or_else(not_boolean)?))
    }

    /// The conjunct's parts by the kernels, compared as stored (narrower than the
    /// column, say) with no widening of every value first; `None` when it has a part
    /// they do not evaluate, or a batch's column they do not handle.
    fn by_kernels(&self, stored: &[ArrayRef]) -> Result<Option<BooleanBuffer>> {
        let mut bits: Option<BooleanBuffer> = None;
        for k in &self.kernels {
            let Some(b) = k.evaluate(stored)? else {
                return Ok(None);
            };
            bits = Some(match bits {
                Some(a) => &a & &b,
                None => b,
            });
        }
        Ok(bits)
    }

    /// The values `lo..=hi` of this conjunct's one integer column, when evaluating it
    /// on each of them once beats evaluating it on every row: a join's dynamic filter
    /// looked up in its hash table per row (q17: lineitem's 60 M `l_partkey`s against
    /// 2 K parts, from a domain of 2 M keys). The result answers in one bitmap load per
    /// row, for batches whose values all lie in `lo..=hi` (the others are evaluated as
    /// before). `None` when the conjunct is not over one integer column, already goes to
    /// the kernels (other than by such a table), is true for NULL, or the span is over
    /// 2^24 values.
    pub(crate) fn tabulated(&self, lo: i64, hi: i64) -> Result<Option<Conjunct>> {
        const MAX_SPAN: i128 = 1 << 24;
        const CHUNK: i64 = 1 << 16;
        if !self.tabulable() || lo > hi || hi as i128 - lo as i128 >= MAX_SPAN {
            return Ok(None);
        }
        let t = self.schema.field(0).data_type();
        if self.answers(vec![new_null_array(t, 1)], 1)?.value(0) {
            return Ok(None);
        }
        let mut members = Vec::new();
        let mut from = lo;
        loop {
            let to = from.saturating_add(CHUNK - 1).min(hi);
            let values: ArrayRef = Arc::new(arrow::array::Int64Array::from_iter_values(from..=to));
            let n = values.len();
            let values = arrow::compute::cast(&values, t)?;
            let answers = self.answers(vec![values], n)?;
            members.extend(answers.set_indices().map(|i| from + i as i64));
            if to == hi {
                break;
            }
            from = to + 1;
        }
        let set = (!members.is_empty()).then(|| IntSet::spanning(lo, hi, &members));
        Ok(Some(Conjunct {
            cols: self.cols.clone(),
            schema: self.schema.clone(),
            expr: self.expr.clone(),
            kernels: vec![Kernel::Table {
                col: self.cols[0],
                lo,
                hi,
                set,
            }],
        }))
    }

    /// Whether [`Self::tabulated`] may answer: a conjunct over one integer column that
    /// the kernels do not evaluate (or only from such a table, to be made wider).
    pub(crate) fn tabulable(&self) -> bool {
        let table = matches!(self.kernels[..], [] | [Kernel::Table { .. }]);
        self.cols.len() == 1 && table && crate::kernels::is_int(self.schema.field(0).data_type())
    }

    /// The bounds of the values of this conjunct's one column in a stored batch, when it
    /// is a plain integer array (what [`Self::tabulated`] can answer for).
    pub(crate) fn int_bounds(&self, stored: &[ArrayRef]) -> Option<(i64, i64)> {
        let [col] = self.cols[..] else {
            return None;
        };
        crate::kernels::int_bounds(stored[col].as_ref())
    }

    /// Whether it answers from a table of its column's values (for tests).
    #[cfg(test)]
    pub(crate) fn is_table(&self) -> bool {
        matches!(self.kernels[..], [Kernel::Table { .. }])
    }

    /// How many kernel parts, and whether one is an integer set (for tests).
    #[cfg(test)]
    pub(crate) fn kernel_parts(&self) -> (usize, bool) {
        let sets = self.kernels.iter().any(|k| matches!(k, Kernel::Set(..)));
        (self.kernels.len(), sets)
    }
}

/// Per row, `table[key]` (false for a key outside it; NULL keys are the caller's).
fn by_key<K: ArrowPrimitiveType>(keys: &PrimitiveArray<K>, table: &[bool]) -> BooleanBuffer
where
    K::Native: ArrowNativeType,
{
    let k = keys.values();
    // The common `column = 'value'`: one value selected, a comparison of the keys with
    // its key (no lookup per row).
    let mut selected = table.iter().enumerate().filter(|(_, t)| **t);
    match (selected.next(), selected.next()) {
        (None, _) => BooleanBuffer::new_unset(k.len()),
        (Some((key, _)), None) => match K::Native::from_usize(key) {
            Some(key) => pack(k, |x| x == key),
            None => BooleanBuffer::new_unset(k.len()),
        },
        _ => pack(k, |x| table.get(x.as_usize()).copied().unwrap_or(false)),
    }
}

fn internal(why: String) -> datafusion::error::DataFusionError {
    datafusion::error::DataFusionError::Internal(why)
}

fn not_boolean() -> datafusion::error::DataFusionError {
    internal("filter is not boolean".into())
}

/// True where `a` is true and not NULL.
fn truth(a: &BooleanArray) -> BooleanBuffer {
    match a.null_count() {
        0 => a.values().clone(),
        _ => prep_null_mask_filter(a).values().clone(),
    }
}

/// The rows `keep` selects (all when `None`) of `stored`, each column filtered as
/// stored (a dictionary's narrow keys, not its decoded strings) and then decoded into
/// `schema`. Each column `i` with bit `i` of `coded` set, if stored as a dictionary,
/// stays one (its keys filtered), and the batch's schema says so.
fn decode(
    stored: &[ArrayRef],
    rows: usize,
    keep: Option<&FilterPredicate>,
    schema: &SchemaRef,
    coded: u64,
) -> Result<RecordBatch> {
    let mut out = schema.clone();
    let cols = stored
        .iter()
        .zip(schema.fields())
        .enumerate()
        .map(|(i, (c, field))| {
            let c = match keep {
                Some(f) => f.filter(c.as_ref())?,
                None => c.clone(),
            };
            if i < 64
                && coded & (1 << i) != 0
                && matches!(c.data_type(), DataType::Dictionary(_, _))
            {
                let mut fields = out.fields().to_vec();
                fields[i] = Arc::new(field.as_ref().clone().with_data_type(c.data_type().clone()));
                out = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
                return Ok(c);
            }
            Ok(to_type(&c, field.data_type())?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new_with_options(
        out,
        cols,
        &RecordBatchOptions::new().with_row_count(Some(keep.map_or(rows, |f| f.count()))),
    )?)
}

/// A batch of `n` rows and no columns.
pub(crate) fn rows_only(n: usize) -> RecordBatch {
    RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .expect("a batch without columns")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{DictionaryArray, Int8Array, StringArray};
    use arrow::datatypes::{Field, Int8Type};
    use datafusion::physical_expr::expressions::lit;

    /// A NOT NULL dictionary column (TPC-H's flags and dates after an SQL import) is
    /// evaluated once per value like any other, not by the fallback over decoded rows.
    #[test]
    fn a_not_null_dictionary_column_is_selected_by_key() {
        let schema = Arc::new(Schema::new(vec![Field::new("f", DataType::Utf8, false)]));
        let f = Arc::new(Column::new("f", 0)) as Arc<dyn PhysicalExpr>;
        let filter = Arc::new(BinaryExpr::new(f, Operator::Eq, lit("A"))) as _;
        let mut s = Selection::default();
        s.add(&filter, &schema).unwrap();
        let keys = Int8Array::from(vec![0, 1, 1, 0, 2]);
        let values = StringArray::from(vec!["A", "N", "R"]);
        let dict = DictionaryArray::<Int8Type>::try_new(keys, Arc::new(values)).unwrap();
        let stored: Vec<ArrayRef> = vec![Arc::new(dict)];
        let keep = s.select(&stored, 5, None, &schema).unwrap();
        assert_eq!(
            keep.iter().collect::<Vec<_>>(),
            [true, false, false, true, false]
        );
    }

    /// A key prefix stored in runs is selected once per run.
    #[test]
    fn a_run_end_encoded_column_is_selected_by_run() {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
        let k = Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>;
        let filter = Arc::new(BinaryExpr::new(k, Operator::Gt, lit(3i64))) as _;
        let mut s = Selection::default();
        s.add(&filter, &schema).unwrap();
        let ends = arrow::array::Int32Array::from(vec![2, 3, 6]);
        let values = arrow::array::Int64Array::from(vec![4, 1, 9]);
        let runs = arrow::array::RunArray::<Int32Type>::try_new(&ends, &values).unwrap();
        let stored: Vec<ArrayRef> = vec![Arc::new(runs)];
        let keep = s.select(&stored, 6, None, &schema).unwrap();
        let want = [true, true, false, true, true, true];
        assert_eq!(keep.iter().collect::<Vec<_>>(), want);
    }
}

//! Query answers as sorted lines of `|`-joined values, for comparing two engines'
//! answers (or an answer with a model) whatever order the rows came in.

use lightning_db::Database;
use lightning_db::arrow::array::RecordBatch;
use lightning_db::arrow::util::display::array_value_to_string;
use lightning_db::datafusion::datasource::MemTable;
use lightning_db::datafusion::prelude::SessionContext;
use std::sync::Arc;

pub fn lines(batches: &[RecordBatch]) -> Vec<String> {
    let mut out: Vec<String> = batches
        .iter()
        .flat_map(|b| {
            (0..b.num_rows()).map(move |r| {
                b.columns()
                    .iter()
                    .map(|c| array_value_to_string(c, r).unwrap())
                    .collect::<Vec<_>>()
                    .join("|")
            })
        })
        .collect();
    out.sort();
    out
}

/// Plain DataFusion over in-memory copies of tables as a database holds them now: the
/// oracle `db.sql` answers are compared with.
pub struct Oracle {
    ctx: SessionContext,
    rt: tokio::runtime::Runtime,
}

impl Oracle {
    /// Copies of `tables` from `db`, registered under their names.
    pub fn over(db: &Database, tables: &[&str]) -> Oracle {
        let ctx = SessionContext::new();
        for t in tables {
            let rows = db.scan_table(t, 1 << 20).unwrap();
            ctx.register_table(
                *t,
                Arc::new(MemTable::try_new(rows[0].schema(), vec![rows]).unwrap()),
            )
            .unwrap();
        }
        Oracle {
            ctx,
            rt: tokio::runtime::Runtime::new().unwrap(),
        }
    }

    /// DataFusion's answer to `q`.
    pub fn run(&self, q: &str) -> lightning_db::datafusion::error::Result<Vec<RecordBatch>> {
        self.rt
            .block_on(async { self.ctx.sql(q).await?.collect().await })
    }

    /// `db.sql(q)` answers what DataFusion answers (in any row order).
    pub fn same(&self, db: &Database, q: &str) {
        assert_eq!(
            lines(&db.sql(q).unwrap()),
            lines(&self.run(q).unwrap()),
            "{q}"
        );
    }
}

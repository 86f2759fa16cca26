//! The partitions of one scan share its batches at run time (a partition held up
//! takes fewer): every row is still read exactly once, whichever partition reads it,
//! in every execution of a plan.

use crate::common;

use futures::StreamExt;
use lightning_db::arrow::array::*;
use lightning_db::arrow::datatypes::Int64Type;
use lightning_db::datafusion::datasource::source::DataSourceExec;
use lightning_db::datafusion::physical_plan::ExecutionPlan;
use lightning_db::datafusion::prelude::SessionContext;
use lightning_db::{Database, LightningDbConfig};
use std::sync::Arc;

/// 20,000 rows in two segments of batches of 1,000, read by 4 partitions.
fn db(dir: &std::path::Path) -> Database {
    let cfg = LightningDbConfig {
        columnar_background: false,
        columnar_segment_rows: 10_000,
        columnar_batch_rows: 1000,
        sql_threads: 4,
        ..common::small_config()
    };
    let db = Database::create(dir.join("db"), cfg).unwrap();
    db.sql("CREATE TABLE t (id BIGINT, tag VARCHAR, v BIGINT, PRIMARY KEY (id))")
        .unwrap();
    for chunk in 0..2 {
        let values: Vec<String> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| format!("({i}, 'tag{}', {})", i % 5, i % 7))
            .collect();
        db.sql(&format!("INSERT INTO t VALUES {}", values.join(",")))
            .unwrap();
        db.compact_columnar("t").unwrap();
    }
    db
}

fn scalar(db: &Database, q: &str) -> i64 {
    let b = db.sql(q).unwrap();
    lightning_db::arrow::compute::cast(b[0].column(0), &Int64Type::DATA_TYPE)
        .unwrap()
        .as_primitive::<Int64Type>()
        .value(0)
}

/// The `DataSourceExec` of `q`'s plan (its leaf) in session `ctx`.
async fn leaf(ctx: &SessionContext, q: &str) -> Arc<dyn ExecutionPlan> {
    let mut plan = ctx
        .sql(q)
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    while let Some(c) = plan.children().first() {
        plan = (*c).clone();
    }
    assert!(plan.downcast_ref::<DataSourceExec>().is_some(), "{plan:?}");
    plan
}

/// Rows partition `p` of `plan` yields in one execution, draining it alone.
async fn drain(ctx: &SessionContext, plan: &Arc<dyn ExecutionPlan>, p: usize) -> usize {
    let mut s = plan.execute(p, ctx.task_ctx()).unwrap();
    let mut n = 0;
    while let Some(b) = s.next().await {
        n += b.unwrap().num_rows();
    }
    n
}

#[test]
fn a_partition_drained_first_takes_every_batch_and_a_reset_plan_reads_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(dir.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ctx = db.session().unwrap();
        let plan = leaf(&ctx, "SELECT v FROM t").await;
        let parts = plan.properties().partitioning.partition_count();
        assert_eq!(parts, 4);
        // Shared: the first partition drained takes all 20 batches, the others none.
        assert_eq!(drain(&ctx, &plan, 0).await, 20_000);
        for p in 1..parts {
            assert_eq!(drain(&ctx, &plan, p).await, 0);
        }
        // Executed again (as a recursive query's term is), after a reset: all rows.
        let again = plan.clone().reset_state().unwrap();
        assert_eq!(drain(&ctx, &again, 2).await, 20_000);

        // Executors that run each partition on its own (work stealing off) keep the
        // fixed shares: each partition reads its quarter.
        ctx.sql("SET datafusion.execution.enable_file_stream_work_stealing = false")
            .await
            .unwrap();
        let plan = leaf(&ctx, "SELECT v FROM t").await;
        let mut total = 0;
        for p in 0..parts {
            let n = drain(&ctx, &plan, p).await;
            assert_eq!(n, 5_000, "partition {p}");
            total += n;
        }
        assert_eq!(total, 20_000);
    });
}

#[test]
fn shared_batches_give_exact_answers_with_fresh_rows_topk_joins_and_recursion() {
    let dir = tempfile::tempdir().unwrap();
    let db = db(dir.path());
    // Fresh rows on top of the segments: updates of segment rows, deletes, inserts.
    db.sql("UPDATE t SET v = 100 WHERE id % 1000 = 3").unwrap();
    db.sql("DELETE FROM t WHERE id % 1000 = 4").unwrap();
    db.sql("INSERT INTO t VALUES (20000, 'tag9', 1), (-1, 'tag9', 2)")
        .unwrap();
    let live = |i: &i64| *i < 0 || *i >= 20_000 || i % 1000 != 4;
    let ids: Vec<i64> = (-1..=20_000).filter(live).collect();
    let v = |i: i64| match i {
        20_000 => 1,
        -1 => 2,
        i if i % 1000 == 3 => 100,
        i => i % 7,
    };
    let tag = |i: i64| match i {
        -1 | 20_000 => 9,
        i => i % 5,
    };
    for _ in 0..3 {
        assert_eq!(scalar(&db, "SELECT count(*) FROM t"), ids.len() as i64);
        assert_eq!(
            scalar(&db, "SELECT sum(v) FROM t"),
            ids.iter().map(|&i| v(i)).sum::<i64>()
        );
        // Grouped by a dictionary-stored string (read by key, batches shared too).
        let r = db
            .sql("SELECT tag, count(*), sum(v) FROM t GROUP BY tag ORDER BY tag")
            .unwrap();
        let b = lightning_db::arrow::compute::concat_batches(&r[0].schema(), &r).unwrap();
        let tags = lightning_db::arrow::compute::cast(
            b.column(0),
            &lightning_db::arrow::datatypes::DataType::Utf8,
        )
        .unwrap();
        for (row, t) in [0, 1, 2, 3, 4, 9].into_iter().enumerate() {
            let of: Vec<i64> = ids.iter().copied().filter(|&i| tag(i) == t).collect();
            assert_eq!(tags.as_string::<i32>().value(row), format!("tag{t}"));
            assert_eq!(
                b.column(1).as_primitive::<Int64Type>().value(row),
                of.len() as i64
            );
            assert_eq!(
                b.column(2).as_primitive::<Int64Type>().value(row),
                of.iter().map(|&i| v(i)).sum::<i64>()
            );
        }
        // A descending TopK: batches handed out from the highest keys down.
        let top = db.sql("SELECT id FROM t ORDER BY id DESC LIMIT 3").unwrap();
        let top: Vec<i64> = top
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect();
        assert_eq!(top, vec![20_000, 19_999, 19_998]);
        // A self-join: two scans, each sharing its own batches.
        assert_eq!(
            scalar(
                &db,
                "SELECT count(*) FROM t a JOIN t b ON a.id = b.id + 1 WHERE a.v = 100"
            ),
            ids.iter()
                .filter(|&&i| v(i) == 100 && ids.binary_search(&(i - 1)).is_ok())
                .count() as i64
        );
        // A recursive query re-executes its term, scan included, every iteration: the
        // chain -1, 0, 1, 2, 3 (4 is deleted) needs a full scan each time.
        assert_eq!(
            scalar(
                &db,
                "WITH RECURSIVE r(id) AS (SELECT CAST(-1 AS BIGINT) UNION ALL \
                 SELECT t.id FROM r JOIN t ON t.id = r.id + 1) SELECT count(*) FROM r"
            ),
            5
        );
    }
}

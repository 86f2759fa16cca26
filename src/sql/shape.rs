//! Plans reused across literals: queries that differ only in the integers they compare
//! columns with (`WHERE id >= 1041530`, then `>= 1041577`) share one plan.
//!
//! `sql` remembers plans by statement text, so a query whose literal changes every time
//! (the newest rows, a moving time window) was parsed into a logical plan anew on every
//! run. Here such a query is reduced to its *shape*: each integer literal compared with
//! a column (`col <op> 123` or `123 <op> col`) becomes a placeholder, and the shape's
//! logical plan is remembered under its text. A later query of the same shape binds its
//! literals into that plan and goes on to optimization, exactly as its own text would
//! have: only when DataFusion gave every placeholder the literal's own type (`Int64`),
//! so binding the value is the same as having planned it; otherwise the shape is marked
//! as not reusable and queries take the ordinary path.

use datafusion::common::ScalarValue;
use datafusion::sql::parser::Statement as DFStatement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, SetExpr, Statement, TableFactor, Value, visit_expressions_mut,
};
use std::ops::ControlFlow;

/// The shape of `stmt` and the literals taken out of it, in placeholder order; `None`
/// when it has none to take. Only the `WHERE` clause of a plain `SELECT` over tables is
/// parameterized (no `WITH`, set operation, derived table or subquery, no placeholders
/// of its own): rules that evaluate a query's literals while planning (decorrelating
/// a subquery over `count(*)`, say) cannot see them as placeholders.
pub(super) fn parameterize(stmt: &DFStatement) -> Option<(DFStatement, Vec<ScalarValue>)> {
    let DFStatement::Statement(s) = stmt else {
        return None;
    };
    let Statement::Query(q) = s.as_ref() else {
        return None;
    };
    if q.with.is_some() || has_placeholders(s) || has_subqueries(s) {
        return None;
    }
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return None;
    };
    let plain = |t: &TableFactor| matches!(t, TableFactor::Table { args: None, .. });
    if sel.selection.is_none()
        || !sel
            .from
            .iter()
            .all(|f| plain(&f.relation) && f.joins.iter().all(|j| plain(&j.relation)))
    {
        return None;
    }
    let mut shape = s.as_ref().clone();
    let Statement::Query(q) = &mut shape else {
        unreachable!("checked above")
    };
    let SetExpr::Select(sel) = q.body.as_mut() else {
        unreachable!("checked above")
    };
    let selection = sel.selection.as_mut()?;
    let mut values = Vec::new();
    let _ = visit_expressions_mut(selection, |e| {
        if let Expr::BinaryOp { left, op, right } = e
            && is_comparison(op)
        {
            let lit = match (is_column(left), is_column(right)) {
                (true, false) => Some(&mut **right),
                (false, true) => Some(&mut **left),
                _ => None,
            };
            if let Some(lit) = lit
                && let Some(v) = integer(lit)
            {
                values.push(ScalarValue::Int64(Some(v)));
                *lit = Expr::value(Value::Placeholder(format!("${}", values.len())));
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if values.is_empty() {
        return None;
    }
    Some((DFStatement::Statement(Box::new(shape)), values))
}

fn has_subqueries(s: &Statement) -> bool {
    use datafusion::sql::sqlparser::ast::visit_expressions;
    visit_expressions(s, |e| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

fn has_placeholders(s: &Statement) -> bool {
    use datafusion::sql::sqlparser::ast::visit_expressions;
    visit_expressions(s, |e| match e {
        Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

fn is_comparison(op: &BinaryOperator) -> bool {
    use BinaryOperator::*;
    matches!(op, Eq | NotEq | Lt | LtEq | Gt | GtEq)
}

fn is_column(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

fn integer(e: &Expr) -> Option<i64> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, false) => n.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(sql: &str) -> DFStatement {
        datafusion::sql::parser::DFParser::parse_sql(sql)
            .unwrap()
            .pop_front()
            .unwrap()
    }

    #[test]
    fn integers_compared_with_columns_become_placeholders() {
        let (shape, values) = parse_shape(
            "SELECT c, sum(a) FROM t WHERE id >= 1041530 AND 7 < x GROUP BY c ORDER BY 1 LIMIT 10",
        );
        assert_eq!(
            shape,
            "SELECT c, sum(a) FROM t WHERE id >= $1 AND $2 < x GROUP BY c ORDER BY 1 LIMIT 10"
        );
        assert_eq!(
            values,
            [
                ScalarValue::Int64(Some(1041530)),
                ScalarValue::Int64(Some(7))
            ]
        );
        // Two queries differing only in those literals have one shape.
        assert_eq!(
            parse_shape(
                "SELECT c, sum(a) FROM t WHERE id >= 5 AND 9 < x GROUP BY c ORDER BY 1 LIMIT 10"
            )
            .0,
            shape
        );
    }

    #[test]
    fn other_literals_and_statements_are_left_alone() {
        for sql in [
            "SELECT count(*) FROM t WHERE s = 'paid'",
            "SELECT count(*) FROM t WHERE a > 1.5",
            "SELECT count(*) FROM t WHERE a > -3",
            "SELECT count(*) FROM t HAVING count(*) > 3",
            "SELECT c FROM t GROUP BY c HAVING c > 3",
            "SELECT * FROM t WHERE (SELECT count(*) AS n FROM u WHERE u.a = t.a HAVING n = 0) = 2",
            "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE b > 3)",
            "WITH x AS (SELECT * FROM t) SELECT * FROM x WHERE a > 3",
            "SELECT * FROM (SELECT * FROM t) AS d WHERE a > 3",
            "SELECT a FROM t WHERE a > 3 UNION SELECT a FROM u WHERE a > 4",
            "SELECT * FROM t WHERE id = $1",
            "SELECT 1 + 2",
            "INSERT INTO t VALUES (1)",
            "DELETE FROM t WHERE id = 3",
        ] {
            assert!(parameterize(&parse(sql)).is_none(), "{sql}");
        }
    }

    fn parse_shape(sql: &str) -> (String, Vec<ScalarValue>) {
        let (s, v) = parameterize(&parse(sql)).unwrap();
        (s.to_string(), v)
    }
}

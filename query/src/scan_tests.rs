//! Unit tests of the scan's partitioning.

use super::*;

#[test]
fn spread_keeps_order_and_balances_rows() {
    let u = |part, batch, live| Unit {
        part,
        batch,
        live,
        passes: false,
    };
    let units = vec![
        u(0, 0, 10),
        u(0, 1, 10),
        u(1, 0, 10),
        u(1, 1, 10),
        u(2, 0, 5),
    ];
    let g = spread(units.clone(), 2);
    assert_eq!(g.len(), 2);
    assert_eq!(g[0].len() + g[1].len(), 5);
    assert_eq!((g[0][0].part, g[0][0].batch), (0, 0));
    assert_eq!(spread(units.clone(), 1).len(), 1);
    assert_eq!(spread(units, 16).len(), 5);
    // No units still gives one partition (for the fresh rows).
    assert_eq!(spread(Vec::new(), 4).len(), 1);
}

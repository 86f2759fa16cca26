//! Query answers as sorted lines of `|`-joined values, for comparing two engines'
//! answers (or an answer with a model) whatever order the rows came in.

use lightning_db::arrow::array::RecordBatch;
use lightning_db::arrow::util::display::array_value_to_string;

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

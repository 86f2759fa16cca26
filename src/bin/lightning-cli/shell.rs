//! The SQL shell: statements (ending with `;`, several to a line or one over many) and
//! meta-commands
//! (`.tables`, `.schema`, `.mode`, …, one line each), typed or piped. A failed statement
//! prints its error and the shell goes on; the caller learns how many failed.

use lightning_db::Database;
use lightning_db::arrow::array::RecordBatch;
use lightning_db::arrow::util::display::{ArrayFormatter, FormatOptions};
use std::io::Write;
use std::path::Path;

/// How results are printed (`.mode`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Table,
    Csv,
    Json,
    Line,
    Markdown,
}

/// Whether the shell goes on after an input.
#[derive(Debug, PartialEq)]
pub enum Flow {
    Go,
    Quit,
}

pub struct Shell {
    db: Database,
    mode: Mode,
    timer: bool,
    /// `.output FILE`; `None`: standard output.
    out: Option<std::fs::File>,
    /// Statements and meta-commands that failed.
    pub failed: usize,
    /// Nesting of `.read`, bounded so that a file reading itself stops.
    depth: usize,
    /// The lines of a statement not yet ended with `;`.
    buf: String,
}

const HELP: &str = "\
.tables | \\dt            list the tables
.schema [TABLE] | \\d T   columns, types, primary key, rows and column segments
.mode MODE              table (default), csv, json, line or markdown
.timer on|off           print how long each statement took
.output [FILE]          write results to FILE (no FILE: standard output)
.read FILE              run the statements and meta-commands in FILE
.help                   this text
.quit | .exit | \\q      leave the shell
Statements end with ';' and may span lines.";

impl Shell {
    pub fn new(db: Database) -> Shell {
        Shell {
            db,
            mode: Mode::Table,
            timer: false,
            out: None,
            failed: 0,
            depth: 0,
            buf: String::new(),
        }
    }

    /// Whether `line` (the first of an input) is a meta-command rather than SQL.
    fn is_meta(line: &str) -> bool {
        let t = line.trim_start();
        t.starts_with('.') || t.starts_with('\\') || matches!(t.trim(), "quit" | "exit")
    }

    fn write(&mut self, text: &str) {
        let r = match &mut self.out {
            Some(f) => writeln!(f, "{text}"),
            None => writeln!(std::io::stdout(), "{text}"),
        };
        if let Err(e) = r {
            eprintln!("error: cannot write the result: {e}");
        }
    }

    fn fail(&mut self, e: impl std::fmt::Display) {
        self.failed += 1;
        eprintln!("error: {e}");
    }

    /// Run one SQL statement or meta-command.
    pub fn run(&mut self, input: &str) -> Flow {
        if Self::is_meta(input) {
            return match self.meta(input.trim()) {
                Ok(f) => f,
                Err(e) => {
                    self.fail(e);
                    Flow::Go
                }
            };
        }
        let (mut stmts, rest) = crate::split::statements(input);
        stmts.push(rest);
        for s in stmts {
            self.statement(s);
        }
        Flow::Go
    }

    /// Run one SQL statement and print its result.
    fn statement(&mut self, input: &str) {
        if crate::split::is_blank(input.trim().trim_end_matches(';')) {
            return;
        }
        let started = std::time::Instant::now();
        match self.db.sql(input) {
            Ok(r) => {
                if let Err(e) = self.print(&r) {
                    self.fail(e);
                }
                if self.timer {
                    eprintln!("Run Time: {:.3} s", started.elapsed().as_secs_f64());
                }
            }
            Err(e) => self.fail(e),
        }
    }

    /// Take one input line: a meta-command (when no statement is pending) runs at
    /// once; SQL is collected, and each statement runs once its `;` has come.
    pub fn line(&mut self, line: &str) -> Flow {
        if self.buf.trim().is_empty() && Self::is_meta(line) {
            self.buf.clear();
            return self.run(line);
        }
        self.buf.push_str(line);
        self.buf.push('\n');
        // No statement ends on a line without a `;`: a long statement spanning many
        // lines is scanned once, when its end comes, not once per line.
        if !line.contains(';') {
            // (Comments alone leave nothing pending; `is_blank` stops at the first
            // character of a statement.)
            if crate::split::is_blank(&self.buf) {
                self.buf.clear();
            }
            return Flow::Go;
        }
        let buf = std::mem::take(&mut self.buf);
        let (stmts, rest) = crate::split::statements(&buf);
        for s in stmts {
            self.statement(s);
        }
        if !crate::split::is_blank(rest) {
            self.buf = rest.trim_start().to_string();
        }
        Flow::Go
    }

    /// Whether part of a statement has been typed (a continuation prompt is due).
    pub fn pending(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Forget a partly typed statement (Ctrl-C).
    pub fn discard(&mut self) {
        self.buf.clear();
    }

    /// Run every statement and meta-command of a script, going on past failures; a last
    /// statement without its `;` runs too.
    pub fn run_script(&mut self, text: &str) -> Flow {
        let outer = std::mem::take(&mut self.buf);
        let mut flow = Flow::Go;
        for l in text.lines() {
            flow = self.line(l);
            if flow == Flow::Quit {
                break;
            }
        }
        let rest = std::mem::replace(&mut self.buf, outer);
        if flow == Flow::Go && !rest.trim().is_empty() {
            flow = self.run(&rest);
        }
        flow
    }

    fn meta(&mut self, line: &str) -> Result<Flow, String> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("");
        let args: Vec<&str> = words.collect();
        let arg = |i: usize| args.get(i).copied();
        match cmd {
            ".quit" | ".exit" | "\\q" | "quit" | "exit" => return Ok(Flow::Quit),
            ".help" | "\\?" | "\\h" => self.write(HELP),
            ".tables" | "\\dt" => {
                let mut t = self.db.list_tables().map_err(|e| e.to_string())?;
                t.sort();
                self.write(&t.join("\n"));
            }
            ".schema" | "\\d" => {
                let tables = match arg(0) {
                    Some(t) => vec![t.trim_end_matches(';').to_string()],
                    None => {
                        let mut t = self.db.list_tables().map_err(|e| e.to_string())?;
                        t.sort();
                        t
                    }
                };
                for t in tables {
                    let text = self.describe(&t).map_err(|e| e.to_string())?;
                    self.write(&text);
                }
            }
            ".timer" => match arg(0) {
                Some("on") => self.timer = true,
                Some("off") => self.timer = false,
                _ => return Err("usage: .timer on|off".into()),
            },
            ".mode" => {
                self.mode = match arg(0) {
                    Some("table" | "box" | "duckbox") => Mode::Table,
                    Some("csv") => Mode::Csv,
                    Some("json") => Mode::Json,
                    Some("line") => Mode::Line,
                    Some("markdown") => Mode::Markdown,
                    _ => return Err("usage: .mode table|csv|json|line|markdown".into()),
                }
            }
            ".output" | ".o" => {
                self.out = match arg(0) {
                    None | Some("stdout") => None,
                    Some(f) => Some(
                        std::fs::File::create(f).map_err(|e| format!("cannot create {f}: {e}"))?,
                    ),
                }
            }
            ".read" | "\\i" => {
                let f = arg(0).ok_or("usage: .read FILE")?;
                if self.depth >= 16 {
                    return Err(format!("{f}: .read nested more than 16 deep"));
                }
                let text =
                    std::fs::read_to_string(f).map_err(|e| format!("cannot read {f}: {e}"))?;
                self.depth += 1;
                let flow = self.run_script(&text);
                self.depth -= 1;
                return Ok(flow);
            }
            _ => return Err(format!("unknown command {cmd}; .help lists them")),
        }
        Ok(Flow::Go)
    }

    /// `.schema`: a table's columns, key, rows and column segments.
    fn describe(&self, table: &str) -> lightning_db::Result<String> {
        let schema = self.db.table_schema(table)?;
        let key = self.db.table_primary_key(table)?;
        let mut s = format!("{table}\n");
        for f in schema.fields() {
            let null = if f.is_nullable() { "" } else { " NOT NULL" };
            s += &format!("  {} {}{null}\n", f.name(), f.data_type());
        }
        match key.is_empty() {
            true => s += "  primary key: none (keyless)\n",
            false => s += &format!("  primary key: ({})\n", key.join(", ")),
        }
        let rows = self.db.sql(&format!(
            "SELECT count(*) FROM \"{}\"",
            table.replace('"', "\"\"")
        ))?;
        let n = cells(&rows)
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|r| r.into_iter().next())
            .unwrap_or_default();
        let segments = self.db.columnar_segment_paths(table)?.len();
        let bytes = self.db.columnar_bytes(table)?;
        s += &format!("  rows: {n}; column segments: {segments} ({bytes} bytes)");
        Ok(s)
    }

    fn print(&mut self, batches: &[RecordBatch]) -> Result<(), String> {
        if batches.is_empty() || batches.iter().all(|b| b.num_columns() == 0) {
            self.write("OK");
            return Ok(());
        }
        let schema = batches[0].schema();
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let rows = || cells(batches);
        let text = match self.mode {
            Mode::Table => {
                let width = terminal_width(self.out.is_none());
                let rows = rows()?;
                let mut t = table(&names, &rows, width);
                t += &format!(
                    "\n({} row{})",
                    rows.len(),
                    if rows.len() == 1 { "" } else { "s" }
                );
                t
            }
            Mode::Markdown => markdown(&names, &rows()?),
            Mode::Line => {
                let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
                let mut s = Vec::new();
                for r in &rows()? {
                    let rec: Vec<String> = names
                        .iter()
                        .zip(r)
                        .map(|(n, v)| format!("{n:>w$} = {v}"))
                        .collect();
                    s.push(rec.join("\n"));
                }
                s.join("\n\n")
            }
            Mode::Csv => {
                let mut w = lightning_db::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new());
                for b in batches {
                    w.write(b).map_err(|e| e.to_string())?;
                }
                String::from_utf8_lossy(&w.into_inner())
                    .trim_end()
                    .to_string()
            }
            Mode::Json => {
                let mut w = lightning_db::arrow::json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, lightning_db::arrow::json::writer::JsonArray>(Vec::new());
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                w.write_batches(&refs).map_err(|e| e.to_string())?;
                w.finish().map_err(|e| e.to_string())?;
                let out = w.into_inner();
                match out.is_empty() {
                    true => "[]".to_string(),
                    false => String::from_utf8_lossy(&out).into_owned(),
                }
            }
        };
        self.write(&text);
        Ok(())
    }
}

/// Every value of `batches` as text (NULL for nulls), row by row.
fn cells(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, String> {
    let opts = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for b in batches {
        let cols = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        for r in 0..b.num_rows() {
            rows.push(cols.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    Ok(rows)
}

/// The terminal's width when writing to one (`COLUMNS`, else 120); otherwise no limit.
fn terminal_width(to_stdout: bool) -> Option<usize> {
    if !to_stdout || !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return None;
    }
    Some(
        std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(120),
    )
}

/// `s` cut to `w` characters, ending in `…` when cut.
fn fit(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        return s.to_string();
    }
    let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
    t.push('…');
    t
}

/// A boxed table. Within `width`, the widest columns are narrowed (values cut with `…`)
/// until the table fits, each keeping at least 8 characters.
fn table(names: &[String], rows: &[Vec<String>], width: Option<usize>) -> String {
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    let mut w: Vec<usize> = names.iter().map(|n| n.chars().count()).collect();
    for r in rows {
        for (c, v) in r.iter().enumerate() {
            w[c] = w[c].max(one_line(v).chars().count());
        }
    }
    if let Some(limit) = width {
        // Borders: "| " + " | " between + " |".
        let frame = 4 + 3 * names.len().saturating_sub(1);
        while w.iter().sum::<usize>() + frame > limit {
            let (i, &m) = w
                .iter()
                .enumerate()
                .max_by_key(|(_, x)| **x)
                .expect("a column");
            if m <= 8 {
                break;
            }
            w[i] = m - 1;
        }
    }
    let line = || {
        let parts: Vec<String> = w.iter().map(|&x| "-".repeat(x + 2)).collect();
        format!("+{}+", parts.join("+"))
    };
    let row = |cells: &[String]| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&w)
            .map(|(v, &x)| format!(" {:<x$} ", fit(&one_line(v), x)))
            .collect();
        format!("|{}|", parts.join("|"))
    };
    let mut out = vec![line(), row(names), line()];
    out.extend(rows.iter().map(|r| row(r)));
    out.push(line());
    out.join("\n")
}

fn markdown(names: &[String], rows: &[Vec<String>]) -> String {
    let esc = |s: &str| s.replace('|', "\\|").replace(['\n', '\r'], " ");
    let row = |cells: &[String]| {
        let parts: Vec<String> = cells.iter().map(|c| esc(c)).collect();
        format!("| {} |", parts.join(" | "))
    };
    let mut out = vec![row(names)];
    out.push(format!("|{}|", vec!["---"; names.len()].join("|")));
    out.extend(rows.iter().map(|r| row(r)));
    out.join("\n")
}

/// Whether `p` holds a database (its `CURRENT` file).
pub fn exists(p: &Path) -> bool {
    p.join("CURRENT").exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_tables_are_cut_to_the_terminal() {
        let names = vec!["id".to_string(), "text".to_string()];
        let rows = vec![vec!["1".to_string(), "x".repeat(300)]];
        let t = table(&names, &rows, Some(60));
        assert!(t.lines().all(|l| l.chars().count() <= 60), "{t}");
        assert!(t.contains('…'));
        let t = table(&names, &rows, None);
        assert!(t.contains(&"x".repeat(300)));
    }
}

//! `lightning-cli` as analysts use DuckDB's shell, driven through the real binary:
//! open-or-create, imports of each format into a new database, scripts that run past
//! failed statements, meta-commands and output modes, and the interactive shell under a
//! pseudo-terminal.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Run the CLI with `args` and `stdin` piped in: (success, stdout, stderr).
fn cli_in(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lightning-cli"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lightning-cli runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn cli(args: &[&str]) -> (bool, String, String) {
    cli_in(args, "")
}

/// A small `t(id, name, score)` in each importable format under `dir`.
fn write_files(dir: &Path) {
    use lightning_db::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
    use lightning_db::arrow::datatypes::{DataType, Field, Schema};
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
    ]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("a"), None, Some("c")])),
            Arc::new(Float64Array::from(vec![Some(1.5), Some(2.5), None])),
        ],
    )
    .unwrap();
    std::fs::write(dir.join("t.csv"), "id,name,score\n1,a,1.5\n2,,2.5\n3,c,\n").unwrap();
    std::fs::write(
        dir.join("t.jsonl"),
        "{\"id\":1,\"name\":\"a\",\"score\":1.5}\n{\"id\":2,\"score\":2.5}\n{\"id\":3,\"name\":\"c\"}\n",
    )
    .unwrap();
    let f = std::fs::File::create(dir.join("t.arrow")).unwrap();
    let mut w = lightning_db::arrow::ipc::writer::FileWriter::try_new(f, &schema).unwrap();
    w.write(&batch).unwrap();
    w.finish().unwrap();
    let f = std::fs::File::create(dir.join("t.parquet")).unwrap();
    let mut w =
        lightning_db::datafusion::parquet::arrow::ArrowWriter::try_new(f, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

#[test]
fn import_of_each_format_creates_the_database_and_sql_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    write_files(dir.path());
    for ext in ["csv", "parquet", "jsonl", "arrow"] {
        let db = dir.path().join(format!("{ext}.db"));
        let db = db.to_str().unwrap();
        let file = dir.path().join(format!("t.{ext}"));
        let (ok, out, err) = cli(&["import", db, file.to_str().unwrap(), "--table", "t"]);
        assert!(ok, "{ext}: {out}{err}");
        assert!(out.contains("imported 3 rows into t"), "{ext}: {out}");
        assert!(err.contains("created a new database at"), "{ext}: {err}");
        let (ok, out, err) = cli(&[
            "sql",
            db,
            "-c",
            "SELECT count(*) AS n, count(name) AS names, sum(score) AS s FROM t",
        ]);
        assert!(ok, "{ext}: {err}");
        assert!(out.contains("| 3 | 2     | 4.0 |"), "{ext}: {out}");
        // A second import into the existing database and table appends; with --key a
        // keyed table is made.
        let (ok, _, err) = cli(&["import", db, file.to_str().unwrap(), "--table", "t"]);
        assert!(ok && !err.contains("created"), "{ext}: {err}");
        let (ok, _, err) = cli(&[
            "import",
            db,
            file.to_str().unwrap(),
            "--table",
            "k",
            "--key",
            "id",
        ]);
        assert!(ok, "{ext}: {err}");
        let (ok, out, _) = cli(&["sql", db, "-c", "\\d k"]);
        assert!(ok && out.contains("primary key: (id)"), "{ext}: {out}");
        let (ok, out, _) = cli(&["sql", db, "-c", "SELECT count(*) FROM t"]);
        assert!(ok && out.contains("| 6 "), "{ext}: {out}");
    }
    // `put` and `sql` create too; a plain path opens the shell.
    let p = dir.path().join("put.db");
    let (ok, _, err) = cli(&["put", p.to_str().unwrap(), "k", "v"]);
    assert!(ok && err.contains("created a new database"), "{err}");
    let p = dir.path().join("shell.db");
    let (ok, out, err) = cli_in(&[p.to_str().unwrap()], "SELECT 40 + 2 AS x;\n");
    assert!(ok && out.contains("| 42 |"), "{out}{err}");
    assert!(err.contains("created a new database"), "{err}");
}

#[test]
fn a_script_runs_every_statement_past_failures_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let script = "CREATE TABLE t (id BIGINT, v VARCHAR, PRIMARY KEY (id));\n\
                  INSERT INTO t VALUES (1, 'one');\n\
                  SELEC broken;\n\
                  INSERT INTO t VALUES (1, 'duplicate');\n\
                  INSERT INTO t\n  VALUES (2, 'two');\n\
                  SELECT count(*) AS n FROM t;\n";
    let (ok, out, err) = cli_in(&["sql", db], script);
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("| 2 |"),
        "the statements after the failures ran: {out}"
    );
    assert!(err.contains("2 statements failed"), "{err}");
    // Each error once, with one prefix.
    assert_eq!(err.matches("error: SQL error:").count(), 1, "{err}");
    assert!(!err.contains("SQL error: SQL error"), "{err}");
    // The same from a file, and a clean script exits 0.
    let f = dir.path().join("s.sql");
    std::fs::write(&f, "SELECT nope_fn(1);\nSELECT 7 AS seven;\n").unwrap();
    let (ok, out, err) = cli(&["sql", db, "-f", f.to_str().unwrap()]);
    assert!(
        !ok && out.contains("| 7 ") && err.contains("1 statement failed"),
        "{out}{err}"
    );
    let (ok, out, err) = cli_in(&["sql", db], "SELECT 1 AS one;\n");
    assert!(ok && out.contains("| 1 "), "{out}{err}");
}

#[test]
fn meta_commands_and_output_modes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let setup = "CREATE TABLE people (id BIGINT, name VARCHAR, PRIMARY KEY (id));\n\
                 CREATE TABLE log (msg VARCHAR);\n\
                 INSERT INTO people VALUES (1, 'ann'), (2, NULL);\n";
    assert!(cli_in(&["sql", db], setup).0);
    let run = |script: &str| {
        let (ok, out, err) = cli_in(&["sql", db], script);
        assert!(ok, "{script}: {out}{err}");
        (out, err)
    };
    let (out, _) = run(".tables\n");
    assert!(out.contains("log\n") && out.contains("people\n"), "{out}");
    assert_eq!(run("\\dt\n").0, out);
    let (out, _) = run(".schema people\n");
    for s in [
        "people",
        "id Int64 NOT NULL",
        "name Utf8",
        "primary key: (id)",
        "rows: 2",
    ] {
        assert!(out.contains(s), "{s}: {out}");
    }
    assert!(run("\\d log\n").0.contains("primary key: none (keyless)"));
    let q = "SELECT id, name FROM people ORDER BY id;\n";
    let (out, _) = run(&format!(".mode csv\n{q}"));
    assert_eq!(out.trim(), "id,name\n1,ann\n2,");
    let (out, _) = run(&format!(".mode json\n{q}"));
    assert_eq!(
        out.trim(),
        r#"[{"id":1,"name":"ann"},{"id":2,"name":null}]"#
    );
    let (out, _) = run(&format!(".mode line\n{q}"));
    assert!(
        out.contains("  id = 1\nname = ann\n\n  id = 2\nname = NULL"),
        "{out}"
    );
    let (out, _) = run(&format!(".mode markdown\n{q}"));
    assert!(
        out.contains("| id | name |\n|---|---|\n| 1 | ann |"),
        "{out}"
    );
    let (_, err) = run(&format!(".timer on\n{q}"));
    assert!(err.contains("Run Time:"), "{err}");
    // .output writes results to a file until switched back; .read runs a file.
    let out_file = dir.path().join("out.csv");
    let (out, _) = run(&format!(
        ".mode csv\n.output {}\n{q}.output\nSELECT 5 AS five;\n",
        out_file.display()
    ));
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap().trim(),
        "id,name\n1,ann\n2,"
    );
    assert_eq!(out.trim(), "five\n5");
    let inc = dir.path().join("inc.sql");
    std::fs::write(
        &inc,
        "INSERT INTO log VALUES ('x');\nSELECT count(*) AS c FROM log;\n",
    )
    .unwrap();
    let (out, _) = run(&format!(".read {}\n", inc.display()));
    assert!(out.contains("| 1 |"), "{out}");
    let (out, _) = run(".help\n");
    for m in [".tables", ".schema", ".mode", ".timer", ".output", ".read"] {
        assert!(out.contains(m), "{m}: {out}");
    }
    // An unknown command or a bad argument is an error, counted, not the end.
    let (ok, out, err) = cli_in(&["sql", db], ".bogus\n.mode nope\nSELECT 3 AS three;\n");
    assert!(
        !ok && out.contains("| 3 ") && err.contains("2 statements failed"),
        "{err}"
    );
    // A file that reads itself stops instead of recursing forever.
    let me = dir.path().join("me.sql");
    std::fs::write(&me, format!(".read {}\n", me.display())).unwrap();
    let (ok, _, err) = cli_in(&["sql", db], &format!(".read {}\n", me.display()));
    assert!(!ok && err.contains("nested"), "{err}");
}

/// The interactive shell under a pseudo-terminal (util-linux `script`): line editing
/// on, a failed statement does not end it, `.quit` does.
#[test]
fn interactive_shell_under_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let cmd = format!(
        "{} {}",
        env!("CARGO_BIN_EXE_lightning-cli"),
        db.to_str().unwrap()
    );
    let mut child = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs");
    let mut stdin = child.stdin.take().unwrap();
    // Typed a line at a time: the line editor discards input typed ahead of its prompt.
    for line in [
        "SELECT nope;",
        "SELECT 40 +",
        "  2 AS answer;",
        ".tables",
        ".quit",
    ] {
        std::thread::sleep(std::time::Duration::from_millis(700));
        writeln!(stdin, "{line}").unwrap();
    }
    std::thread::sleep(std::time::Duration::from_millis(700));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("lightning>"), "{text}");
    assert!(text.contains("error:"), "{text}");
    assert!(text.contains("| 42     |"), "{text}");
    assert!(text.contains("kv"), "{text}");
}

#[test]
fn import_options_csv_dialects_and_replace() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    let f = dir.path().join("semi.csv");
    std::fs::write(&f, "1;alpha;NA\n2;NA;2.5\n").unwrap();
    let (ok, out, err) = cli(&[
        "import",
        db,
        f.to_str().unwrap(),
        "--table",
        "t",
        "--key",
        "column_1",
        "--delimiter",
        ";",
        "--no-header",
        "--null",
        "NA",
    ]);
    assert!(
        ok && out.contains("imported 2 rows") && out.contains("rows/s"),
        "{out}{err}"
    );
    let (ok, out, _) = cli(&[
        "sql",
        db,
        "-c",
        "SELECT count(column_2) AS a, count(column_3) AS b, sum(column_3) AS s FROM t",
    ]);
    assert!(ok && out.contains("| 1 | 1 | 2.5 |"), "{out}");
    // The same keys again: refused as a whole without --replace, upserted with it.
    let g = dir.path().join("again.csv");
    std::fs::write(&g, "3;gamma;1.0\n1;ALPHA;9.0\n").unwrap();
    let args = |replace: bool| {
        let mut a = vec![
            "import",
            db,
            g.to_str().unwrap(),
            "--table",
            "t",
            "--delimiter",
            ";",
            "--no-header",
        ];
        if replace {
            a.push("--replace");
        }
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let a = args(false);
    let (ok, _, err) = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && err.contains("error:"), "{err}");
    let count = || {
        let (_, out, _) = cli(&["sql", db, "-c", "SELECT count(*) AS n FROM t"]);
        out
    };
    assert!(
        count().contains("| 2 |"),
        "nothing of the refused import is written"
    );
    let a = args(true);
    let (ok, _, err) = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert!(count().contains("| 3 |"));
    let (_, out, _) = cli(&["sql", db, "-c", "SELECT column_2 FROM t WHERE column_1 = 1"]);
    assert!(out.contains("ALPHA"), "{out}");
}

#[test]
fn statements_split_at_semicolons_outside_strings_and_comments() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let db = db.to_str().unwrap();
    // Several statements on one line (as `-c` takes them), a `;` inside a string, a
    // quoted identifier and comments, and one statement over two lines.
    let (ok, out, err) = cli(&[
        "sql",
        db,
        "-c",
        "CREATE TABLE t (id BIGINT PRIMARY KEY, \"a;b\" VARCHAR); \
         INSERT INTO t VALUES (1, 'x;y'), (2, 'it''s; -- not a comment'); -- done;\n\
         /* ; */ SELECT count(*) AS n FROM t WHERE \"a;b\" LIKE '%;%'",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("| 2 "), "{out}");
    let (ok, out, err) = cli_in(
        &["sql", db],
        "SELECT 'a;' AS s; SELECT\n  40 + 2 AS n;\nSELECT 3 AS three; SELEC oops;\n",
    );
    assert!(!ok && err.contains("1 statement failed"), "{out}{err}");
    assert!(
        out.contains("| a; ") && out.contains("| 42 ") && out.contains("| 3 "),
        "{out}"
    );
}

#[test]
fn read_only_inspects_without_writing_and_refuses_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let db = path.to_str().unwrap();
    let (ok, _, err) = cli(&[
        "sql",
        db,
        "-c",
        "CREATE TABLE t (id BIGINT PRIMARY KEY, v VARCHAR); INSERT INTO t VALUES (1, 'a'), (2, 'b');",
    ]);
    assert!(ok, "{err}");
    let listing = |p: &Path| {
        let mut v: Vec<(String, Vec<u8>)> = Vec::new();
        let mut stack = vec![p.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let e = e.unwrap().path();
                if e.is_dir() {
                    stack.push(e);
                } else {
                    v.push((e.display().to_string(), std::fs::read(&e).unwrap()));
                }
            }
        }
        v.sort();
        v
    };
    let before = listing(&path);
    // The flag before the command, after it, and with the bare shell form.
    let (ok, out, err) = cli(&[
        "--read-only",
        "sql",
        db,
        "-c",
        "SELECT count(*) AS n FROM t",
    ]);
    assert!(ok && out.contains("| 2 "), "{out}{err}");
    let (ok, out, err) = cli_in(
        &[db, "--read-only"],
        ".tables\nSELECT v FROM t WHERE id = 2;\n",
    );
    assert!(
        ok && out.contains('t') && out.contains("| b "),
        "{out}{err}"
    );
    let (ok, out, err) = cli_in(
        &["sql", db, "--read-only"],
        "INSERT INTO t VALUES (3, 'c');\nDROP TABLE t;\nSELECT count(*) AS n FROM t;\n",
    );
    assert!(!ok && out.contains("| 2 "), "{out}{err}");
    assert_eq!(
        err.matches("the database is open read-only").count(),
        2,
        "{err}"
    );
    assert!(err.contains("2 statements failed"), "{err}");
    let (ok, _, err) = cli(&["--read-only", "put", db, "k", "v"]);
    assert!(!ok && err.contains("read-only"), "{err}");
    // Never creates a database.
    let missing = dir.path().join("missing");
    let (ok, _, err) = cli(&[
        "--read-only",
        "sql",
        missing.to_str().unwrap(),
        "-c",
        "SELECT 1",
    ]);
    assert!(!ok && err.contains("no database found"), "{err}");
    assert!(!missing.exists());
    assert_eq!(
        listing(&path),
        before,
        "a read-only session changed the database"
    );
    // While a read-only session is open, a writer is refused (and the other way round).
    let mut reader = Command::new(env!("CARGO_BIN_EXE_lightning-cli"))
        .args(["--read-only", "sql", db])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (ok, _, err) = cli(&["put", db, "k", "v"]);
    assert!(!ok && err.contains("locked"), "{err}");
    let (ok, out, err) = cli(&[
        "--read-only",
        "sql",
        db,
        "-c",
        "SELECT count(*) AS n FROM t",
    ]);
    assert!(
        ok && out.contains("| 2 "),
        "two readers at once: {out}{err}"
    );
    drop(reader.stdin.take());
    reader.wait().unwrap();
    let (ok, _, err) = cli(&["put", db, "k", "v"]);
    assert!(ok, "{err}");
}

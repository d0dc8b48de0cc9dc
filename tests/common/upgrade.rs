//! Helpers of the upgrade tests (`upgrade`, `upgrade_06`): what a database file holds, and
//! `agent-relay migrate` run on one.

use std::path::Path;
use std::process::Command;

use rusqlite::Connection;

use super::{Json, binary};

/// Every table's rows in a stable order (tables by name, rows by their first column), backups
/// and settings included: the file's content.
pub fn dump(db: &Path) -> Vec<String> {
    let conn = Connection::open(db).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = Vec::new();
    for table in tables {
        let mut statement = conn
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1"))
            .unwrap();
        let width = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                Ok((0..width)
                    .map(|i| format!("{:?}", row.get_ref(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap();
        for row in rows {
            out.push(format!("{table}: {}", row.unwrap()));
        }
    }
    out
}

/// How many rows `table` holds.
pub fn count(db: &Path, table: &str) -> i64 {
    Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

/// Runs `agent-relay migrate --db DB EXTRA`: whether it succeeded, its JSON answer (`null` when
/// stdout is not JSON), and its stderr.
pub fn migrate(db: &Path, extra: &[&str]) -> (bool, Json, String) {
    let out = Command::new(binary())
        .args(["migrate", "--db"])
        .arg(db)
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or(Json::Null),
        stderr,
    )
}

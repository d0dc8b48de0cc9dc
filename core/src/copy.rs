//! Moving a relay between databases (`agent-relay copy --from A --to B`): every table, row for
//! row, ids and their sequences included, from a SQLite file or a PostgreSQL database into a new
//! one of either kind (docs/operations.md, "Moving a relay").
//!
//! The source is read in one snapshot (a running relay on it goes on; what it writes after the
//! snapshot is not in the copy), the target is written in one transaction (all or nothing) after
//! the relay's own `migrate` gave it the current schema. Storage work only: which tables and
//! columns exist is read from the databases' catalogues, never from the relay's rules.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;

use crate::bindings::{SqlDialect, Value};
use crate::embed::{Options, Relay};
use crate::postgres::{self, Postgres};
use crate::store::{Access, Session};

/// One table's rows on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCount {
    pub table: String,
    pub source_rows: u64,
    pub target_rows: u64,
}

/// What [`copy`] did.
#[derive(Debug, Clone)]
pub struct CopyReport {
    pub from: String,
    pub to: String,
    pub tables: Vec<TableCount>,
}

/// Copies the relay at `from` (a SQLite file or `postgres://` URL, at the current schema) into
/// `to`, which must be new: a SQLite file that does not exist yet, or a PostgreSQL database with
/// no tables of the relay's.
///
/// # Errors
/// Either side cannot be opened, the target is not empty, the source needs an upgrade first, a
/// column of the source has no place in the target, or a statement failed (nothing is written
/// then).
pub fn copy(from: &str, to: &str, options: &Options) -> anyhow::Result<CopyReport> {
    anyhow::ensure!(from != to, "--from and --to name the same database");
    check_target_is_new(to, options)?;
    let status = Relay::inspect(from, options.clone())?;
    let pending = status["steps"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        pending == 0,
        "{from} is at schema version {} and needs an upgrade first: agent-relay migrate --db {from}",
        status["fromVersion"]
    );
    let source = Relay::open(from, options.clone())?;
    let target = Relay::open(to, options.clone())?;
    let mut reading = source
        .calls()
        .runtime()
        .backend()
        .begin(Access::Read)
        .map_err(|e| anyhow::anyhow!("reading {}: {e:?}", source.path().display()))?;
    let mut writing = target
        .calls()
        .runtime()
        .backend()
        .begin(Access::Write)
        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", target.path().display()))?;
    let copied = copy_tables(reading.as_mut(), writing.as_mut());
    let _ = reading.finish(false);
    let tables = match copied {
        Ok(tables) => tables,
        Err(error) => {
            let _ = writing.finish(false);
            return Err(error);
        }
    };
    writing
        .finish(true)
        .map_err(|e| anyhow::anyhow!("committing the copy: {e:?}"))?;
    Ok(CopyReport {
        from: source.path().display().to_string(),
        to: target.path().display().to_string(),
        tables,
    })
}

/// Refuses a target that holds anything.
fn check_target_is_new(to: &str, options: &Options) -> anyhow::Result<()> {
    if postgres::is_url(to) {
        let target = Postgres::open(to, &options.postgres)?;
        let tables = target.table_names()?;
        let relay_tables: Vec<&String> = tables.iter().filter(|t| *t != "relay_settings").collect();
        anyhow::ensure!(
            relay_tables.is_empty(),
            "{} is not empty (it has the tables {}); copy only into a new database",
            target.name(),
            relay_tables
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    } else {
        let path = Path::new(to);
        anyhow::ensure!(
            path.symlink_metadata().is_err(),
            "{to} already exists; copy only into a new file"
        );
    }
    Ok(())
}

/// A table as the catalogue describes it.
#[derive(Debug)]
struct Table {
    name: String,
    columns: Vec<String>,
    /// Tables its foreign keys point at.
    parents: BTreeSet<String>,
    /// Its identity column on PostgreSQL (`id` with a sequence), or AUTOINCREMENT on SQLite.
    identity: Option<String>,
}

fn copy_tables(from: &mut dyn Session, to: &mut dyn Session) -> anyhow::Result<Vec<TableCount>> {
    let sources = tables(from).context("reading the source's tables")?;
    let targets = tables(to).context("reading the target's tables")?;
    let source_names: BTreeSet<&str> = sources.keys().map(String::as_str).collect();
    if let Some(missing) = source_names
        .iter()
        .find(|name| !targets.contains_key(**name))
    {
        anyhow::bail!("the target has no table {missing}: is it the same relay version?");
    }
    let order = parents_first(&targets);
    // Empty the target (what `migrate` put there), children first.
    for name in order.iter().rev() {
        run(to, &format!("DELETE FROM {}", quoted(name)), &[])?;
    }
    let mut counts = Vec::new();
    for name in &order {
        let target = &targets[name];
        let Some(source) = sources.get(name) else {
            continue;
        };
        // SQLite's implicit `rowid` is a column of its own on PostgreSQL where the relay
        // orders by it: carried both ways, so the order survives a move.
        let mut columns = source.columns.clone();
        if from.dialect() == SqlDialect::Sqlite && target.columns.iter().any(|c| c == "rowid") {
            columns.push("rowid".to_owned());
        }
        for column in &columns {
            let sqlite_rowid = to.dialect() == SqlDialect::Sqlite && column == "rowid";
            anyhow::ensure!(
                target.columns.contains(column) || sqlite_rowid,
                "the target's table {name} has no column {column}: is it the same relay version?"
            );
        }
        let list = columns
            .iter()
            .map(|c| quoted(c))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = from
            .query(&format!("SELECT {list} FROM {}", quoted(name)), &[])
            .map_err(|e| anyhow::anyhow!("reading {name}: {e:?}"))?;
        let marks = vec!["?"; columns.len()].join(", ");
        let insert = format!("INSERT INTO {} ({list}) VALUES ({marks})", quoted(name));
        for row in &rows.rows {
            run(to, &insert, row).with_context(|| format!("copying a row of {name}"))?;
        }
        counts.push(TableCount {
            table: name.clone(),
            source_rows: count(from, name)?,
            target_rows: count(to, name)?,
        });
    }
    carry_sequences(from, to, &sources, &targets)?;
    if let Some(differs) = counts.iter().find(|c| c.source_rows != c.target_rows) {
        anyhow::bail!(
            "table {} has {} rows in the source but {} in the copy; nothing was written",
            differs.table,
            differs.source_rows,
            differs.target_rows
        );
    }
    Ok(counts)
}

/// Each table with an identity column goes on numbering where the source would have: past the
/// highest id ever handed out there, not only past the ids still present.
fn carry_sequences(
    from: &mut dyn Session,
    to: &mut dyn Session,
    sources: &BTreeMap<String, Table>,
    targets: &BTreeMap<String, Table>,
) -> anyhow::Result<()> {
    for (name, target) in targets {
        let Some(column) = &target.identity else {
            continue;
        };
        let Some(source) = sources.get(name) else {
            continue;
        };
        let last = last_id(from, source, column)?;
        match to.dialect() {
            SqlDialect::Postgres => {
                let sql = format!(
                    "SELECT setval(pg_get_serial_sequence(?, ?), \
                     GREATEST(?, (SELECT COALESCE(MAX({col}), 0) FROM {table}), 1), \
                     (SELECT COUNT(*) FROM {table}) > 0 OR CAST(? AS BIGINT) > 0)",
                    col = quoted(column),
                    table = quoted(name)
                );
                to.query(
                    &sql,
                    &[
                        Value::Text(name.clone()),
                        Value::Text(column.clone()),
                        Value::Integer(last),
                        Value::Integer(last),
                    ],
                )
                .map_err(|e| anyhow::anyhow!("setting the sequence of {name}: {e:?}"))?;
            }
            SqlDialect::Sqlite => {
                if last > 0 {
                    run(
                        to,
                        "UPDATE sqlite_sequence SET seq = MAX(seq, ?) WHERE name = ?",
                        &[Value::Integer(last), Value::Text(name.clone())],
                    )?;
                    run(
                        to,
                        "INSERT INTO sqlite_sequence (name, seq) SELECT ?, ? \
                         WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)",
                        &[
                            Value::Text(name.clone()),
                            Value::Integer(last),
                            Value::Text(name.clone()),
                        ],
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// The highest id the source's table ever handed out (0 when none).
fn last_id(from: &mut dyn Session, table: &Table, column: &str) -> anyhow::Result<i64> {
    let present = first_integer(from.query(
        &format!(
            "SELECT COALESCE(MAX({}), 0) FROM {}",
            quoted(column),
            quoted(&table.name)
        ),
        &[],
    ))?;
    let sequence = match from.dialect() {
        SqlDialect::Sqlite => first_integer(from.query(
            "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = ?",
            &[Value::Text(table.name.clone())],
        ))
        .unwrap_or(0),
        SqlDialect::Postgres => {
            let name = first_text(from.query(
                "SELECT pg_get_serial_sequence(?, ?)",
                &[
                    Value::Text(table.name.clone()),
                    Value::Text(column.to_owned()),
                ],
            ))?;
            match name {
                Some(sequence) => first_integer(from.query(
                    &format!(
                        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {sequence}"
                    ),
                    &[],
                ))?,
                None => 0,
            }
        }
    };
    Ok(present.max(sequence))
}

/// The tables of the session's database, by name: SQLite's virtual tables (a full-text index)
/// and their shadow tables are left out, as the target's own fill themselves from the rows copied.
fn tables(session: &mut dyn Session) -> anyhow::Result<BTreeMap<String, Table>> {
    let mut found = BTreeMap::new();
    match session.dialect() {
        SqlDialect::Sqlite => {
            let rows = session
                .query(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
                     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' \
                     AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' \
                     AND NOT EXISTS (SELECT 1 FROM sqlite_master v WHERE v.type = 'table' \
                         AND v.sql LIKE 'CREATE VIRTUAL TABLE%' \
                         AND sqlite_master.name LIKE v.name || '\\_%' ESCAPE '\\') \
                     ORDER BY name",
                    &[],
                )
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            for row in rows.rows {
                let (Some(Value::Text(name)), ddl) = (row.first(), row.get(1)) else {
                    continue;
                };
                let ddl = match ddl {
                    Some(Value::Text(ddl)) => ddl.clone(),
                    _ => String::new(),
                };
                let columns = columns_of(session, name)?;
                found.insert(
                    name.clone(),
                    Table {
                        name: name.clone(),
                        columns,
                        parents: referenced_in(&ddl),
                        identity: ddl
                            .to_ascii_uppercase()
                            .contains("AUTOINCREMENT")
                            .then(|| "id".to_owned()),
                    },
                );
            }
        }
        SqlDialect::Postgres => {
            let rows = session
                .query(
                    "SELECT table_name::text FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
                     ORDER BY table_name",
                    &[],
                )
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            for row in rows.rows {
                let Some(Value::Text(name)) = row.first() else {
                    continue;
                };
                let columns = columns_of(session, name)?;
                let parents = texts(session.query(
                    "SELECT DISTINCT ccu.table_name::text FROM information_schema.table_constraints tc \
                     JOIN information_schema.constraint_column_usage ccu \
                       ON ccu.constraint_name = tc.constraint_name \
                      AND ccu.constraint_schema = tc.constraint_schema \
                     WHERE tc.constraint_type = 'FOREIGN KEY' AND tc.table_name = ? \
                       AND tc.table_schema = current_schema()",
                    &[Value::Text(name.clone())],
                ))?
                .into_iter()
                .filter(|parent| parent != name)
                .collect();
                let identity = texts(session.query(
                    "SELECT column_name::text FROM information_schema.columns \
                     WHERE table_schema = current_schema() AND table_name = ? \
                       AND (is_identity = 'YES' OR column_default LIKE 'nextval(%') \
                     ORDER BY ordinal_position",
                    &[Value::Text(name.clone())],
                ))?
                .into_iter()
                .next();
                found.insert(
                    name.clone(),
                    Table {
                        name: name.clone(),
                        columns,
                        parents,
                        identity,
                    },
                );
            }
        }
    }
    Ok(found)
}

/// A table's columns, in their order (read off an empty query).
fn columns_of(session: &mut dyn Session, table: &str) -> anyhow::Result<Vec<String>> {
    let rows = session
        .query(&format!("SELECT * FROM {} LIMIT 0", quoted(table)), &[])
        .map_err(|e| anyhow::anyhow!("reading the columns of {table}: {e:?}"))?;
    Ok(rows.columns)
}

/// The tables a SQLite `CREATE TABLE` statement's foreign keys point at.
fn referenced_in(ddl: &str) -> BTreeSet<String> {
    let upper = ddl.to_ascii_uppercase();
    let mut parents = BTreeSet::new();
    let mut rest = upper.as_str();
    let mut offset = 0;
    while let Some(at) = rest.find("REFERENCES") {
        let start = offset + at + "REFERENCES".len();
        let name: String = ddl[start..]
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            parents.insert(name);
        }
        offset = start;
        rest = &upper[start..];
    }
    parents
}

/// The tables in an order where every table comes after the ones it points at.
fn parents_first(tables: &BTreeMap<String, Table>) -> Vec<String> {
    let mut order: Vec<String> = Vec::new();
    let mut placed: BTreeSet<String> = BTreeSet::new();
    while order.len() < tables.len() {
        let before = order.len();
        for (name, table) in tables {
            if placed.contains(name) {
                continue;
            }
            let ready = table
                .parents
                .iter()
                .all(|p| placed.contains(p) || !tables.contains_key(p) || p == name);
            if ready {
                placed.insert(name.clone());
                order.push(name.clone());
            }
        }
        if order.len() == before {
            // A cycle: the rest in name order (their constraints decide).
            for name in tables.keys() {
                if placed.insert(name.clone()) {
                    order.push(name.clone());
                }
            }
        }
    }
    order
}

fn count(session: &mut dyn Session, table: &str) -> anyhow::Result<u64> {
    let n = first_integer(session.query(&format!("SELECT COUNT(*) FROM {}", quoted(table)), &[]))?;
    Ok(u64::try_from(n).unwrap_or(0))
}

fn run(session: &mut dyn Session, sql: &str, params: &[Value]) -> anyhow::Result<()> {
    session
        .execute(sql, params)
        .map(|_| ())
        .map_err(|e| anyhow::anyhow!("{e:?}"))
}

fn first_integer(
    rows: Result<crate::bindings::Rows, crate::bindings::StoreError>,
) -> anyhow::Result<i64> {
    let rows = rows.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(match rows.rows.first().and_then(|row| row.first()) {
        Some(Value::Integer(n)) => *n,
        _ => 0,
    })
}

fn first_text(
    rows: Result<crate::bindings::Rows, crate::bindings::StoreError>,
) -> anyhow::Result<Option<String>> {
    let rows = rows.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(match rows.rows.first().and_then(|row| row.first()) {
        Some(Value::Text(text)) => Some(text.clone()),
        _ => None,
    })
}

fn texts(
    rows: Result<crate::bindings::Rows, crate::bindings::StoreError>,
) -> anyhow::Result<Vec<String>> {
    let rows = rows.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Value::Text(text)) => Some(text),
            _ => None,
        })
        .collect())
}

/// A table or column name as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_come_after_the_ones_they_point_at() {
        let table = |name: &str, parents: &[&str]| {
            (
                name.to_owned(),
                Table {
                    name: name.to_owned(),
                    columns: Vec::new(),
                    parents: parents.iter().map(|p| (*p).to_owned()).collect(),
                    identity: None,
                },
            )
        };
        let tables: BTreeMap<String, Table> = [
            table("a_reads", &["messages", "agents"]),
            table("agents", &[]),
            table("messages", &[]),
            table("bindings", &["channels"]),
            table("channels", &[]),
        ]
        .into_iter()
        .collect();
        let order = parents_first(&tables);
        let at = |name: &str| order.iter().position(|n| n == name);
        assert!(at("agents") < at("a_reads") && at("messages") < at("a_reads"));
        assert!(at("channels") < at("bindings"));
        assert_eq!(order.len(), 5);
        assert_eq!(
            referenced_in(
                "CREATE TABLE x (m INTEGER REFERENCES messages(id), a TEXT references agents (id))"
            ),
            ["agents", "messages"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        );
    }
}

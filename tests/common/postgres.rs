//! The Postgres side of the harness: one fresh database per server, in the cluster that
//! `RELAY_TEST_POSTGRES` names (`tests/postgres/cluster.sh` starts one; `scripts/test.sh` and
//! `tests/postgres/with-cluster.sh` export it), dropped when the server is.

use std::sync::atomic::{AtomicU32, Ordering};

/// The variable naming the cluster the Postgres variants run on: a `postgres://` URL whose user
/// may create databases (its own database is only used to create and drop the test ones).
pub const URL_VARIABLE: &str = "RELAY_TEST_POSTGRES";

/// The cluster's URL; panics, saying how to get one, when the variable is not set: a Postgres
/// variant never passes without running on Postgres.
pub fn cluster_url() -> String {
    match std::env::var(URL_VARIABLE) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "this test runs the relay on PostgreSQL and {URL_VARIABLE} is not set. Run it with a \
             throwaway cluster: `tests/postgres/with-cluster.sh cargo test --release -p \
             agent-relay --test all -- postgres::` (scripts/test.sh does this for the whole \
             suite), or set {URL_VARIABLE}=postgres://USER@HOST:PORT/DB for a server where USER \
             may CREATE DATABASE. `-- sqlite::` runs only the SQLite variants."
        ),
    }
}

/// `url` with its database name replaced by `name` (the query string kept).
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{name}?{query}"),
        None => format!("{host_part}/{name}"),
    }
}

fn admin(cluster: &str) -> postgres::Client {
    postgres::Client::connect(cluster, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test cluster {cluster}: {e}"))
}

/// A database of its own for one server: created empty, dropped (with whatever still holds a
/// connection to it) when this is dropped.
pub struct Database {
    cluster: String,
    name: String,
    /// The URL a server is given with `--db`.
    pub url: String,
}

impl Database {
    pub fn create() -> Database {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let cluster = cluster_url();
        let name = format!(
            "relay_t_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            super::now_ms() % 1_000_000
        );
        admin(&cluster)
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("creating the test database {name}: {e}"));
        let url = with_database(&cluster, &name);
        Database { cluster, name, url }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // Best effort: a leftover database dies with the throwaway cluster.
        if let Ok(mut client) = postgres::Client::connect(&self.cluster, postgres::NoTls) {
            let _ = client.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

#[test]
fn a_test_database_url_keeps_the_cluster_and_its_parameters() {
    assert_eq!(
        with_database("postgres://relay@127.0.0.1:5432/postgres", "t1"),
        "postgres://relay@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgresql://u:p@h/db?sslmode=disable", "t2"),
        "postgresql://u:p@h/t2?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://relay@h:1", "t3"),
        "postgres://relay@h:1/t3"
    );
}

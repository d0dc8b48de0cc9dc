//! The health report (docs/http-api.md §7): one check per thing an operator would want paged about.
//!
//! It runs in a write transaction so that writing a setting proves the database writable. Every
//! count goes through an index (agents by status and last seen, claims by expiry), so the report
//! stays fast however many messages the relay holds. It is open to anonymous callers: monitors
//! should not need a token, and nothing in it names more than agent and orchestrator ids.

use crate::bindings::agent_relay::relay::health_types::{HealthCheck, HealthReport, HealthStatus};
use crate::bindings::agent_relay::relay::store::{self, Value};
use crate::bindings::agent_relay::relay::types::RelayError;
use crate::db;
use crate::{params, settings};

/// The setting the database check writes.
const PROBE_KEY: &str = "health-checked-at";
/// How many ids a check's detail names before it says "and N more".
const NAMED_IDS: usize = 10;

pub fn report(now: i64) -> Result<HealthReport, RelayError> {
    let stale_cutoff = now - settings::number(settings::STALE_TTL_MS)?;
    let checks = vec![
        database(now),
        stale_agents(stale_cutoff)?,
        expired_claims(now)?,
        orchestrators(stale_cutoff)?,
    ];
    let status = checks
        .iter()
        .map(|check| check.status)
        .max_by_key(|status| severity(*status))
        .unwrap_or(HealthStatus::Ok);
    Ok(HealthReport {
        status,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        generated_at: now,
        checks,
    })
}

fn severity(status: HealthStatus) -> u8 {
    match status {
        HealthStatus::Ok => 0,
        HealthStatus::Degraded => 1,
        HealthStatus::Error => 2,
    }
}

fn check(name: &str, status: HealthStatus, detail: String) -> HealthCheck {
    HealthCheck {
        name: name.to_owned(),
        status,
        detail,
    }
}

/// Writable (a setting is written) and intact (`PRAGMA quick_check`). A failure here is the one
/// thing that makes the relay unusable, so it is an error, not a degradation. PostgreSQL checks
/// its own pages and has no page limit of the relay's: there, writable is the whole check.
fn database(now: i64) -> HealthCheck {
    if let Err(e) = store::set_setting(PROBE_KEY, &now.to_string()) {
        return check(
            "database",
            HealthStatus::Error,
            format!("not writable: {e:?}"),
        );
    }
    if db::is_postgres() {
        return check("database", HealthStatus::Ok, "writable".to_owned());
    }
    match store::query("PRAGMA quick_check", &[]) {
        Ok(rows) => {
            let findings: Vec<String> = rows
                .rows
                .iter()
                .filter_map(|row| match row.first() {
                    Some(Value::Text(text)) => Some(text.clone()),
                    _ => None,
                })
                .collect();
            if findings.iter().all(|finding| finding == "ok") {
                space()
            } else {
                check(
                    "database",
                    HealthStatus::Error,
                    format!("quick check found: {}", findings.join("; ")),
                )
            }
        }
        Err(e) => check(
            "database",
            HealthStatus::Error,
            format!("quick check failed: {e:?}"),
        ),
    }
}

/// Below this share of the page limit left free, writes are about to get `storage_full`.
const SPACE_LOW_PERCENT: i64 = 5;

/// The database check after the file proved writable and intact: how much room the page limit
/// (`--max-db-pages`, or SQLite's own ceiling) leaves. Rewriting the probe setting needs no new
/// page, so "writable" alone says nothing about room for new messages.
fn space() -> HealthCheck {
    let pragma = |name: &str| -> Option<i64> {
        let rows = store::query(&format!("PRAGMA {name}"), &[]).ok()?;
        match rows.rows.first()?.first()? {
            Value::Integer(n) => Some(*n),
            _ => None,
        }
    };
    let (Some(pages), Some(limit), Some(free)) = (
        pragma("page_count"),
        pragma("max_page_count"),
        pragma("freelist_count"),
    ) else {
        return check(
            "database",
            HealthStatus::Ok,
            "writable; quick check ok".to_owned(),
        );
    };
    let room = limit.saturating_sub(pages).saturating_add(free);
    if room.saturating_mul(100) < limit.saturating_mul(SPACE_LOW_PERCENT) {
        check(
            "database",
            HealthStatus::Degraded,
            format!(
                "storage full or nearly: {room} of {limit} pages left (writes may get storage_full)"
            ),
        )
    } else {
        check(
            "database",
            HealthStatus::Ok,
            "writable; quick check ok".to_owned(),
        )
    }
}

/// Ids as a short list for a check's detail.
fn named(ids: &[String], total: i64) -> String {
    let shown = ids.join(", ");
    let more = total - i64::try_from(ids.len()).unwrap_or(total);
    if more > 0 {
        format!("{shown} and {more} more")
    } else {
        shown
    }
}

/// Agents not seen within the stale TTL that are still listed as online or busy: the reaper has
/// not caught up with them.
fn stale_agents(cutoff: i64) -> Result<HealthCheck, RelayError> {
    let filter = format!("FROM agents WHERE {}", crate::agents::reapable());
    let total = count(&format!("SELECT COUNT(*) AS n {filter}"), &params![cutoff])?;
    if total == 0 {
        return Ok(check(
            "stale-agents",
            HealthStatus::Ok,
            "every online agent was seen within the stale TTL".to_owned(),
        ));
    }
    let ids = ids(
        &format!("SELECT id {filter} ORDER BY last_seen LIMIT {NAMED_IDS}"),
        &params![cutoff],
    )?;
    Ok(check(
        "stale-agents",
        HealthStatus::Degraded,
        format!(
            "{total} agent(s) online but not seen within the stale TTL: {}",
            named(&ids, total)
        ),
    ))
}

/// Claims whose lease ran out but that the reaper has not released yet, on messages and tasks.
fn expired_claims(now: i64) -> Result<HealthCheck, RelayError> {
    let messages = count(
        "SELECT COUNT(*) AS n FROM messages
         WHERE claimed_by IS NOT NULL AND claim_expires_at <= ?",
        &params![now],
    )?;
    let tasks = count(
        "SELECT COUNT(*) AS n FROM tasks WHERE status = 'claimed' AND claim_expires_at <= ?",
        &params![now],
    )?;
    Ok(if messages + tasks == 0 {
        check(
            "expired-claims",
            HealthStatus::Ok,
            "no expired claim is waiting to be released".to_owned(),
        )
    } else {
        check(
            "expired-claims",
            HealthStatus::Degraded,
            format!(
                "{messages} message claim(s) and {tasks} task claim(s) expired but not released"
            ),
        )
    })
}

/// Orchestrators that are offline or not seen within the stale TTL. The table belongs to the
/// orchestrators domain; a relay without it simply has none.
fn orchestrators(cutoff: i64) -> Result<HealthCheck, RelayError> {
    let exists = count(
        if db::is_postgres() {
            "SELECT COUNT(*) AS n FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = 'orchestrators'"
        } else {
            "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'orchestrators'"
        },
        &[],
    )? > 0;
    if !exists {
        return Ok(check(
            "orchestrators",
            HealthStatus::Ok,
            "no orchestrators table: none registered".to_owned(),
        ));
    }
    let filter = "FROM orchestrators WHERE status = 'offline' OR last_seen < ?";
    let registered = count("SELECT COUNT(*) AS n FROM orchestrators", &[])?;
    let offline = count(&format!("SELECT COUNT(*) AS n {filter}"), &params![cutoff])?;
    if offline == 0 {
        return Ok(check(
            "orchestrators",
            HealthStatus::Ok,
            format!("{registered} orchestrator(s) registered, none offline"),
        ));
    }
    let ids = ids(
        &format!("SELECT id {filter} ORDER BY id LIMIT {NAMED_IDS}"),
        &params![cutoff],
    )?;
    Ok(check(
        "orchestrators",
        HealthStatus::Degraded,
        format!(
            "{offline} of {registered} orchestrator(s) offline or not seen within the stale TTL: {}",
            named(&ids, offline)
        ),
    ))
}

fn count(sql: &str, values: &[Value]) -> Result<i64, RelayError> {
    Ok(db::query_one(sql, values)?
        .map(|row| row.int("n"))
        .transpose()?
        .unwrap_or(0))
}

fn ids(sql: &str, values: &[Value]) -> Result<Vec<String>, RelayError> {
    db::query(sql, values)?
        .iter()
        .map(|row| row.text("id"))
        .collect()
}

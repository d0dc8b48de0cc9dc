//! File reservations (docs/http-api.md, "Reservations"; docs/reservations.md): an agent declares,
//! with a lease, which paths of a project it works on. Others see the overlap (the conflicts)
//! before they start; an exclusive reservation overlapping another agent's exclusive one is
//! refused unless forced; the commit guard asks `check-paths` before a commit.
//!
//! A reservation is live from its creation until it expires (`expires-at`, renewed by its agent)
//! or is released: by its agent or the operator, by the reaper when its agent goes offline, or
//! when its agent is deleted. Each change is an activity event, the agent as its actor.

use serde_json::{Value as Json, json};

use crate::agents;
use crate::auth::{self, Identity};
use crate::bindings::agent_relay::relay::reservation_types::{
    CheckAnswer, CheckPathsInput, ReleasePathsInput, ReleaseReservationInput,
    RenewReservationInput, Reservation, ReservationAnswer, ReservationConflict, ReservationOutcome,
    ReservationQuery, ReserveInput,
};

use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{Caller, RelayError};
use crate::db::{self, Row};
use crate::error::{conflict, forbidden, invalid, not_found, too_large};
use crate::input::{self, MAX_SHORT_TEXT};
use crate::{activity, globs, params};

/// Patterns one reservation may hold.
pub const MAX_PATTERNS: usize = 100;
/// Paths one check may ask about (a commit's staged files).
pub const MAX_CHECKED_PATHS: usize = 10_000;
pub const MIN_TTL_MS: i64 = 1_000;
pub const MAX_TTL_MS: i64 = 7 * 24 * 60 * 60 * 1_000;
pub const DEFAULT_TTL_MS: i64 = 30 * 60 * 1_000;
/// The longest project key.
pub const MAX_PROJECT: usize = 1_000;
/// The most conflicts an answer lists (`blocked` counts them all).
const MAX_CONFLICTS: usize = 200;
/// The most live reservations of a project one answer compares against.
const MAX_COMPARED: i64 = 5_000;
const DEFAULT_LIMIT: u32 = 100;

const COLUMNS: &str = "id, project, agent_id, paths, exclusive, reason, forced, ttl_ms, \
    expires_at, released_at, created_at, updated_at";

fn from_row(row: &Row) -> Result<Reservation, RelayError> {
    Ok(Reservation {
        id: row.int("id")?,
        project: row.text("project")?,
        agent_id: row.text("agent_id")?,
        paths: row.string_list("paths")?,
        exclusive: row.flag("exclusive")?,
        reason: row.opt_text("reason")?,
        forced: row.flag("forced")?,
        ttl_ms: row.int("ttl_ms")?,
        expires_at: row.int("expires_at")?,
        released_at: row.opt_int("released_at")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
    })
}

fn require(id: i64) -> Result<Reservation, RelayError> {
    db::query_one(
        &format!("SELECT {COLUMNS} FROM reservations WHERE id = ?"),
        &params![id],
    )?
    .map(|row| from_row(&row))
    .transpose()?
    .ok_or_else(|| not_found(format!("reservation {id} does not exist")))
}

fn is_live(reservation: &Reservation, now: i64) -> bool {
    reservation.released_at.is_none() && reservation.expires_at > now
}

/// The project key: a repository's identity, any short text.
fn parse_project(project: &str) -> Result<&str, RelayError> {
    if project.trim().is_empty() {
        return Err(invalid(
            "project is empty: name the repository (RELAY_PROJECT, its origin URL or its folder)",
        ));
    }
    if project.chars().any(char::is_control) {
        return Err(invalid("project holds a control character"));
    }
    input::text("project", project, MAX_PROJECT)
}

/// Each pattern checked and normalised, duplicates dropped; between 1 and `max` of them.
fn parse_patterns(field: &str, paths: &[String], max: usize) -> Result<Vec<String>, RelayError> {
    if paths.is_empty() {
        return Err(invalid(format!("{field} is empty: name at least one path")));
    }
    if paths.len() > max {
        return Err(too_large(format!(
            "{field} has {} entries; at most {max}",
            paths.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(paths.len());
    for (i, path) in paths.iter().enumerate() {
        let normal = globs::normalise(path)
            .map_err(|problem| invalid(format!("{field}[{i}] ({path:?}) {problem}")))?;
        if !out.contains(&normal) {
            out.push(normal);
        }
    }
    Ok(out)
}

fn parse_ttl(ttl_ms: Option<i64>) -> Result<Option<i64>, RelayError> {
    match ttl_ms {
        Some(ttl) if !(MIN_TTL_MS..=MAX_TTL_MS).contains(&ttl) => Err(invalid(format!(
            "ttlMs must be between {MIN_TTL_MS} (1 second) and {MAX_TTL_MS} (7 days); got {ttl}"
        ))),
        other => Ok(other),
    }
}

fn parse_reason(reason: Option<&str>) -> Result<Option<&str>, RelayError> {
    reason
        .map(|reason| input::text("reason", reason, MAX_SHORT_TEXT))
        .transpose()
}

/// An activity event about a reservation, the agent as its actor.
fn note(reservation: &Reservation, action: &str, data: Json, now: i64) -> Result<(), RelayError> {
    let mut data = match data {
        Json::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    data.insert("reservationId".to_owned(), json!(reservation.id));
    data.insert("project".to_owned(), json!(reservation.project));
    data.insert("paths".to_owned(), json!(reservation.paths));
    data.insert("exclusive".to_owned(), json!(reservation.exclusive));
    activity::note(
        &reservation.agent_id,
        action,
        &format!("reservation {}", reservation.id),
        &data,
        now,
    )
}

/// Other agents' live reservations in `project` overlapping `paths`: one conflict per asked path
/// and reservation, at most `MAX_CONFLICTS` listed; and whether any of them is exclusive.
fn conflicts_with(
    project: &str,
    agent_id: Option<&str>,
    paths: &[String],
    now: i64,
) -> Result<(Vec<ReservationConflict>, bool), RelayError> {
    let held: Vec<Reservation> = db::query(
        &format!(
            "SELECT {COLUMNS} FROM reservations
             WHERE project = ? AND released_at IS NULL AND expires_at > ? AND agent_id != ?
             ORDER BY id LIMIT ?"
        ),
        &params![project, now, agent_id.unwrap_or(""), MAX_COMPARED],
    )?
    .iter()
    .map(from_row)
    .collect::<Result<_, _>>()?;
    let mut conflicts = Vec::new();
    let mut exclusive = false;
    for reservation in &held {
        for path in paths {
            let Some(pattern) = reservation
                .paths
                .iter()
                .find(|pattern| globs::overlap(path, pattern))
            else {
                continue;
            };
            exclusive |= reservation.exclusive;
            if conflicts.len() < MAX_CONFLICTS {
                conflicts.push(ReservationConflict {
                    reservation_id: reservation.id,
                    agent_id: reservation.agent_id.clone(),
                    path: path.clone(),
                    held: pattern.clone(),
                    exclusive: reservation.exclusive,
                    reason: reservation.reason.clone(),
                    expires_at: reservation.expires_at,
                });
            }
        }
    }
    Ok((conflicts, exclusive))
}

/// Reserves paths for an agent: refused (nothing stored) when exclusive and overlapping another
/// agent's exclusive reservation, unless forced.
pub fn reserve(
    caller: &Caller,
    input: &ReserveInput,
    now: i64,
) -> Result<ReservationAnswer, RelayError> {
    input::id("agentId", &input.agent_id)?;
    let project = parse_project(&input.project)?;
    let paths = parse_patterns("paths", &input.paths, MAX_PATTERNS)?;
    let ttl = parse_ttl(input.ttl_ms)?.unwrap_or(DEFAULT_TTL_MS);
    let reason = parse_reason(input.reason.as_deref())?;
    agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let exclusive = input.exclusive.unwrap_or(true);
    let (conflicts, others_exclusive) =
        conflicts_with(project, Some(&input.agent_id), &paths, now)?;
    let blocked = exclusive && others_exclusive;
    if blocked && !input.force.unwrap_or(false) {
        return Ok(ReservationAnswer {
            outcome: ReservationOutcome::Refused,
            reservation: None,
            conflicts,
        });
    }
    let id = db::insert_returning_id(
        "INSERT INTO reservations (project, agent_id, paths, exclusive, reason, forced, ttl_ms,
             expires_at, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        &params![
            project,
            input.agent_id.as_str(),
            db::to_json_list(&paths),
            exclusive,
            reason,
            blocked,
            ttl,
            now.saturating_add(ttl),
            now,
            now
        ],
    )?;
    let reservation = require(id)?;
    let holders: Vec<&str> = conflicts.iter().map(|c| c.agent_id.as_str()).collect();
    note(
        &reservation,
        if blocked {
            "reservation.forced"
        } else {
            "reservation.created"
        },
        json!({"reason": reservation.reason, "expiresAt": reservation.expires_at,
               "overlapping": holders}),
        now,
    )?;
    Ok(ReservationAnswer {
        outcome: ReservationOutcome::Granted,
        reservation: Some(reservation),
        conflicts,
    })
}

/// The reservation `id` as `agent_id` (the caller itself, or the operator for it) may act on it.
fn held_by(
    caller: &Caller,
    id: i64,
    agent_id: &str,
    instance_id: Option<&str>,
    epoch: Option<i64>,
) -> Result<Reservation, RelayError> {
    agents::acting(caller, agent_id, instance_id, epoch)?;
    let reservation = require(id)?;
    if reservation.agent_id != agent_id {
        return Err(forbidden(format!(
            "reservation {id} is held by {}, not {agent_id}",
            reservation.agent_id
        )));
    }
    Ok(reservation)
}

/// Extends a live reservation from now, by `ttl-ms` or its own length.
pub fn renew(
    caller: &Caller,
    id: i64,
    input: &RenewReservationInput,
    now: i64,
) -> Result<Reservation, RelayError> {
    let ttl = parse_ttl(input.ttl_ms)?;
    let reservation = held_by(
        caller,
        id,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    if !is_live(&reservation, now) {
        let how = if reservation.released_at.is_some() {
            "was released"
        } else {
            "has expired"
        };
        return Err(conflict(format!(
            "reservation {id} {how}; reserve the paths again"
        )));
    }
    let ttl = ttl.unwrap_or(reservation.ttl_ms);
    db::execute(
        "UPDATE reservations SET ttl_ms = ?2, expires_at = ?3, updated_at = ?4 WHERE id = ?1",
        &params![id, ttl, now.saturating_add(ttl), now],
    )?;
    let reservation = require(id)?;
    note(
        &reservation,
        "reservation.renewed",
        json!({"expiresAt": reservation.expires_at}),
        now,
    )?;
    Ok(reservation)
}

/// Releases one reservation; releasing it again answers it as it is.
pub fn release(
    caller: &Caller,
    id: i64,
    input: &ReleaseReservationInput,
    now: i64,
) -> Result<Reservation, RelayError> {
    let reservation = held_by(
        caller,
        id,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    if reservation.released_at.is_some() {
        return Ok(reservation);
    }
    end(reservation, "released", now)
}

fn end(reservation: Reservation, why: &str, now: i64) -> Result<Reservation, RelayError> {
    db::execute(
        "UPDATE reservations SET released_at = ?2, updated_at = ?2
         WHERE id = ?1 AND released_at IS NULL",
        &params![reservation.id, now],
    )?;
    let reservation = require(reservation.id)?;
    note(
        &reservation,
        "reservation.released",
        json!({"why": why, "reason": reservation.reason}),
        now,
    )?;
    Ok(reservation)
}

/// Releases an agent's live reservations of a project: those holding one of `paths`, or all.
pub fn release_paths(
    caller: &Caller,
    input: &ReleasePathsInput,
    now: i64,
) -> Result<Vec<Reservation>, RelayError> {
    input::id("agentId", &input.agent_id)?;
    let project = parse_project(&input.project)?;
    let paths = input
        .paths
        .as_deref()
        .map(|paths| parse_patterns("paths", paths, MAX_PATTERNS))
        .transpose()?;
    agents::acting(
        caller,
        &input.agent_id,
        input.instance_id.as_deref(),
        input.epoch,
    )?;
    let live: Vec<Reservation> = db::query(
        &format!(
            "SELECT {COLUMNS} FROM reservations
             WHERE project = ? AND agent_id = ? AND released_at IS NULL AND expires_at > ?
             ORDER BY id"
        ),
        &params![project, input.agent_id.as_str(), now],
    )?
    .iter()
    .map(from_row)
    .collect::<Result<_, _>>()?;
    live.into_iter()
        .filter(|reservation| {
            paths
                .as_ref()
                .is_none_or(|paths| reservation.paths.iter().any(|p| paths.contains(p)))
        })
        .map(|reservation| end(reservation, "released", now))
        .collect()
}

/// Releases every live reservation of an agent (gone offline, or deleted): `why` says which.
pub fn release_all_of(agent_id: &str, why: &str, now: i64) -> Result<u32, RelayError> {
    let live: Vec<Reservation> = db::query(
        &format!(
            "SELECT {COLUMNS} FROM reservations
             WHERE agent_id = ? AND released_at IS NULL AND expires_at > ? ORDER BY id"
        ),
        &params![agent_id, now],
    )?
    .iter()
    .map(from_row)
    .collect::<Result<_, _>>()?;
    let count = u32::try_from(live.len()).unwrap_or(u32::MAX);
    for reservation in live {
        end(reservation, why, now)?;
    }
    Ok(count)
}

/// Live reservations in id order; any agent may see them all (that is what they are for).
pub fn list(
    caller: &Caller,
    query: &ReservationQuery,
    now: i64,
) -> Result<Vec<Reservation>, RelayError> {
    auth::identify(caller)?;
    let project = query.project.as_deref().map(parse_project).transpose()?;
    let agent_id = query
        .holder
        .as_deref()
        .map(|id| input::id("holder", id))
        .transpose()?;
    let path = query
        .path
        .as_ref()
        .map(|path| {
            globs::normalise(path).map_err(|problem| invalid(format!("path ({path:?}) {problem}")))
        })
        .transpose()?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, db::MAX_LIMIT)?;
    let mut sql =
        format!("SELECT {COLUMNS} FROM reservations WHERE released_at IS NULL AND expires_at > ?");
    let mut values: Vec<Value> = vec![Value::from(now)];
    if let Some(project) = project {
        sql.push_str(" AND project = ?");
        values.push(Value::from(project));
    }
    if let Some(agent_id) = agent_id {
        sql.push_str(" AND agent_id = ?");
        values.push(Value::from(agent_id));
    }
    if let Some(after) = query.after {
        sql.push_str(" AND id > ?");
        values.push(Value::from(after));
    }
    sql.push_str(" ORDER BY id LIMIT ?");
    let Some(path) = path else {
        values.push(Value::from(limit));
        return db::query_page(&sql, &values)?
            .iter()
            .map(from_row)
            .collect();
    };
    // The overlap is decided here, not in SQL: compare the live ones, keep a page of the hits.
    values.push(Value::from(MAX_COMPARED));
    let mut page = Vec::new();
    for row in db::query(&sql, &values)? {
        let reservation = from_row(&row)?;
        if reservation.paths.iter().any(|p| globs::overlap(&path, p)) {
            page.push(reservation);
            if i64::try_from(page.len()).unwrap_or(i64::MAX) >= limit {
                break;
            }
        }
    }
    Ok(page)
}

/// The commit guard's question: do these paths overlap other agents' live reservations, and is
/// one of those exclusive (the commit is then refused)?
pub fn check(
    caller: &Caller,
    input: &CheckPathsInput,
    now: i64,
) -> Result<CheckAnswer, RelayError> {
    let project = parse_project(&input.project)?;
    let paths = parse_patterns("paths", &input.paths, MAX_CHECKED_PATHS)?;
    let committer = match (auth::identify(caller)?, &input.agent_id) {
        (Identity::Agent(me), Some(asked)) if *asked != me => {
            return Err(forbidden(format!(
                "the token belongs to agent {me}; it cannot check paths as {asked}"
            )));
        }
        (Identity::Agent(me), _) => Some(me),
        (Identity::Operator, asked) => asked
            .as_deref()
            .map(|id| input::id("agentId", id).map(str::to_owned))
            .transpose()?,
    };
    let (conflicts, blocked) = conflicts_with(project, committer.as_deref(), &paths, now)?;
    Ok(CheckAnswer { blocked, conflicts })
}

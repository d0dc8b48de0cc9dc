//! Full-text search over the subject and body of the messages a caller may read (docs/http-api.md,
//! "Search"), ranked, paged, with highlighted snippets.
//!
//! The query is the relay's own small language, parsed here: words, `"phrases"`, `prefix*`,
//! `-excluded`, `a OR b`. It is written out for the backend, so the database never sees the
//! caller's syntax and a malformed query is a 400 naming the problem. SQLite searches its FTS5
//! table `message_search` (kept in step with `messages` by triggers, in the same transaction as
//! the message); PostgreSQL a `tsvector` of the same text under a GIN index (schema step 9).

use crate::auth;
use crate::bindings::agent_relay::relay::search_types::{SearchHit, SearchQuery};
use crate::bindings::agent_relay::relay::store::Value;
use crate::bindings::agent_relay::relay::types::{Caller, RelayError};
use crate::db;
use crate::error::{invalid, too_large};
use crate::messages;

pub const MAX_QUERY: usize = 500;
pub const MAX_TERMS: usize = 16;
pub const MAX_OFFSET: u32 = 10_000;
const DEFAULT_LIMIT: u32 = 20;
/// The most matches one search ranks: the newest of those the caller may read.
const MAX_RANKED: i64 = 5_000;
pub const MAX_LIMIT: u32 = 100;
/// What marks a found word in a snippet.
const MARK: &str = "**";

/// One term of a query: its words (a phrase when several), the last one a prefix or not.
#[derive(Debug, Clone, PartialEq)]
struct Term {
    words: Vec<String>,
    prefix: bool,
}

/// A parsed query: groups that must all match (each any of its terms), and excluded terms.
#[derive(Debug, Default)]
struct Parsed {
    all: Vec<Vec<Term>>,
    none: Vec<Term>,
}

fn parse(q: &str) -> Result<Parsed, RelayError> {
    if q.trim().is_empty() {
        return Err(invalid("q is empty: give a word to search for"));
    }
    if q.chars().count() > MAX_QUERY {
        return Err(too_large(format!(
            "q is longer than {MAX_QUERY} characters"
        )));
    }
    // Raw items: (text, quoted, excluded) or OR.
    let mut items: Vec<Option<(String, bool, bool)>> = Vec::new();
    let mut chars = q.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let excluded = c == '-';
        if excluded {
            chars.next();
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut text = String::new();
            let mut closed = false;
            for c in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                text.push(c);
            }
            if !closed {
                return Err(invalid("q has an unclosed quote (\")"));
            }
            if chars.peek() == Some(&'*') {
                chars.next();
                text.push('*');
            }
            items.push(Some((text, true, excluded)));
            continue;
        }
        let mut text = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() || c == '"' {
                break;
            }
            text.push(c);
            chars.next();
        }
        if text == "OR" && !excluded {
            items.push(None);
        } else {
            items.push(Some((text, false, excluded)));
        }
    }
    let mut parsed = Parsed::default();
    let mut joining = false;
    for (i, item) in items.iter().enumerate() {
        let Some((text, quoted, excluded)) = item else {
            let before = i.checked_sub(1).and_then(|b| items.get(b));
            let after = items.get(i + 1);
            let term_at = |item: Option<&Option<(String, bool, bool)>>| {
                matches!(item, Some(Some((_, _, false))))
            };
            if !term_at(before) || !term_at(after) {
                return Err(invalid(
                    "q: OR needs a word on each side (an excluded -word cannot be one)",
                ));
            }
            joining = true;
            continue;
        };
        let prefix = text.ends_with('*');
        let words: Vec<String> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        if words.is_empty() {
            let shown = if *quoted {
                format!("\"{text}\"")
            } else {
                text.clone()
            };
            return Err(invalid(format!(
                "q: {shown} has no letters or digits to search for"
            )));
        }
        let term = Term { words, prefix };
        if *excluded {
            parsed.none.push(term);
        } else if joining {
            if let Some(group) = parsed.all.last_mut() {
                group.push(term);
            }
            joining = false;
        } else {
            parsed.all.push(vec![term]);
        }
    }
    let terms = parsed.all.iter().map(Vec::len).sum::<usize>() + parsed.none.len();
    if terms > MAX_TERMS {
        return Err(too_large(format!(
            "q has {terms} terms; at most {MAX_TERMS}"
        )));
    }
    if parsed.all.is_empty() {
        return Err(invalid(
            "q needs at least one word that is not excluded (-word)",
        ));
    }
    Ok(parsed)
}

/// The query in FTS5's syntax: each term a quoted phrase (its words are letters and digits
/// only), a prefix marked by `*` after it.
fn fts5(parsed: &Parsed) -> String {
    let term = |t: &Term| {
        format!(
            "\"{}\"{}",
            t.words.join(" "),
            if t.prefix { " *" } else { "" }
        )
    };
    let groups: Vec<String> = parsed
        .all
        .iter()
        .map(|group| {
            let any: Vec<String> = group.iter().map(term).collect();
            format!("({})", any.join(" OR "))
        })
        .collect();
    let mut out = format!("({})", groups.join(" AND "));
    for t in &parsed.none {
        out.push_str(&format!(" NOT {}", term(t)));
    }
    out
}

/// The query as PostgreSQL's `to_tsquery` text: a phrase's words joined by `<->`, a prefix
/// `:*`, `&`, `|` and `!`.
fn tsquery(parsed: &Parsed) -> String {
    let term = |t: &Term| {
        let last = t.words.len() - 1;
        let words: Vec<String> = t
            .words
            .iter()
            .enumerate()
            .map(|(i, w)| format!("'{w}'{}", if t.prefix && i == last { ":*" } else { "" }))
            .collect();
        format!("({})", words.join(" <-> "))
    };
    let mut parts: Vec<String> = parsed
        .all
        .iter()
        .map(|group| {
            let any: Vec<String> = group.iter().map(term).collect();
            format!("({})", any.join(" | "))
        })
        .collect();
    parts.extend(parsed.none.iter().map(|t| format!("!{}", term(t))));
    parts.join(" & ")
}

/// The text searched on PostgreSQL; the GIN index of schema step 9 is on exactly this.
const PG_DOCUMENT: &str = "to_tsvector('simple', COALESCE(m.subject, '') || ' ' || m.body)";

/// The best matches first, of the messages the caller may read.
pub fn search(caller: &Caller, query: &SearchQuery) -> Result<Vec<SearchHit>, RelayError> {
    let identity = auth::identify(caller)?;
    let parsed = parse(&query.q)?;
    let limit = db::page_limit(query.limit, DEFAULT_LIMIT, MAX_LIMIT)?;
    let offset = query.offset.unwrap_or(0);
    if offset > MAX_OFFSET {
        return Err(invalid(format!(
            "offset must be at most {MAX_OFFSET}; narrow the query instead"
        )));
    }
    let (filter, filter_values) = messages::readable_by(&identity)?;
    let postgres = db::is_postgres();
    let text = if postgres {
        tsquery(&parsed)
    } else {
        fts5(&parsed)
    };
    // The newest `MAX_RANKED` matches the caller may read are ranked; a query matching more
    // (a word in every message) is bounded by that, not by the size of the relay.
    let (sql, mut values) = if postgres {
        (
            format!(
                "SELECT c.id AS id, CAST(ts_rank(to_tsvector('simple', COALESCE(c.subject, '') || ' ' || c.body),
                     to_tsquery('simple', ?)) AS DOUBLE PRECISION) AS score
                 FROM (SELECT m.id, m.subject, m.body FROM messages m
                       WHERE {PG_DOCUMENT} @@ to_tsquery('simple', ?) AND {filter}
                       ORDER BY m.id DESC LIMIT ?) c
                 ORDER BY score DESC, c.id DESC LIMIT ? OFFSET ?"
            ),
            vec![Value::from(text.as_str()), Value::from(text.as_str())],
        )
    } else {
        (
            format!(
                "SELECT m.id AS id, -bm25(message_search, 2.0, 1.0) AS score
                 FROM message_search JOIN messages m ON m.id = message_search.rowid
                 WHERE message_search MATCH ?1 AND {filter} AND message_search.rowid >=
                     (SELECT COALESCE(MIN(id), 0) FROM
                        (SELECT m.id AS id FROM message_search
                         JOIN messages m ON m.id = message_search.rowid
                         WHERE message_search MATCH ?1 AND {filter}
                         ORDER BY message_search.rowid DESC LIMIT ?))
                 ORDER BY score DESC, m.id DESC LIMIT ? OFFSET ?"
            ),
            // The caller's filter twice: for the matches ranked, and for the newest of them.
            [vec![Value::from(text.as_str())], filter_values.clone()].concat(),
        )
    };
    values.extend(filter_values);
    values.push(Value::from(MAX_RANKED));
    values.push(Value::from(limit));
    values.push(Value::from(i64::from(offset)));
    let ranked: Vec<(i64, f64)> = db::query(&sql, &values)?
        .iter()
        .map(|row| Ok((row.int("id")?, row.real("score")?)))
        .collect::<Result<_, RelayError>>()?;
    let ids: Vec<i64> = ranked.iter().map(|(id, _)| *id).collect();
    let snippets = snippets(&text, &ids)?;
    let found = messages::page_of(&ids)?;
    Ok(found
        .into_iter()
        .zip(ranked)
        .map(|(message, (id, score))| SearchHit {
            snippet: snippets
                .iter()
                .find(|(of, _)| *of == id)
                .map(|(_, s)| s.clone())
                .unwrap_or_default(),
            message,
            score,
        })
        .collect())
}

/// Each page message's snippet: where the words occur in its subject or body, marked.
fn snippets(text: &str, ids: &[i64]) -> Result<Vec<(i64, String)>, RelayError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let placeholders = vec!["?"; ids.len()].join(", ");
    let sql = if db::is_postgres() {
        format!(
            "SELECT m.id AS id, ts_headline('simple', COALESCE(m.subject, '') || ' ' || m.body,
                 to_tsquery('simple', ?),
                 'StartSel=\"{MARK}\", StopSel=\"{MARK}\", MaxWords=24, MinWords=8, \
                  MaxFragments=2, FragmentDelimiter=\" … \"') AS snippet
             FROM messages m WHERE m.id IN ({placeholders})"
        )
    } else {
        format!(
            "SELECT rowid AS id, snippet(message_search, -1, '{MARK}', '{MARK}', '…', 16) AS snippet
             FROM message_search WHERE message_search MATCH ? AND rowid IN ({placeholders})"
        )
    };
    let mut values = vec![Value::from(text)];
    values.extend(ids.iter().copied().map(Value::from));
    db::query(&sql, &values)?
        .iter()
        .map(|row| Ok((row.int("id")?, row.opt_text("snippet")?.unwrap_or_default())))
        .collect()
}

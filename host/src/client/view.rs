//! The views for people: tables of messages, agents and tasks, and a message in full.

use std::fmt::Write as _;

use serde_json::Value as Json;

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// How long ago `at` was, shortly: `12s`, `4m`, `3h`, `2d`.
pub fn age(at: i64, now: i64) -> String {
    span((now - at).max(0))
}

/// A span of milliseconds, shortly.
pub fn span(ms: i64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// Text from the relay made safe to print on one line: every control character (C0 with
/// newline and ESC, DEL, C1), bidirectional override and line separator is written as an
/// escape (`\n`, `\x1b`, `\u{202e}`), so a field can neither drive the terminal (colours,
/// title, clipboard) nor start a line of its own. The one escaping rule of everything the
/// client prints (docs/security.md, "What the terminal and the hooks show").
pub fn one_line(text: &str) -> String {
    escape(text, false)
}

/// Like [`one_line`], but newlines and tabs stay: for text laid out in lines (a body, a view).
pub fn printable(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, multi_line: bool) -> String {
    if !text.chars().any(|c| needs_escape(c, multi_line)) {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if !needs_escape(c, multi_line) {
            out.push(c);
            continue;
        }
        let _ = match c {
            '\n' => write!(out, "\\n"),
            '\r' => write!(out, "\\r"),
            '\t' => write!(out, "\\t"),
            c if u32::from(c) < 0x100 => write!(out, "\\x{:02x}", u32::from(c)),
            c => write!(out, "\\u{{{:04x}}}", u32::from(c)),
        };
    }
    out
}

/// Control characters (C0, DEL, C1), the bidirectional marks, embeddings, overrides and
/// isolates (which reorder what follows them on screen), and the Unicode line separators.
fn needs_escape(c: char, multi_line: bool) -> bool {
    if c == '\n' || c == '\t' {
        return !multi_line;
    }
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
                | '\u{2028}' | '\u{2029}'
        )
}

fn text<'a>(value: &'a Json, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("")
}

fn id(value: &Json) -> String {
    value["id"]
        .as_i64()
        .map_or_else(String::new, |id| id.to_string())
}

/// The subject, or else the body's first line, cut to `width` characters.
pub fn headline(message: &Json, width: usize) -> String {
    let line = message["subject"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| text(message, "body").lines().next().unwrap_or(""));
    cut(line, width)
}

/// `text` cut to `width` characters, marked with `…` when cut.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// Where a job (a claimable message) stands, as the message's JSON says. The views key on
/// `claimable`, never on the kind, so a job of any kind reads the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Job<'a> {
    /// Nobody holds it (or its holder's lease ran out): it can be claimed.
    Open,
    /// Held under a live lease, ending in `left_ms`.
    Held { holder: &'a str, left_ms: i64 },
    /// Finished; `by` is absent for a job settled without a known holder (an upgrade).
    Completed { by: Option<&'a str> },
    /// Dead-lettered: never offered again until the operator retries it.
    Dead,
    /// Cancelled by its sender or the operator: never offered again.
    Cancelled,
    /// Waiting for the jobs of its `blockedBy` to be completed.
    Blocked,
}

/// The job state of `message` at `now`, or `None` for a message that is not a job.
pub fn job(message: &Json, now: i64) -> Option<Job<'_>> {
    if !message["claimable"].as_bool().unwrap_or(false) {
        return None;
    }
    if message["cancelledAt"].as_i64().is_some() {
        return Some(Job::Cancelled);
    }
    if message["deadLetteredAt"].as_i64().is_some() {
        return Some(Job::Dead);
    }
    let completed_by = message["completedBy"].as_str();
    if completed_by.is_some() || message["completedAt"].as_i64().is_some() {
        return Some(Job::Completed { by: completed_by });
    }
    match (
        message["claimedBy"].as_str(),
        message["claimExpiresAt"].as_i64(),
    ) {
        (Some(holder), Some(until)) if until > now => Some(Job::Held {
            holder,
            left_ms: until - now,
        }),
        _ if message["blockedBy"]
            .as_array()
            .is_some_and(|blockers| !blockers.is_empty()) =>
        {
            Some(Job::Blocked)
        }
        _ => Some(Job::Open),
    }
}

/// A job's state in words, `-` for a message that is not a job: `open`, `held by you (10m
/// left)`, `claimed by bob (45s left)`, `completed by bob`, `dead`. `viewer` is the agent the
/// view is for (its own claims read "held by you").
pub fn job_state(message: &Json, viewer: Option<&str>, now: i64) -> String {
    match job(message, now) {
        None => "-".to_owned(),
        Some(Job::Open) => "open".to_owned(),
        Some(Job::Held { holder, left_ms }) if Some(holder) == viewer => {
            format!("held by you ({} left)", left(left_ms))
        }
        Some(Job::Held { holder, left_ms }) => {
            format!("claimed by {holder} ({} left)", left(left_ms))
        }
        Some(Job::Completed { by: Some(by) }) => format!("completed by {by}"),
        Some(Job::Completed { by: None }) => "completed".to_owned(),
        Some(Job::Dead) => "dead".to_owned(),
        Some(Job::Cancelled) => "cancelled".to_owned(),
        Some(Job::Blocked) => format!("waiting for {}", message["blockedBy"]),
    }
}

/// The time a lease has left, rounded up so a lease reads as it was asked for (`--lease 10m`
/// shows `10m` at once, not `9m`): seconds under a minute (`45s`), minutes under an hour,
/// then hours and minutes (`1h30m`, `24h`).
pub fn left(ms: i64) -> String {
    let secs = (ms.max(0) + 999) / 1000;
    if secs < 60 {
        return format!("{secs}s");
    }
    let minutes = (secs + 59) / 60;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// A duration in milliseconds as the command line writes one: `100ms`, `90s`, `10m`, `24h`.
pub fn duration(ms: i64) -> String {
    match ms {
        ms if ms >= 3_600_000 && ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms >= 60_000 && ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms >= 1000 && ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    }
}

/// Rows under a header, each column as wide as its widest cell; the last column is not padded.
/// Every cell is escaped to one line, so no cell can add a row or drive the terminal.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|row| row.iter().map(|cell| one_line(cell)).collect())
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                let _ = write!(out, "{cell}{}  ", " ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

/// A list of messages as a table: id, from, to, age, kind, job state, subject or first line.
/// `viewer` is the agent the list is for.
pub fn messages(list: &Json, viewer: Option<&str>, empty: &str) -> String {
    let Some(items) = list.as_array().filter(|items| !items.is_empty()) else {
        return empty.to_owned();
    };
    let now = now_ms();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|m| {
            vec![
                id(m),
                text(m, "from").to_owned(),
                text(m, "to").to_owned(),
                age(m["createdAt"].as_i64().unwrap_or(now), now),
                text(m, "kind").to_owned(),
                job_state(m, viewer, now),
                headline(m, 60),
            ]
        })
        .collect();
    table(
        &["ID", "FROM", "TO", "AGE", "KIND", "JOB", "SUBJECT"],
        &rows,
    )
}

/// One message in full: a header line (with where a job stands), the subject, the body.
/// `viewer` is the agent the view is for, when known.
pub fn message(message: &Json, viewer: Option<&str>) -> String {
    let now = now_ms();
    let mut out = format!(
        "#{} {} -> {} · {} ago · {}",
        id(message),
        one_line(text(message, "from")),
        one_line(text(message, "to")),
        age(message["createdAt"].as_i64().unwrap_or(now), now),
        one_line(text(message, "kind")),
    );
    if let Some(reply_to) = message["replyTo"].as_i64() {
        let _ = write!(out, " · reply to #{reply_to}");
    }
    let state = job_state(message, viewer, now);
    if state != "-" {
        let _ = write!(out, " · {}", one_line(&state));
    }
    out.push('\n');
    if let Some(subject) = message["subject"].as_str().filter(|s| !s.is_empty()) {
        let _ = writeln!(out, "Subject: {}", one_line(subject));
    }
    for line in text(message, "body").lines() {
        let _ = writeln!(out, "  {}", printable(line));
    }
    if message["payload"]
        .as_object()
        .is_some_and(|p| !p.is_empty())
    {
        let _ = writeln!(
            out,
            "  payload: {}",
            one_line(&message["payload"].to_string())
        );
    }
    out
}

/// Agents as a table: id, kind, status, label, tags, last seen.
pub fn agents(list: &[Json]) -> String {
    if list.is_empty() {
        return "no agents".to_owned();
    }
    let now = now_ms();
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|a| {
            let tags: Vec<&str> = a["tags"]
                .as_array()
                .map(|t| t.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            vec![
                text(a, "id").to_owned(),
                text(a, "kind").to_owned(),
                text(a, "status").to_owned(),
                a["label"].as_str().unwrap_or("-").to_owned(),
                tags.join(","),
                format!("{} ago", age(a["lastSeen"].as_i64().unwrap_or(now), now)),
            ]
        })
        .collect();
    table(
        &["ID", "KIND", "STATUS", "LABEL", "TAGS", "LAST SEEN"],
        &rows,
    )
}

/// One agent's card, shortly.
pub fn agent(card: &Json) -> String {
    let mut out = format!(
        "{} ({}, {})",
        one_line(text(card, "id")),
        one_line(text(card, "kind")),
        one_line(text(card, "status"))
    );
    if let Some(label) = card["label"].as_str() {
        let _ = write!(out, " · label {}", one_line(label));
    }
    if let Some(tags) = card["tags"].as_array().filter(|t| !t.is_empty()) {
        let tags: Vec<&str> = tags.iter().filter_map(Json::as_str).collect();
        let _ = write!(out, " · tags {}", one_line(&tags.join(",")));
    }
    out
}

/// Tasks as a table: id, status, severity, source, age, claimed by, title.
pub fn tasks(list: &Json) -> String {
    let Some(items) = list.as_array().filter(|items| !items.is_empty()) else {
        return "no tasks (tasks come from integrations such as CI; jobs sent with `send --claimable` are listed by `agent-relay jobs`)".to_owned();
    };
    let now = now_ms();
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|t| {
            vec![
                id(t),
                text(t, "status").to_owned(),
                text(t, "severity").to_owned(),
                text(t, "source").to_owned(),
                age(t["updatedAt"].as_i64().unwrap_or(now), now),
                t["claimedBy"].as_str().unwrap_or("-").to_owned(),
                cut(text(t, "title"), 60),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "STATUS",
            "SEVERITY",
            "SOURCE",
            "AGE",
            "CLAIMED BY",
            "TITLE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_line_up_their_columns() {
        let out = table(
            &["ID", "FROM", "SUBJECT"],
            &[vec!["7".into(), "alice".into(), "hi".into()]],
        );
        assert_eq!(out, "ID  FROM   SUBJECT\n7   alice  hi\n");
    }

    #[test]
    fn escapes_write_controls_bidi_overrides_and_newlines_as_text() {
        let hostile = "a\nb\tc\u{1b}]52;c;eA==\u{7}\u{0}\u{7f}\u{9b}\u{202e}d\u{2028}";
        assert_eq!(
            one_line(hostile),
            "a\\nb\\tc\\x1b]52;c;eA==\\x07\\x00\\x7f\\x9b\\u{202e}d\\u{2028}"
        );
        assert_eq!(
            printable(hostile),
            "a\nb\tc\\x1b]52;c;eA==\\x07\\x00\\x7f\\x9b\\u{202e}d\\u{2028}"
        );
        assert_eq!(one_line("plain · ünïcode"), "plain · ünïcode");
        let out = table(&["ID", "SUBJECT"], &[vec!["1".into(), "x\n2  fake".into()]]);
        assert_eq!(out.lines().count(), 2, "{out}");
    }

    #[test]
    fn job_state_names_the_holder_the_time_left_and_the_end() {
        let open = json!({"claimable": true});
        assert_eq!(job_state(&open, None, 0), "open");
        let held = json!({"claimable": true, "claimedBy": "bob", "claimExpiresAt": 300_000});
        assert_eq!(job_state(&held, None, 60_000), "claimed by bob (4m left)");
        assert_eq!(
            job_state(&held, Some("bob"), 60_000),
            "held by you (4m left)"
        );
        assert_eq!(
            job_state(&held, Some("bob"), 300_000),
            "open",
            "the lease ran out"
        );
        let done = json!({"claimable": true, "claimedBy": "bob", "claimExpiresAt": 300_000,
            "completedBy": "bob", "completedAt": 1});
        assert_eq!(job_state(&done, Some("bob"), 0), "completed by bob");
        let dead = json!({"claimable": true, "deadLetteredAt": 5});
        assert_eq!(job_state(&dead, None, 0), "dead");
        assert_eq!(job_state(&json!({"claimable": false}), None, 0), "-");
    }

    #[test]
    fn the_time_left_rounds_up_so_a_lease_reads_as_asked() {
        assert_eq!(left(600_000 - 40), "10m");
        assert_eq!(left(45_000), "45s");
        assert_eq!(left(44_001), "45s");
        assert_eq!(left(59_999), "1m");
        assert_eq!(left(60_001), "2m");
        assert_eq!(left(3_600_000 - 5), "1h");
        assert_eq!(left(5_400_000), "1h30m");
        assert_eq!(left(86_400_000), "24h");
        assert_eq!(duration(100), "100ms");
        assert_eq!(duration(86_400_000), "24h");
        assert_eq!(duration(90_000), "90s");
    }

    #[test]
    fn headlines_prefer_the_subject_and_cut_long_lines() {
        let m = json!({"subject": null, "body": "first line\nsecond"});
        assert_eq!(headline(&m, 60), "first line");
        assert_eq!(headline(&json!({"body": "abcdef"}), 4), "abc…");
    }
}

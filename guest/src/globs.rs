//! Reservation patterns: gitignore-style globs relative to a project's top level, checked with
//! the `glob` crate, and whether two of them can name a common path (docs/reservations.md).
//!
//! A pattern is a list of `/`-separated segments. A segment is `**` (any number of segments, none
//! included) or a one-segment glob of literal characters, `?` (one character), `*` (any run of
//! characters) and `[...]` / `[!...]` classes. A pattern that may name a folder also covers
//! everything under it (`names_folder`), as gitignore's patterns do: it is read with an implicit
//! `/**` at its end.
//!
//! Two patterns overlap when some path matches both. That is decided exactly, by walking both
//! patterns side by side: segment by segment (a `**` of either side may stand for no segment or
//! take the other side's next segment), and inside two one-segment globs character by character
//! (a `*` may stand for nothing or take one character; two character tests meet when a character
//! passes both). Both walks only move forwards, so each pair of positions is visited once: the
//! cost is the product of the two lengths.

use glob::{MatchOptions, Pattern};

/// How a concrete path is matched against a held pattern: `*` and `?` never cross a `/`.
const MATCHING: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// The longest pattern accepted, in bytes.
pub const MAX_PATTERN: usize = 1_024;

/// Checks one pattern and returns its normal form (no leading `./`, at most one trailing `/`),
/// or what is wrong with it.
pub fn normalise(pattern: &str) -> Result<String, String> {
    if pattern.trim().is_empty() {
        return Err("is empty".to_owned());
    }
    if pattern.len() > MAX_PATTERN {
        return Err(format!("is longer than {MAX_PATTERN} bytes"));
    }
    if pattern.chars().any(char::is_control) {
        return Err("holds a control character".to_owned());
    }
    if pattern.contains('\\') {
        return Err(
            "holds a backslash: separate segments with / (escape a metacharacter as [*])"
                .to_owned(),
        );
    }
    if pattern.starts_with('/') || pattern.as_bytes().get(1) == Some(&b':') {
        return Err("is absolute: give paths relative to the project's top level".to_owned());
    }
    if pattern.starts_with('!') {
        return Err("is a negation (!), which a reservation cannot hold".to_owned());
    }
    let mut rest = pattern;
    while let Some(stripped) = rest.strip_prefix("./") {
        rest = stripped;
    }
    let folder = rest.ends_with('/');
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest == "." {
        return Err("names the project itself: reserve ** for everything".to_owned());
    }
    for segment in rest.split('/') {
        match segment {
            "" => return Err("has an empty segment (//)".to_owned()),
            ".." => return Err("escapes the project (..)".to_owned()),
            "." => return Err("has a . segment".to_owned()),
            _ => {}
        }
    }
    Pattern::new(rest).map_err(|error| format!("is not a valid glob: {error}"))?;
    parse(rest)?;
    Ok(if folder {
        format!("{rest}/")
    } else {
        rest.to_owned()
    })
}

/// Whether what a pattern names may be a folder, so that it covers everything under it: written
/// with a trailing `/`, ending in `**`, or a last segment without a dot after its first
/// character (`src`, `src/auth`, `.github`, `src/*`). A last segment like `main.rs`, `*.md` or
/// `README.md` names files only.
fn names_folder(pattern: &str) -> bool {
    let last = pattern.rsplit('/').next().unwrap_or(pattern);
    pattern.ends_with('/') || last == "**" || !last.chars().skip(1).any(|c| c == '.')
}

/// Whether a normalised pattern has no metacharacter: a concrete path.
fn is_concrete(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '['])
}

/// Whether some path matches both normalised patterns (each covering what is under what it names
/// when that may be a folder).
pub fn overlap(a: &str, b: &str) -> bool {
    if (is_concrete(b) && covers(a, b)) || (is_concrete(a) && covers(b, a)) {
        return true;
    }
    match (parse(a), parse(b)) {
        (Ok(a), Ok(b)) => segments_meet(&a, &b),
        _ => false,
    }
}

/// The quick answer for a concrete path, by the `glob` crate: the held pattern matches it, or
/// one of its folders when the pattern may name a folder.
fn covers(held: &str, path: &str) -> bool {
    let path = path.trim_end_matches('/');
    let Ok(pattern) = Pattern::new(held.trim_end_matches('/')) else {
        return false;
    };
    if pattern.matches_with(path, MATCHING) {
        return true;
    }
    if !names_folder(held) {
        return false;
    }
    let mut prefix = path;
    while let Some(cut) = prefix.rfind('/') {
        prefix = &prefix[..cut];
        if pattern.matches_with(prefix, MATCHING) {
            return true;
        }
    }
    false
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    /// `**`: any number of segments.
    Any,
    Glob(Vec<Token>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// `*`: any run of characters within the segment.
    Star,
    /// One character passing the test.
    One(CharTest),
}

#[derive(Debug, Clone, PartialEq)]
enum CharTest {
    /// `?`.
    Any,
    Literal(char),
    /// `[...]` (ranges, inclusive), or `[!...]` when `negated`.
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

/// A normalised pattern as segments, with an implicit `**` at its end when it may name a folder.
fn parse(pattern: &str) -> Result<Vec<Segment>, String> {
    let folder = names_folder(pattern);
    let mut segments = Vec::new();
    for text in pattern.trim_end_matches('/').split('/') {
        if text == "**" {
            if segments.last() != Some(&Segment::Any) {
                segments.push(Segment::Any);
            }
            continue;
        }
        segments.push(Segment::Glob(tokens(text)?));
    }
    if folder && segments.last() != Some(&Segment::Any) {
        segments.push(Segment::Any);
    }
    Ok(segments)
}

/// One segment's tokens, in the `glob` crate's syntax.
fn tokens(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                if chars.get(i + 1) == Some(&'*') {
                    return Err("has ** inside a segment: ** must be a whole segment".to_owned());
                }
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
                i += 1;
            }
            '?' => {
                out.push(Token::One(CharTest::Any));
                i += 1;
            }
            '[' => {
                let (test, next) = class(&chars, i)?;
                out.push(Token::One(test));
                i = next;
            }
            c => {
                out.push(Token::One(CharTest::Literal(c)));
                i += 1;
            }
        }
    }
    Ok(out)
}

/// The class starting at `chars[start] == '['`, and the index after its `]`.
fn class(chars: &[char], start: usize) -> Result<(CharTest, usize), String> {
    let mut i = start + 1;
    let negated = chars.get(i) == Some(&'!');
    if negated {
        i += 1;
    }
    let mut ranges = Vec::new();
    let first = i;
    loop {
        let Some(&c) = chars.get(i) else {
            return Err("has an unclosed [".to_owned());
        };
        if c == ']' && i > first {
            return Ok((CharTest::Class { negated, ranges }, i + 1));
        }
        if chars.get(i + 1) == Some(&'-') && chars.get(i + 2).is_some_and(|&end| end != ']') {
            let end = chars[i + 2];
            if end < c {
                return Err(format!("has the empty range {c}-{end}"));
            }
            ranges.push((c, end));
            i += 3;
        } else {
            ranges.push((c, c));
            i += 1;
        }
    }
}

/// Whether two segment lists can match one path.
fn segments_meet(a: &[Segment], b: &[Segment]) -> bool {
    walk(a.len(), b.len(), |i, j, next| {
        match (a.get(i), b.get(j)) {
            (Some(Segment::Any), other) => {
                next(i + 1, j);
                // `**` takes the other side's next segment (a `**` there, or any segment its
                // glob can match).
                if other.is_some_and(|segment| match segment {
                    Segment::Any => true,
                    Segment::Glob(tokens) => globs_meet(tokens, &[Token::Star]),
                }) {
                    next(i, j + 1);
                }
            }
            (other, Some(Segment::Any)) => {
                next(i, j + 1);
                if other.is_some_and(|segment| match segment {
                    Segment::Any => true,
                    Segment::Glob(tokens) => globs_meet(tokens, &[Token::Star]),
                }) {
                    next(i + 1, j);
                }
            }
            (Some(Segment::Glob(x)), Some(Segment::Glob(y))) if globs_meet(x, y) => {
                next(i + 1, j + 1);
            }
            _ => {}
        }
    })
}

/// Whether two one-segment globs match a common non-empty segment.
fn globs_meet(a: &[Token], b: &[Token]) -> bool {
    // Pairs of positions after a common non-empty prefix is read: the empty segment does not
    // count, so the walk starts by reading one character.
    let (n, m) = (a.len(), b.len());
    let mut seen = vec![false; (n + 1) * (m + 1) * 2];
    let mut stack = vec![(0usize, 0usize, false)];
    while let Some((i, j, read)) = stack.pop() {
        let slot = ((i * (m + 1)) + j) * 2 + usize::from(read);
        if seen[slot] {
            continue;
        }
        seen[slot] = true;
        if i == n && j == m && read {
            return true;
        }
        if a.get(i) == Some(&Token::Star) {
            stack.push((i + 1, j, read));
        }
        if b.get(j) == Some(&Token::Star) {
            stack.push((i, j + 1, read));
        }
        let step = |tokens: &[Token], k: usize| match tokens.get(k) {
            Some(Token::Star) => Some((CharTest::Any, k)),
            Some(Token::One(test)) => Some((test.clone(), k + 1)),
            None => None,
        };
        if let (Some((x, ni)), Some((y, nj))) = (step(a, i), step(b, j))
            && tests_meet(&x, &y)
        {
            stack.push((ni, nj, true));
        }
    }
    false
}

/// Whether some character passes both tests.
fn tests_meet(x: &CharTest, y: &CharTest) -> bool {
    match (x, y) {
        (CharTest::Any, other) | (other, CharTest::Any) => satisfiable(other),
        (CharTest::Literal(c), other) | (other, CharTest::Literal(c)) => passes(other, *c),
        (
            CharTest::Class {
                negated: false,
                ranges,
            },
            other,
        )
        | (
            other,
            CharTest::Class {
                negated: false,
                ranges,
            },
        ) => ranges.iter().any(|&(lo, hi)| range_meets(lo, hi, other)),
        // Two negated classes exclude finitely many characters each.
        _ => true,
    }
}

fn passes(test: &CharTest, c: char) -> bool {
    match test {
        CharTest::Any => c != '/',
        CharTest::Literal(l) => *l == c,
        CharTest::Class { negated, ranges } => {
            c != '/' && ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
        }
    }
}

fn satisfiable(test: &CharTest) -> bool {
    match test {
        CharTest::Any | CharTest::Literal(_) => true,
        CharTest::Class { negated, ranges } => {
            *negated || ranges.iter().any(|&(lo, hi)| lo != '/' || hi != '/')
        }
    }
}

/// Whether a character of `lo..=hi` passes `test`: `lo` itself, or the first character after
/// each of the test's own ranges that ends inside `lo..=hi`.
fn range_meets(lo: char, hi: char, test: &CharTest) -> bool {
    let mut candidates = vec![lo];
    if let CharTest::Class { ranges, .. } = test {
        for &(start, end) in ranges {
            if (lo..=hi).contains(&start) {
                candidates.push(start);
            }
            if let Some(after) = char::from_u32(u32::from(end) + 1)
                && (lo..=hi).contains(&after)
            {
                candidates.push(after);
            }
        }
    }
    if let Some(after) = char::from_u32(u32::from('/') + 1)
        && (lo..=hi).contains(&after)
    {
        candidates.push(after);
    }
    candidates.into_iter().any(|c| passes(test, c))
}

/// Walks pairs of positions from `(0, 0)`, `step` naming the next pairs of each; true when
/// `(n, m)` is reached.
fn walk(n: usize, m: usize, step: impl Fn(usize, usize, &mut dyn FnMut(usize, usize))) -> bool {
    let mut seen = vec![false; (n + 1) * (m + 1)];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((i, j)) = stack.pop() {
        if i > n || j > m || seen[i * (m + 1) + j] {
            continue;
        }
        seen[i * (m + 1) + j] = true;
        if i == n && j == m {
            return true;
        }
        step(i, j, &mut |ni, nj| stack.push((ni, nj)));
    }
    false
}

//! `Range` / `If-Range` / `If-None-Match` for digest-named downloads (RFC 9110).

/// What to send for a representation of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeChoice {
    Full,
    /// Inclusive byte positions.
    Partial {
        start: u64,
        end: u64,
    },
    Unsatisfiable,
}

/// Interprets a `Range` header. Syntax we do not serve (other units, several ranges) is
/// ignored, as the RFC allows, and the whole representation is sent.
pub fn choose_range(range: Option<&str>, size: u64) -> RangeChoice {
    let Some(spec) = range.and_then(|r| r.trim().strip_prefix("bytes=")) else {
        return RangeChoice::Full;
    };
    if spec.contains(',') {
        return RangeChoice::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeChoice::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(last) {
            Some(0) => RangeChoice::Unsatisfiable,
            Some(_) if size == 0 => RangeChoice::Unsatisfiable,
            Some(n) => RangeChoice::Partial {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            None => RangeChoice::Full,
        },
        // bytes=N-: from N to the end.
        (false, true) => match num(first) {
            Some(s) if s >= size => RangeChoice::Unsatisfiable,
            Some(s) => RangeChoice::Partial {
                start: s,
                end: size - 1,
            },
            None => RangeChoice::Full,
        },
        (false, false) => match (num(first), num(last)) {
            (Some(s), Some(e)) if s > e => RangeChoice::Full,
            (Some(s), Some(_)) if s >= size => RangeChoice::Unsatisfiable,
            (Some(s), Some(e)) => RangeChoice::Partial {
                start: s,
                end: e.min(size - 1),
            },
            _ => RangeChoice::Full,
        },
        (true, true) => RangeChoice::Full,
    }
}

/// How an `If-None-Match` header relates to our ETag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoneMatch {
    /// Absent, or naming other tags: the request proceeds.
    No,
    /// Names our ETag: the client holds exactly these bytes (the URL names the content).
    Tag,
    /// `*`: true only if the package exists, which the caller has to find out.
    Any,
}

pub fn none_match(header: Option<&str>, etag: &str) -> NoneMatch {
    let Some(h) = header else {
        return NoneMatch::No;
    };
    let mut any = false;
    for t in h.split(',').map(str::trim) {
        if t == etag || t.strip_prefix("W/") == Some(etag) {
            return NoneMatch::Tag;
        }
        any |= t == "*";
    }
    if any {
        NoneMatch::Any
    } else {
        NoneMatch::No
    }
}

/// Whether a `Range` may be honoured given `If-Range`: only if absent or naming our ETag
/// (a date is never a strong enough validator for us).
pub fn if_range_allows(header: Option<&str>, etag: &str) -> bool {
    header.is_none_or(|h| h.trim() == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use RangeChoice::*;

    #[test]
    fn ranges() {
        assert_eq!(choose_range(None, 10), Full);
        assert_eq!(
            choose_range(Some("bytes=0-4"), 10),
            Partial { start: 0, end: 4 }
        );
        assert_eq!(
            choose_range(Some("bytes=5-"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(
            choose_range(Some("bytes=-3"), 10),
            Partial { start: 7, end: 9 }
        );
        assert_eq!(
            choose_range(Some("bytes=-30"), 10),
            Partial { start: 0, end: 9 }
        );
        assert_eq!(
            choose_range(Some("bytes=5-100"), 10),
            Partial { start: 5, end: 9 }
        );
        assert_eq!(choose_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(choose_range(Some("bytes=10-12"), 10), Unsatisfiable);
        assert_eq!(choose_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(choose_range(Some("bytes=0-0"), 0), Unsatisfiable);
        assert_eq!(choose_range(Some("bytes=0-1,3-4"), 10), Full);
        assert_eq!(choose_range(Some("items=0-1"), 10), Full);
        assert_eq!(choose_range(Some("bytes=5-2"), 10), Full);
        assert_eq!(choose_range(Some("bytes=x-2"), 10), Full);
        assert_eq!(choose_range(Some("bytes=-"), 10), Full);
    }

    #[test]
    fn validators() {
        let etag = "\"sha256:ab\"";
        assert_eq!(none_match(Some("\"sha256:ab\""), etag), NoneMatch::Tag);
        assert_eq!(
            none_match(Some("\"x\", \"sha256:ab\""), etag),
            NoneMatch::Tag
        );
        assert_eq!(none_match(Some("*"), etag), NoneMatch::Any);
        assert_eq!(none_match(Some("\"x\""), etag), NoneMatch::No);
        assert_eq!(none_match(None, etag), NoneMatch::No);
        assert!(if_range_allows(None, etag));
        assert!(if_range_allows(Some("\"sha256:ab\""), etag));
        assert!(!if_range_allows(
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            etag
        ));
    }
}

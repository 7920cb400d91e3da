//! Output formatting the client commands share: tables, byte sizes, times
//! and durations, so `topic describe`, `group describe`, `delay list` and
//! `fn describe` print the same things the same way.

use std::time::{Duration, UNIX_EPOCH};

/// Left-aligned columns two spaces apart, one line per row (trailing
/// spaces trimmed).
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `1536` → `1.5 KiB`: binary units, as `--memory` and the topic settings
/// take them.
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Milliseconds since the epoch as RFC 3339 UTC, to the millisecond (a time
/// before the epoch, which the broker never sends, as the raw number).
pub(crate) fn rfc3339(ms: i64) -> String {
    match u64::try_from(ms) {
        Ok(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
        Err(_) => format!("{ms} ms since the epoch"),
    }
}

/// A duration as the flags take it: `250ms`, `1m 30s`, `2h`.
pub(crate) fn duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// How far `due_ms` is from `now_ms`: `in 5m 3s`, `now`, `2s ago`; to the
/// second from a second on.
pub(crate) fn relative(due_ms: i64, now_ms: i64) -> String {
    let diff = due_ms.saturating_sub(now_ms);
    let span = |ms: u64| {
        duration(if ms >= 1000 {
            Duration::from_secs(ms.div_ceil(1000))
        } else {
            Duration::from_millis(ms)
        })
    };
    match diff {
        d if d > 0 => format!("in {}", span(d as u64)),
        d if d > -1000 => "now".into(),
        d => format!("{} ago", span(d.unsigned_abs())),
    }
}

/// Microseconds as people read them: `850µs`, `12.5ms`, `3.20s`.
pub(crate) fn micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_left_and_trim() {
        let rows = vec![
            vec!["orders".into(), "3".into(), String::new()],
            vec!["a".into(), "12".into(), "x".into()],
        ];
        assert_eq!(
            table(&["TOPIC", "N", "NOTE"], rows),
            "TOPIC   N   NOTE\norders  3\na       12  x\n"
        );
        // Width is counted in characters, not bytes.
        let rows = vec![vec!["µµ".into(), "1".into()]];
        assert_eq!(table(&["A", "B"], rows), "A   B\nµµ  1\n");
        assert_eq!(table(&["A"], Vec::new()), "A\n");
    }

    #[test]
    fn sizes_read_as_binary_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }

    #[test]
    fn times_print_absolute_and_relative() {
        let now = 1_772_355_600_000;
        assert_eq!(rfc3339(now), "2026-03-01T09:00:00.000Z");
        assert_eq!(rfc3339(-5), "-5 ms since the epoch");
        assert_eq!(relative(now + 250, now), "in 250ms");
        assert_eq!(relative(now + 90_500, now), "in 1m 31s");
        assert_eq!(relative(now + 5_400_000, now), "in 1h 30m");
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(now - 999, now), "now");
        assert_eq!(relative(now - 3000, now), "3s ago");
    }

    #[test]
    fn durations_print_as_the_flags_take_them() {
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs(60)), "1m");
        assert_eq!(micros(50), "50µs");
        assert_eq!(micros(1500), "1.5ms");
        assert_eq!(micros(2_500_000), "2.50s");
    }
}

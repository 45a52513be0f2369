//! How the client prints: colours only on a terminal (and never with `NO_COLOR`), aligned
//! tables, short durations, and the `--grace` parser.

use std::io::IsTerminal;
use std::time::Duration;

/// Where a line goes, and whether it may be coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// A colour for a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tone {
    /// As it is.
    Plain,
    /// A warning (yellow).
    Warn,
    /// An error (red).
    Error,
    /// Dimmed (details).
    Dim,
}

fn coloured(stream: Stream) -> bool {
    let terminal = match stream {
        Stream::Stdout => std::io::stdout().is_terminal(),
        Stream::Stderr => std::io::stderr().is_terminal(),
    };
    terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Prints one line, coloured when `stream` is a terminal, and flushes it (narration is
/// shown as it arrives).
pub(crate) fn line(stream: Stream, tone: Tone, text: &str) {
    use std::io::Write;
    let code = match tone {
        Tone::Plain => None,
        Tone::Warn => Some("33"),
        Tone::Error => Some("31"),
        Tone::Dim => Some("2"),
    };
    let text = match code {
        Some(code) if coloured(stream) => format!("\x1b[{code}m{text}\x1b[0m"),
        _ => text.to_owned(),
    };
    match stream {
        Stream::Stdout => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
        Stream::Stderr => {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "{text}");
            let _ = err.flush();
        }
    }
}

/// Lays out rows under a header, columns padded to their widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let render = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        cells
            .iter()
            .enumerate()
            .map(|(i, cell)| match i == last {
                true => cell.to_string(),
                false => format!("{cell:<width$}", width = widths[i]),
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = vec![render(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|row| render(row.iter().map(String::as_str).collect())),
    );
    out.join("\n")
}

/// A duration as people read it: `45s`, `3m12s`, `2h05m`, `4d03h`.
pub(crate) fn short_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        3600..86_400 => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{:02}h", seconds / 86_400, seconds % 86_400 / 3600),
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h` (a bare number is seconds).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 500ms, 2s or 1m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("2 weeks").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(short_duration(Duration::from_secs(45)), "45s");
        assert_eq!(short_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(short_duration(Duration::from_secs(7500)), "2h05m");
        assert_eq!(short_duration(Duration::from_secs(356_400)), "4d03h");
    }

    #[test]
    fn tables_align() {
        let text = table(
            &["ID", "STATE"],
            &[
                vec!["worker-1".into(), "ready".into()],
                vec!["w".into(), "failed".into()],
            ],
        );
        assert_eq!(text, "ID        STATE\nworker-1  ready\nw         failed");
    }
}

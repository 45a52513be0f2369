//! Checks on a job's lines (the data of its stream's events, as
//! [`TestHive::run_job`](crate::TestHive::run_job) returns them). Each fails the test with
//! all the lines.

/// The first `[ERROR] ` line, whole; fails the test when there is none.
#[track_caller]
pub fn error_line(lines: &[String]) -> &str {
    lines
        .iter()
        .find(|l| l.starts_with("[ERROR] "))
        .unwrap_or_else(|| panic!("no [ERROR] line: {lines:#?}"))
}

/// Asserts that the stream ended with `[DONE]`.
#[track_caller]
pub fn assert_done(lines: &[String]) {
    assert_eq!(
        lines.last().map(String::as_str),
        Some("[DONE]"),
        "{lines:#?}"
    );
}

/// Asserts that some line contains `needle`.
#[track_caller]
pub fn assert_line(lines: &[String], needle: &str) {
    assert!(
        lines.iter().any(|l| l.contains(needle)),
        "no line contains {needle:?}: {lines:#?}"
    );
}

/// Asserts that no line contains `needle`.
#[track_caller]
pub fn assert_no_line(lines: &[String], needle: &str) {
    assert!(
        !lines.iter().any(|l| l.contains(needle)),
        "a line contains {needle:?}: {lines:#?}"
    );
}

/// Asserts that no line mentions a signal sent: neither `SIGTERM` nor `SIGKILL` appears.
#[track_caller]
pub fn assert_nothing_signalled(lines: &[String]) {
    assert_no_line(lines, "SIGTERM");
    assert_no_line(lines, "SIGKILL");
}

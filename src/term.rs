//! What quarry says on the terminal: errors and warnings on stderr, prefixed `error:` /
//! `warning:` and coloured when stderr is a terminal (anstream: `NO_COLOR`, `CLICOLOR` and
//! `CLICOLOR_FORCE` are honoured, and a pipe or file gets plain text). Reports (`status`,
//! `check`, `check-outputs`) go to stdout.

use std::io::Write as _;

use anstyle::{AnsiColor, Style};

const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();

fn prefixed(style: Style, label: &str, message: &str) {
    let mut err = anstream::stderr().lock();
    // A message that already starts with its label (`error: ...` from a library) keeps one.
    let message = message.strip_prefix(label).map(|m| m.trim_start_matches(':').trim_start()).unwrap_or(message);
    let _ = writeln!(err, "{style}{label}:{style:#} {message}");
}

/// `error: MESSAGE` on stderr.
pub fn error(message: impl std::fmt::Display) {
    prefixed(ERROR, "error", &message.to_string());
}

/// `warning: MESSAGE` on stderr.
pub fn warning(message: impl std::fmt::Display) {
    prefixed(WARNING, "warning", &message.to_string());
}

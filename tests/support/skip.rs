//! The one way a test skips for something the machine lacks (a tool, a kernel feature, a
//! service stand-in): under CI (`CI` set and non-empty, as CI runners and `.ci/run` set it) a
//! skip is a failure naming what is missing and how to install it; elsewhere the test stops and
//! says so in one line that `cargo test` shows.
//!
//! Why the line is written to the stderr handle and not with `eprintln!`: libtest captures the
//! print macros of a passing test and never shows them, but leaves direct writes to
//! `std::io::stderr()` alone (rust-lang/rust#90785), so the line reaches the terminal beside
//! `test … ok`. `tests/skips.rs` runs a skipping test in a child harness and checks both.

use std::io::Write;

/// Whether skips fail the run: `CI` is set to something non-empty.
pub fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// `true` when the calling test must stop because `present` is false: under CI it panics
/// instead, naming `what` and `how` to install it. Usage:
/// `if skip::unless(tool_found, "shellcheck", "apt-get install shellcheck") { return; }`.
#[must_use = "the test must return when this says to skip"]
pub fn unless(present: bool, what: &str, how: &str) -> bool {
    if !present {
        missing(what, how);
    }
    !present
}

/// The part of a test that needs `what` is skipped: under CI a failure naming it and `how` to
/// install it; elsewhere one line on stderr that `cargo test` shows.
pub fn missing(what: &str, how: &str) {
    if in_ci() {
        panic!("{what} is missing ({how}); CI is set, so a skipped test fails the run");
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    // Straight to the handle: libtest would swallow `eprintln!` (see the file's head).
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIPPED {test}: {what} is missing ({how})"
    );
}

/// For a file with its own harness (libtest-mimic): whether the cases that need `needed` must
/// be marked ignored. `Ok` runs them; an `Err(reason)` prints `<tier> skipped: <reason>` and
/// returns `true`, or, under CI or `POD_IDENTITY_CLUSTER_TESTS=require`, prints `<tier>: cannot
/// run: <reason>` and exits with status 101 so the run fails.
pub fn tier<T>(tier: &str, needed: Result<T, String>) -> bool {
    let required =
        in_ci() || std::env::var("POD_IDENTITY_CLUSTER_TESTS").as_deref() == Ok("require");
    match needed {
        Ok(_) => false,
        Err(reason) if required => {
            eprintln!("{tier}: cannot run: {reason}");
            std::process::exit(101);
        }
        Err(reason) => {
            println!("{tier} skipped: {reason}");
            true
        }
    }
}

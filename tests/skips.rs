//! How a test skips for something the machine lacks (`tests/support/skip.rs`), checked on a
//! test of this file run as a child harness the way `cargo test` runs one (output captured):
//! outside CI the skip passes and its one line still reaches the terminal; with `CI` set it
//! fails, naming what is missing and how to install it.

use std::process::{Command, Output};

#[allow(dead_code)] // Not every file uses every part of it.
#[path = "support/skip.rs"]
mod skip;

/// Run only as a child of the tests below: a test whose machine lacks "the frobnicator".
#[test]
#[ignore = "run by the tests of this file as a child harness"]
fn lacks_the_frobnicator() {
    if skip::unless(false, "the frobnicator", "apt-get install frobnicator") {
        return;
    }
    unreachable!("a skip returns");
}

/// This file's harness running only `lacks_the_frobnicator`, output captured as by `cargo test`,
/// with `CI` set to `ci` (or removed).
fn run_the_skipping_test(ci: Option<&str>) -> Output {
    let mut child = Command::new(std::env::current_exe().unwrap());
    child.args([
        "--exact",
        "lacks_the_frobnicator",
        "--ignored",
        "--test-threads=1",
    ]);
    match ci {
        Some(value) => child.env("CI", value),
        None => child.env_remove("CI"),
    };
    child.output().unwrap()
}

#[test]
fn outside_ci_a_skip_passes_and_its_line_survives_the_capture() {
    for ci in [None, Some("")] {
        let out = run_the_skipping_test(ci);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "CI={ci:?}:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("test lacks_the_frobnicator ... ok"),
            "{stdout}"
        );
        assert!(
            stderr.contains(
                "SKIPPED lacks_the_frobnicator: the frobnicator is missing \
                 (apt-get install frobnicator)"
            ),
            "the skip line is not shown: {stderr}"
        );
    }
}

#[test]
fn under_ci_a_skip_fails_naming_what_is_missing_and_how_to_install_it() {
    let out = run_the_skipping_test(Some("true"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("test lacks_the_frobnicator ... FAILED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the frobnicator is missing (apt-get install frobnicator)"),
        "{stdout}"
    );
}

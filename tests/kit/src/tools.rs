//! External programs a test needs.

use std::process::{Command, Stdio};

/// Fails the test (panics, with what to install) unless `program` runs with `args`
/// (e.g. `["--version"]`) and exits successfully. A test that needs a tool never
/// returns early and passes without it: it fails here, or is `#[ignore]`d with the
/// reason where no machine that runs the suite has the tool.
pub fn require_tool(program: &str, args: &[&str], install: &str) {
    let ran = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match ran {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "this test needs `{program} {}`, which exited with {status}: {install}",
            args.join(" ")
        ),
        Err(e) => panic!("this test needs `{program}`, which cannot be run ({e}): {install}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_present_tool_passes() {
        require_tool("sh", &["-c", "exit 0"], "install a POSIX shell");
    }

    #[test]
    #[should_panic(expected = "install shoal-no-such-tool")]
    fn a_missing_tool_fails_with_what_to_install() {
        require_tool("shoal-no-such-tool", &[], "install shoal-no-such-tool");
    }
}

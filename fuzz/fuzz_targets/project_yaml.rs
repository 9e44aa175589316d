//! `project.yaml` validation: any text gives a project or a message, never a panic, and
//! validating a valid project's actions in dependency order covers them all.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The binary's own modules, included by path (quarry is a binary crate); `project` reaches
// the other two as `super::`.
#[allow(dead_code)]
#[path = "../../src/pipeline/patterns.rs"]
mod patterns;
#[allow(dead_code)]
#[path = "../../src/pipeline/project.rs"]
mod project;
#[allow(dead_code)]
#[path = "../../src/pipeline/shlex.rs"]
mod shlex;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(project) = project::parse(text, "project.yaml") {
        assert_eq!(project.dependency_order().len(), project.actions.len(), "every action is in the dependency order");
    }
});

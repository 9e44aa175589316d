//! What one definition run owns, reachable from the native modules.
//!
//! A definition runs on its own thread with its own interpreter, so the state is a
//! thread-local: native functions (the file gate, the query-model builder, `print`'s sink)
//! reach it without threading it through RustPython's calls.

use std::cell::RefCell;
use std::io::Write;

use quarry_queries::qm::Graph;

use crate::sandbox::Sandbox;

pub struct RunState {
    pub sandbox: Sandbox,
    pub graph: Graph,
    /// Where `print()` and everything written to `sys.stdout`/`sys.stderr` goes.
    pub out: Box<dyn Write>,
    /// What `os.environ` shows: the variables ehrQL's definition subprocess sees.
    pub environ: Vec<(String, String)>,
    /// `claim_permissions(...)`, in order, without duplicates.
    pub claimed_permissions: Vec<String>,
    /// Where each node was first made: (file, line) of the user's code, by node index.
    pub locations: std::collections::HashMap<usize, (String, u32)>,
    /// In debug mode (`quarry debug`), what renders `show()`.
    pub debugger: Option<crate::BoxedDebugger>,
    /// Modules the definition imported that an ehrQL image lacks.
    pub missing_from: Vec<crate::MissingFrom>,
}

thread_local! {
    static STATE: RefCell<Option<RunState>> = const { RefCell::new(None) };
}

/// Installs the state for this thread's run.
pub fn install(state: RunState) {
    STATE.with(|s| *s.borrow_mut() = Some(state));
}

/// Takes the state back when the run ends.
pub fn take() -> Option<RunState> {
    STATE.with(|s| s.borrow_mut().take())
}

/// Runs `f` with the state. Native functions are only reachable while a run is installed;
/// calling one outside a run is a bug in quarry, reported as such.
pub fn with<T>(f: impl FnOnce(&mut RunState) -> T) -> T {
    STATE.with(|s| {
        let mut guard = s.borrow_mut();
        let state = guard.as_mut().expect("quarry-python: native function called outside a definition run");
        f(state)
    })
}

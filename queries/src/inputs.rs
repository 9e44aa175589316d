//! The files a definition reads while it is loaded (codelists, `table_from_file` tables), so
//! that a command can refuse an output that would replace one of them. Recorded per thread:
//! a definition is loaded on one thread, and [`take`] hands its files over.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

thread_local! {
    static READ: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Notes that the definition being loaded read `path`.
pub fn record(path: &Path) {
    READ.with(|r| r.borrow_mut().push(path.to_path_buf()));
}

/// The files recorded on this thread since the last call, in the order read.
pub fn take() -> Vec<PathBuf> {
    READ.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

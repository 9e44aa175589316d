//! The one gate between a definition and the file system.
//!
//! A definition may read regular files inside the project and list its directories; nothing
//! else. Every module that touches files (`open()`, `io`, `os`, `pathlib`, imports, codelists,
//! `table_from_file`) comes here: the embedded Python is built without host access
//! (RustPython's `host_env` off), so there is no other way out. This is stronger than ehrQL,
//! which runs definitions as ordinary Python (read-only only in production, by `pledge`).
//!
//! Paths are resolved as the operating system would (symlinks followed), then must lie under
//! one of the roots: the working directory (the project root, or a job's scratch directory)
//! and the definition's own directory.

use std::path::{Component, Path, PathBuf};

/// Why a file operation was refused or failed, as an `OSError` with an errno.
#[derive(Debug, Clone, PartialEq)]
pub struct FsError {
    pub errno: i32,
    pub message: String,
    /// The path as the definition gave it.
    pub path: String,
}

pub const EPERM_MESSAGE: &str = "Permission denied (quarry runs definitions read-only, and only inside the project)";

impl FsError {
    fn denied(path: &str) -> FsError {
        FsError { errno: EACCES, message: EPERM_MESSAGE.into(), path: path.into() }
    }

    fn from_io(e: &std::io::Error, path: &str) -> FsError {
        let errno = e.raw_os_error().unwrap_or(EIO);
        FsError { errno, message: strerror(errno).into(), path: path.into() }
    }
}

pub const ENOENT: i32 = 2;
pub const EIO: i32 = 5;
pub const EACCES: i32 = 13;
pub const ENOTDIR: i32 = 20;
pub const EISDIR: i32 = 21;
pub const EINVAL: i32 = 22;

/// The C library's wording for the errors a read-only definition can meet.
pub fn strerror(errno: i32) -> &'static str {
    match errno {
        ENOENT => "No such file or directory",
        EIO => "Input/output error",
        EACCES => "Permission denied",
        ENOTDIR => "Not a directory",
        EISDIR => "Is a directory",
        EINVAL => "Invalid argument",
        36 => "File name too long",
        40 => "Too many levels of symbolic links",
        _ => "Unknown error",
    }
}

/// File metadata as `os.stat` reports it.
#[derive(Debug, Clone)]
pub struct Stat {
    pub mode: u32,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime_ns: i128,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
}

/// The roots a definition may read under, and its working directory.
#[derive(Debug, Clone)]
pub struct Sandbox {
    cwd: PathBuf,
    roots: Vec<PathBuf>,
    /// The regular files read so far, resolved, in the order first read: the run's inputs,
    /// which no output of the command may replace.
    read: Vec<PathBuf>,
}

impl Sandbox {
    /// A sandbox rooted at `cwd` (canonicalized) and at `extra` roots (the definition's
    /// directory, when it lies outside the working directory).
    pub fn new(cwd: &Path, extra: &[PathBuf]) -> std::io::Result<Sandbox> {
        let cwd = cwd.canonicalize()?;
        let mut roots = vec![cwd.clone()];
        for e in extra {
            let e = e.canonicalize()?;
            if !roots.iter().any(|r| e.starts_with(r)) {
                roots.push(e);
            }
        }
        Ok(Sandbox { cwd, roots, read: Vec::new() })
    }

    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// `path` made absolute against the working directory, without touching the disk.
    fn absolute(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute() { p.to_path_buf() } else { self.cwd.join(p) }
    }

    fn inside(&self, p: &Path) -> bool {
        self.roots.iter().any(|r| p.starts_with(r))
    }

    /// Where `path` really is, symlinks followed where they exist (`follow_last` decides
    /// for the final component), or the refusal when that is outside every root.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<PathBuf, FsError> {
        if path.is_empty() {
            return Err(FsError { errno: ENOENT, message: strerror(ENOENT).into(), path: path.into() });
        }
        if path.contains('\0') {
            return Err(FsError { errno: EINVAL, message: "embedded null byte".into(), path: path.into() });
        }
        let abs = self.absolute(path);
        // The part to canonicalize: everything, or everything but the last component.
        let (head, last) = if follow_last {
            (abs.clone(), None)
        } else {
            match (abs.parent(), abs.file_name()) {
                (Some(parent), Some(name)) => (parent.to_path_buf(), Some(name.to_os_string())),
                _ => (abs.clone(), None),
            }
        };
        let resolved = canonicalize_existing_prefix(&head).map_err(|e| FsError::from_io(&e, path))?;
        let full = match last {
            Some(name) => resolved.join(name),
            None => resolved,
        };
        if self.inside(&full) { Ok(full) } else { Err(FsError::denied(path)) }
    }

    /// `os.stat` (`follow = true`) or `os.lstat`.
    pub fn stat(&self, path: &str, follow: bool) -> Result<Stat, FsError> {
        let real = self.resolve(path, follow)?;
        let meta = if follow { std::fs::metadata(&real) } else { std::fs::symlink_metadata(&real) };
        let meta = meta.map_err(|e| FsError::from_io(&e, path))?;
        Ok(stat_of(&meta))
    }

    /// `os.listdir`: the names in a directory inside the project, in the order the system
    /// gives them (as CPython).
    pub fn listdir(&self, path: &str) -> Result<Vec<String>, FsError> {
        let real = self.resolve(path, true)?;
        let entries = std::fs::read_dir(&real).map_err(|e| FsError::from_io(&e, path))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| FsError::from_io(&e, path))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    /// The regular files read so far (resolved paths), in the order first read.
    pub fn files_read(&self) -> &[PathBuf] {
        &self.read
    }

    /// A regular file's bytes. Directories, devices, FIFOs and sockets are refused.
    pub fn read(&mut self, path: &str) -> Result<Vec<u8>, FsError> {
        let real = self.resolve(path, true)?;
        let meta = std::fs::metadata(&real).map_err(|e| FsError::from_io(&e, path))?;
        if meta.is_dir() {
            return Err(FsError { errno: EISDIR, message: strerror(EISDIR).into(), path: path.into() });
        }
        if !meta.is_file() {
            return Err(FsError::denied(path));
        }
        let bytes = std::fs::read(&real).map_err(|e| FsError::from_io(&e, path))?;
        if !self.read.contains(&real) {
            self.read.push(real);
        }
        Ok(bytes)
    }

    /// `os.readlink`: only for links inside the project.
    pub fn readlink(&self, path: &str) -> Result<String, FsError> {
        let real = self.resolve(path, false)?;
        std::fs::read_link(&real).map(|t| t.to_string_lossy().into_owned()).map_err(|e| FsError::from_io(&e, path))
    }

    /// The refusal for any operation that would change something or leave the sandbox.
    pub fn refuse(path: &str) -> FsError {
        FsError::denied(path)
    }
}

/// Canonicalizes the longest prefix of `p` that exists and appends the rest, folding `.`
/// and `..` in the part that does not exist (there they cannot pass through a symlink).
fn canonicalize_existing_prefix(p: &Path) -> std::io::Result<PathBuf> {
    let mut existing = p.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match existing.symlink_metadata() {
            Ok(_) => break,
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent.to_path_buf();
                }
                _ => break,
            },
        }
    }
    let mut out = existing.canonicalize()?;
    for name in rest.iter().rev() {
        match Path::new(name).components().next() {
            Some(Component::ParentDir) => {
                out.pop();
            }
            Some(Component::CurDir) | None => {}
            _ => out.push(name),
        }
    }
    Ok(out)
}

fn stat_of(meta: &std::fs::Metadata) -> Stat {
    use std::os::unix::fs::MetadataExt;
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    Stat {
        mode: meta.mode(),
        ino: meta.ino(),
        dev: meta.dev(),
        nlink: meta.nlink(),
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size(),
        atime_ns: ns(meta.atime(), meta.atime_nsec()),
        mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
        ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, tempfile::TempDir, Sandbox) {
        let project = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(project.path().join("a.txt"), "inside").unwrap();
        std::fs::create_dir(project.path().join("sub")).unwrap();
        std::fs::write(outside.path().join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.txt"), project.path().join("link_out")).unwrap();
        std::os::unix::fs::symlink(project.path().join("a.txt"), project.path().join("link_in")).unwrap();
        let sandbox = Sandbox::new(project.path(), &[]).unwrap();
        (project, outside, sandbox)
    }

    #[test]
    fn reads_inside_the_project() {
        let (p, _o, mut s) = setup();
        assert_eq!(s.read("a.txt").unwrap(), b"inside");
        assert_eq!(s.read("sub/../a.txt").unwrap(), b"inside");
        assert_eq!(s.read("link_in").unwrap(), b"inside");
        let mut names = s.listdir(".").unwrap();
        names.sort();
        assert_eq!(names, ["a.txt", "link_in", "link_out", "sub"]);
        assert_eq!(s.read("missing.txt").unwrap_err().errno, ENOENT);
        assert_eq!(s.read("sub").unwrap_err().errno, EISDIR);
        // Each file once, as it really is (links resolved), and only what was read.
        assert_eq!(s.files_read(), [p.path().canonicalize().unwrap().join("a.txt")]);
    }

    #[test]
    fn refuses_everything_outside() {
        let (_p, o, mut s) = setup();
        for path in ["/etc/passwd", "../x", "sub/../../x", "link_out", &o.path().join("secret.txt").display().to_string()] {
            let e = s.read(path).unwrap_err();
            assert_eq!((e.errno, e.path.as_str()), (EACCES, path), "{path}");
        }
        assert_eq!(s.stat("/etc", true).unwrap_err().errno, EACCES);
        assert_eq!(s.listdir("/").unwrap_err().errno, EACCES);
        // The link itself is inside: lstat and readlink see it, following it is refused.
        assert!(s.stat("link_out", false).is_ok());
        assert_eq!(s.stat("link_out", true).unwrap_err().errno, EACCES);
        assert!(s.readlink("link_out").unwrap().ends_with("secret.txt"));
    }
}

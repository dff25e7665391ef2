//! weir's own binaries as child processes: found beside the test executable (cargo builds every
//! workspace binary before `cargo test --workspace` runs a test), refused when older than
//! their sources, started with their output in a log file, and killed when dropped.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

/// The workspace binary `name` (`weir` or `weir-proxy`) of the profile this test runs in.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("the test's own path")?;
    // target/<profile>/deps/<test>: the binaries are in target/<profile>.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("the test executable is not in target/<profile>/deps")?;
    let path = profile_dir.join(name);
    let build = format!(
        "cargo build --workspace --bin {name} (with the tests' features; or run cargo test --workspace, which builds it)"
    );
    let built = fs::metadata(&path)
        .and_then(|m| m.modified())
        .with_context(|| format!("{} is missing: {build}", path.display()))?;
    let dep_info = dep_info_of(&path, profile_dir)
        .with_context(|| format!("no cargo dep-info for {}: {build}", path.display()))?;
    let listed = fs::read_to_string(&dep_info).with_context(|| format!("read {}", dep_info.display()))?;
    // rustc runs from the workspace root, so relative paths are relative to it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let own = dep_info_sources(&listed);
    // The binary's dep-info lists only its own crate root: the libraries it links (its
    // package's and the workspace crates it depends on) are compiled apart, so their sources
    // are found through the manifests.
    let package = own
        .first()
        .and_then(|main| main.components().next())
        .map(|c| root.join(c.as_os_str()))
        .context("the dep-info names no source")?;
    let mut sources: Vec<PathBuf> = own.iter().map(|s| root.join(s)).collect();
    for dir in linked_crates(&root, &package)? {
        rust_files(&dir.join("src"), &mut sources)?;
    }
    for source in sources {
        let changed = fs::metadata(&source).and_then(|m| m.modified());
        // A source that is gone, or newer than the binary, means it is out of date.
        if changed.map_or(true, |t| t > built) {
            bail!(
                "{} is older than its source {}: {build}",
                path.display(),
                source.display()
            );
        }
    }
    Ok(path)
}

/// The directories of `package` and of every workspace crate it depends on (`[dependencies]`,
/// transitively; not dev- or build-dependencies), from the workspace's `path` entries.
fn linked_crates(root: &Path, package: &Path) -> Result<Vec<PathBuf>> {
    let workspace = fs::read_to_string(root.join("Cargo.toml")).context("read the workspace Cargo.toml")?;
    let paths: Vec<(String, PathBuf)> = section(&workspace, "[workspace.dependencies]")
        .filter_map(|line| {
            let (name, rest) = line.split_once('=')?;
            let path = rest.split("path = \"").nth(1)?.split('"').next()?;
            Some((name.trim().to_owned(), root.join(path)))
        })
        .collect();
    let mut found = vec![package.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = found.get(next).cloned() {
        next += 1;
        let manifest = fs::read_to_string(dir.join("Cargo.toml"))
            .with_context(|| format!("read {}", dir.join("Cargo.toml").display()))?;
        for line in section(&manifest, "[dependencies]") {
            let name = line.split(['.', '=', ' ']).next().unwrap_or_default();
            if let Some((_, path)) = paths.iter().find(|(n, _)| n == name)
                && !found.contains(path)
            {
                found.push(path.clone());
            }
        }
    }
    Ok(found)
}

/// The lines of a TOML `section` (up to the next header).
fn section<'a>(toml: &'a str, header: &'a str) -> impl Iterator<Item = &'a str> {
    toml.lines()
        .skip_while(move |l| l.trim() != header)
        .skip(1)
        .take_while(|l| !l.trim_start().starts_with('['))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// Every `.rs` file under `dir`, into `into`.
fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, into)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
    Ok(())
}

/// Cargo's dep-info for `binary`, which lists every source file it was built from. Cargo
/// builds into `deps/<crate>-<hash>` and hard-links the result to `<profile>/<name>`; the
/// dep-info beside the linked file is written by `cargo build` only, so it is looked up by the
/// file's inode in `deps/`, where `cargo test` leaves it too.
fn dep_info_of(binary: &Path, profile_dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(binary)?.ino();
    let deps = profile_dir.join("deps");
    for entry in fs::read_dir(&deps).with_context(|| format!("list {}", deps.display()))? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().is_none() && entry.metadata()?.ino() == inode {
            let dep_info = path.with_extension("d");
            if dep_info.is_file() {
                return Ok(dep_info);
            }
        }
    }
    let beside = binary.with_extension("d");
    if beside.is_file() {
        return Ok(beside);
    }
    bail!(
        "neither {}/<crate>-<hash>.d nor {} exists",
        deps.display(),
        beside.display()
    )
}

/// The source files a cargo dep-info file (`target: a.rs b\\ c.rs ...`) lists.
fn dep_info_sources(text: &str) -> Vec<PathBuf> {
    let Some(first) = text.lines().next() else {
        return Vec::new();
    };
    let Some((_, deps)) = first.split_once(": ") else {
        return Vec::new();
    };
    let mut sources = Vec::new();
    let mut current = String::new();
    let mut escaped = false;
    for c in deps.chars() {
        match c {
            '\\' if !escaped => escaped = true,
            ' ' if !escaped => {
                if !current.is_empty() {
                    sources.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            c => {
                escaped = false;
                current.push(c);
            }
        }
    }
    if !current.is_empty() {
        sources.push(PathBuf::from(current));
    }
    sources
}

/// A free loopback port (bound and released: good enough for a child to bind next).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A running child process, killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    /// Its stdout and stderr.
    pub log: PathBuf,
}

impl Process {
    /// Starts `binary` with `args` and `envs`, its output to `log`.
    pub fn start(binary: &Path, args: &[String], envs: &[(&str, &str)], log: PathBuf) -> Result<Process> {
        let file = fs::File::create(&log).with_context(|| format!("create {}", log.display()))?;
        let child = Command::new(binary)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        Ok(Process { child, log })
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Kills it at once (SIGKILL), as a crash would, and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Its exit code, once it has exited (`-1` for a signal).
    pub fn exit_code(&mut self) -> Option<i32> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// The last lines of its log.
    pub fn tail(&self, lines: usize) -> String {
        crate::binary::tail_lines(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dep_info_lists_each_source_with_escaped_spaces() {
        let text = "/t/debug/weir: /src/a.rs /src/my\\ file.rs /src/b.rs\n\n/src/a.rs:\n";
        assert_eq!(
            dep_info_sources(text),
            [
                PathBuf::from("/src/a.rs"),
                PathBuf::from("/src/my file.rs"),
                PathBuf::from("/src/b.rs")
            ]
        );
    }

    /// The controller's binary links its own library and the proxy's: a change to either makes
    /// it stale, though its dep-info names only `main.rs`. The proxy's links only its own.
    #[test]
    fn a_binary_is_built_from_its_librarys_and_its_workspace_dependencies_sources() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let names = |package: &str| -> Vec<String> {
            linked_crates(&root, &root.join(package))
                .expect("the manifests read")
                .iter()
                .map(|p| p.file_name().expect("a name").to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(names("controller"), ["controller", "proxy"]);
        assert_eq!(names("proxy"), ["proxy"]);
    }
}
